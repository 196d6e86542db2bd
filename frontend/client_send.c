#include "frontend/client_send.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "frontend/attach.h"
#include "frontend/conn.h"
#include "frontend/messages.h"
#include "frontend/ws_frame.h"

int client_send(const char *session_id, const char *text, size_t len) {
    uint64_t id = attach_get(session_id);
    return id && conn_send_text(id, text, len) == CONN_QUEUED ? 0 : -1;
}

int client_send_owned(const char *session_id, char *text, size_t len, char *note) {
    uint64_t id = attach_get(session_id);
    if (!id) {
        if (note) log_warn("%s: NOT delivered (no client connected to the session)", note);
        free(text);
        free(note);
        return -1;
    }
    return conn_send_owned(id, WS_OP_TEXT, text, len, note) == CONN_QUEUED ? 0 : -1;
}

int client_send_error(const char *session_id, const char *message) {
    char *m = msg_error(message);
    int rc = m ? client_send(session_id, m, strlen(m)) : -1;
    free(m);
    return rc;
}

void client_close(const char *session_id, const char *message, int code) {
    uint64_t id = attach_remove(session_id);
    if (!id) return;
    char *m = msg_error(message);
    if (m) conn_send_text(id, m, strlen(m));
    free(m);
    conn_close(id, code, message);
}
