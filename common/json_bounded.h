/* Parsing untrusted JSON without unbounded recursion. Jansson's parser recurses once per nesting
 * level, and the threads that parse client input have small stacks (CivetWeb's ~100 KB, our own
 * pools), so about a thousand '[' crash the process. Every parse of client input (HTTP bodies,
 * WebSocket messages, files a client's data was written to) goes through here. */
#ifndef DA3_JSON_BOUNDED_H
#define DA3_JSON_BOUNDED_H

#include <jansson.h>
#include <stddef.h>

/* Deepest nesting accepted from clients: protocol v1 messages need at most 4 (a camera matrix
 * inside a message); 32 leaves room for extensions and stays far below any stack limit. */
#define JSON_MAX_DEPTH_CLIENT 32

/* Scans text[0..len) once, without recursion, and refuses it when arrays/objects nest deeper than
 * max_depth (brackets inside strings, escapes included, do not count): returns NULL with
 * err->text "JSON nested deeper than N levels" and err->position/line/column at the offending
 * bracket. Otherwise returns json_loadb(text, len, 0, err). err may be NULL. */
json_t *json_loadb_bounded(const char *text, size_t len, int max_depth, json_error_t *err);

/* Nesting depth of text[0..len) as json_loadb_bounded counts it, stopping early (returning
 * stop_above + 1) once it exceeds stop_above. Malformed text gets a depth too; the parser then
 * refuses it. */
int json_nesting_depth(const char *text, size_t len, int stop_above);

/* Reads a whole file of at most max_bytes and parses it as json_loadb_bounded does. Returns NULL
 * with err->text set when the file is missing, larger than max_bytes, too deep or malformed. */
json_t *json_load_file_bounded(const char *path, size_t max_bytes, int max_depth, json_error_t *err);

#endif
