/* The HTTP endpoints: session create/info/delete/list (protocol v1, the reference's exact JSON)
 * and GET /status. */
#ifndef DA3_HTTP_API_H
#define DA3_HTTP_API_H

struct mg_context;

/* The largest request body an endpoint reads (a create body): the connection loop refuses bigger
 * ones with 413 before CivetWeb sees them. */
#define HTTP_API_MAX_BODY (1u << 20)

/* What the connection loop adds to every request it forwards to CivetWeb (after removing any
 * client-sent X-DA3-* header): the front's per-start secret, so a request that reached
 * CivetWeb's loopback port some other way is refused, and the caller the loop checked the key
 * of (name "" and role "user" when keys are off). */
#define HTTP_API_FRONT_HEADER "X-DA3-Front"
#define HTTP_API_IDENTITY_HEADER "X-DA3-Identity"
#define HTTP_API_ROLE_HEADER "X-DA3-Role"
#define HTTP_API_CLIENT_HEADER "X-DA3-Client" /* the client's address (frontend/client_limits.h) */

/* Registers every HTTP handler on ctx. */
void http_api_register(struct mg_context *ctx);

/* Deletes a session: cancels its job, closes its socket with `reason`, removes its files.
 * Returns 0, or -1 when unknown. Used by DELETE and by the expiry sweep. */
int http_api_delete_session(const char *id, const char *reason);

#endif
