/* Protocol v1 parameters that both processes must agree on: the defaults a session gets when the
 * client names none (the front applies them, the worker and da3-infer use the same ones), the
 * resize methods' names, and the limits on what a client may send. One place, so the front and the
 * worker can never drift apart. */
#ifndef DA3_PROTOCOL_H
#define DA3_PROTOCOL_H

/* DA3's patch size: processed sides are multiples of it. */
#define DA3_PATCH_SIZE 14

/* Defaults of the create parameters (the reference server's). */
#define PROTOCOL_DEFAULT_PROCESS_RES 504
#define PROTOCOL_DEFAULT_CONF_THRESH_PERCENTILE 10.0
#define PROTOCOL_DEFAULT_NUM_MAX_POINTS 10000000L
/* Protocol v2 (the reference's later branch) lowered the init default to 100,000 points. */
#define PROTOCOL_V2_DEFAULT_NUM_MAX_POINTS 100000L
#define PROTOCOL_DEFAULT_SHOW_CAMERAS 1
/* What every place a user sees results says of an untrained (random-weight) model: /status and
 * each result's metadata carry the same text, so the page's banner does not change with its source. */
#define PROTOCOL_UNTRAINED_WARNING \
    "UNTRAINED: this model has random weights; depth, poses and points are not a real reconstruction"
/* Point-cloud downsampling seed: fixed, so the same images give the same GLB. */
#define PROTOCOL_SEED 42
/* Reference-view strategy: 0 = saddle_balanced (DA3's default; REF_VIEW_SADDLE_BALANCED in
 * worker/model.h). */
#define PROTOCOL_DEFAULT_REF_VIEW 0

/* Client filenames are display text: stored and echoed up to this many bytes (cut at a UTF-8
 * character boundary, and the ack says so). */
#define PROTOCOL_MAX_FILENAME_BYTES 255

typedef enum {
    RESIZE_UPPER_BOUND_RESIZE = 0, /* longest side -> process_res, sides to nearest multiple of 14 */
    RESIZE_UPPER_BOUND_CROP,       /* longest side -> process_res, sides floored to 14 by centre crop */
    RESIZE_LOWER_BOUND_RESIZE,     /* shortest side -> process_res, nearest multiple of 14 */
    RESIZE_LOWER_BOUND_CROP,       /* shortest side -> process_res, floored by centre crop */
} resize_method;
#define PROTOCOL_DEFAULT_RESIZE_METHOD RESIZE_UPPER_BOUND_RESIZE

/* Parses "upper_bound_resize" etc.; returns 0 and sets *m, or -1 for an unknown name. */
int resize_method_parse(const char *name, resize_method *m);

/* The canonical name of a method ("upper_bound_resize", ...), "unknown" out of range. */
const char *resize_method_name(resize_method m);

#endif
