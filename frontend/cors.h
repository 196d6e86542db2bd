/* Which web origins may use the server from a browser (--cors-origins): the CORS headers of
 * HTTP responses and the Origin check of WebSocket upgrades (browsers send Origin on both, and
 * a WebSocket has no preflight, so the upgrade itself must refuse a foreign page).
 *
 * The policy: a comma-separated list of origins ("https://app.example.com,http://localhost:3000")
 * or "*". Default: "*" while no API keys are configured (the reference's own HTML client,
 * opened from a file or another host, works only so), and same-origin only once keys are
 * configured: a key typed into one site's page must not be usable by another site's script. A
 * request without Origin (curl, the Python client, nginx health checks) is not a browser's
 * cross-site request and is always allowed. Set once at start; read-only afterwards. */
#ifndef DA3_CORS_H
#define DA3_CORS_H

#include <stddef.h>

/* Sets the policy: list (NULL = the default above for keys_enabled). Returns 0, or -1 when an
 * entry is not an origin (scheme://host[:port], no path). */
int cors_configure(const char *list, int keys_enabled, char *err, size_t errlen);

/* 1 when a request from `origin` (NULL or "" = none sent) to `host` (the request's Host header,
 * may be NULL) may be answered / upgraded. Lengths are explicit: both come from request heads. */
int cors_allowed(const char *origin, size_t origin_len, const char *host, size_t host_len);

/* Writes the CORS response headers ("Access-Control-Allow-Origin: ...\r\n" and "Vary: Origin\r\n"
 * where it matters; nothing for a refused or absent origin) into buf; returns buf. */
char *cors_headers(char *buf, size_t cap, const char *origin, size_t origin_len, const char *host, size_t host_len);

/* The policy as text for /status and the log: "*", "same-origin" or the list. */
const char *cors_policy_text(void);

#endif
