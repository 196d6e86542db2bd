/* A fast path for {"type":"image","data":"BASE64",...} messages: locates the top-level "data"
 * string without running a JSON parser over megabytes of base64, and parses the rest. */
#ifndef DA3_IMAGE_MESSAGE_H
#define DA3_IMAGE_MESSAGE_H

#include <jansson.h>
#include <stddef.h>

/* On success returns 0, data and data_len span the raw "data" value inside text (no escapes in
 * it), and rest is the message parsed with that value emptied (caller json_decref's it), bounded
 * as json_loadb_bounded does (at most JSON_MAX_DEPTH_CLIENT levels). Returns -1 when the message
 * is not of that simple form (duplicate keys included); then parse it normally (bounded too). */
int image_message_split(const char *text, size_t len, const char **data, size_t *data_len,
                        json_t **rest);

#endif
