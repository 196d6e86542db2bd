/* The JSON views of sessions that the HTTP API returns (protocol v1, the reference's fields). */
#include <stdlib.h>
#include <string.h>

#include "frontend/session.h"

static const char *const status_names[] = {"active", "processing", "completed", "error"};

const char *session_status_name(session_status st) {
    return (unsigned)st < sizeof status_names / sizeof *status_names ? status_names[st] : "active";
}

session_status session_status_parse(const char *text) {
    for (int i = 0; text && i < 4; i++)
        if (!strcmp(text, status_names[i])) return (session_status)i;
    return SESSION_ACTIVE;
}

json_t *session_info_json(const session *s) {
    json_t *o = json_pack("{s:s,s:f,s:f,s:s,s:i,s:i,s:o}", "session_id", s->id, "created_at", s->created_at,
                          "last_activity", s->last_activity, "status", session_status_name(s->status), "image_count",
                          s->image_count, "max_images", s->cfg.max_images, "error_message",
                          s->error_message ? json_string(s->error_message) : json_null());
    /* Streaming (extension): how many images the chunks have reconstructed so far. */
    if (o && s->cfg.streaming)
        json_object_set_new(o, "stream", json_pack("{s:i,s:i,s:i}", "done", s->stream_done, "chunk_size",
                                                   s->cfg.chunk_size, "overlap", s->cfg.overlap));
    return o;
}

json_t *sessions_list_json(double session_timeout, const char *owner) {
    /* Sized by --max-sessions (up to 100,000), so it lives on the heap, not the stack. */
    int max = sessions_capacity();
    session **all = max > 0 ? malloc((size_t)max * sizeof *all) : NULL;
    int n = all ? sessions_snapshot(all, max) : 0;
    json_t *list = json_array();
    int active = 0, processing = 0, images = 0, shown = 0;
    for (int i = 0; i < n; i++) {
        session *s = all[i];
        if (owner && strcmp(s->owner, owner)) {
            sessions_put(s);
            continue;
        }
        shown++;
        pthread_mutex_lock(&s->lock);
        active += s->status == SESSION_ACTIVE;
        processing += s->status == SESSION_PROCESSING;
        images += s->image_count;
        json_array_append_new(list, json_pack("{s:s,s:f,s:f,s:s,s:i}", "session_id", s->id, "created_at",
                                              s->created_at, "last_activity", s->last_activity, "status",
                                              session_status_name(s->status), "image_count", s->image_count));
        pthread_mutex_unlock(&s->lock);
        sessions_put(s);
    }
    free(all);
    json_t *stats = json_pack("{s:i,s:i,s:i,s:i,s:i,s:f}", "total_sessions", shown, "active_sessions", active,
                              "processing_sessions", processing, "max_sessions", max, "total_images", images,
                              "session_timeout", session_timeout);
    return json_pack("{s:o,s:o}", "stats", stats, "sessions", list);
}
