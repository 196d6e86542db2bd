/* The HTTP endpoints: session create/info/delete/list (protocol v1, the reference's exact JSON)
 * and GET /status. */
#ifndef DA3_HTTP_API_H
#define DA3_HTTP_API_H

struct mg_context;

/* The largest request body an endpoint reads (a create body): the connection loop refuses bigger
 * ones with 413 before CivetWeb sees them. */
#define HTTP_API_MAX_BODY (1u << 20)

/* Registers every HTTP handler on ctx. */
void http_api_register(struct mg_context *ctx);

/* Deletes a session: cancels its job, closes its socket with `reason`, removes its files.
 * Returns 0, or -1 when unknown. Used by DELETE and by the expiry sweep. */
int http_api_delete_session(const char *id, const char *reason);

#endif
