/* Builders for every server->client WebSocket message of protocols v1 and v2. Each returns malloc'd
 * compact JSON text (free with free()); field names and texts match the reference server. */
#ifndef DA3_MESSAGES_H
#define DA3_MESSAGES_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* {"type":"connected","session_id":..,"image_count":..,"max_images":..} */
char *msg_connected(const char *session_id, int image_count, int max_images);

/* {"type":"ack","image_count":..,"session_id":..,"image_path":..} (+ "filename" display name,
 * + "camera":true when a known camera was stored with the image, + "filename_truncated":true
 * when the client's filename was longer than the server keeps) */
char *msg_ack(const char *session_id, int image_count, const char *image_path, const char *filename,
              int has_camera, int filename_truncated);

/* {"type":"progress","stage":..,"progress":..,"message":..} */
char *msg_progress(const char *stage, double progress, const char *message);

/* {"type":"error","message":..} */
char *msg_error(const char *message);

/* {"type":"pong","session_id":..} (null when session_id is NULL: v2 before init) */
char *msg_pong(const char *session_id);

/* v2: {"type":"session_created","session_id":..,"max_images":..,"config":config} (steals config),
 * + "resumed":true and "image_count" when an init resumed an existing session */
char *msg_session_created(const char *session_id, int max_images, json_t *config, int resumed, int image_count);

/* {"type":"auto_generating","image_count":n,"message":"Auto-generating after n images"} */
char *msg_auto_generating(int image_count);

/* The result message ("delta" or "complete"): image_count, glb_base64 (encoded straight from
 * glb, no intermediate copy), metadata = meta_json (a JSON object text from the worker) with
 * session_id, num_frames and glb_size_bytes set, and, when queue_and_glb_ms is not NULL, its two
 * values added to metadata.timing as queue_ms and glb_ms, and "auto_generated":true when
 * auto_generated. *len receives the text length. NULL on bad meta_json or out of memory. */
char *msg_result(const char *type, int image_count, const uint8_t *glb, size_t glb_len,
                 const char *meta_json, size_t meta_len, const char *session_id,
                 const double *queue_and_glb_ms, int auto_generated, size_t *len);

#endif
