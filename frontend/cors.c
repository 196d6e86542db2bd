#include "frontend/cors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CORS_MAX_ORIGINS 32
#define CORS_ORIGIN_MAX 255

static struct {
    int any;         /* "*" */
    int same_origin; /* only pages served by this server */
    int n;
    char origins[CORS_MAX_ORIGINS][CORS_ORIGIN_MAX + 1];
    char text[1024];
} policy = {1, 0, 0, {{0}}, "*"};

/* scheme://host[:port] with nothing after it. */
static int is_origin(const char *s) {
    const char *p = strstr(s, "://");
    if (!p || p == s || !p[3]) return 0;
    for (const char *q = s; q < p; q++)
        if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || *q == '+' || *q == '-' || *q == '.')) return 0;
    return strchr(p + 3, '/') == NULL && strchr(p + 3, ' ') == NULL;
}

int cors_configure(const char *list, int keys_enabled, char *err, size_t errlen) {
    policy.any = 0;
    policy.same_origin = 0;
    policy.n = 0;
    if (!list) {
        policy.any = !keys_enabled;
        policy.same_origin = keys_enabled;
        snprintf(policy.text, sizeof policy.text, "%s", keys_enabled ? "same-origin" : "*");
        return 0;
    }
    snprintf(policy.text, sizeof policy.text, "%s", list);
    char *copy = strdup(list), *save = NULL;
    if (!copy) return -1;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ') t++;
        size_t n = strlen(t);
        while (n && t[n - 1] == ' ') t[--n] = 0;
        if (!n) continue;
        if (!strcmp(t, "*")) {
            policy.any = 1;
            continue;
        }
        if (!strcmp(t, "same-origin")) {
            policy.same_origin = 1;
            continue;
        }
        if (!is_origin(t) || n > CORS_ORIGIN_MAX || policy.n == CORS_MAX_ORIGINS) {
            snprintf(err, errlen, "--cors-origins: '%.80s' is not an origin (scheme://host[:port]), or more than %d", t,
                     CORS_MAX_ORIGINS);
            free(copy);
            return -1;
        }
        snprintf(policy.origins[policy.n++], CORS_ORIGIN_MAX + 1, "%s", t);
    }
    free(copy);
    return 0;
}

/* Origin is "<scheme>://<host>" where host is the request's Host header (any scheme: behind a
 * TLS proxy the page is https while the proxy speaks http to us). */
static int same_origin(const char *origin, size_t olen, const char *host, size_t hlen) {
    const char *p = memchr(origin, ':', olen);
    if (!p || (size_t)(p - origin) + 3 > olen || p[1] != '/' || p[2] != '/' || !host || !hlen) return 0;
    const char *h = p + 3;
    size_t rest = olen - (size_t)(h - origin);
    return rest == hlen && strncasecmp(h, host, hlen) == 0;
}

int cors_allowed(const char *origin, size_t olen, const char *host, size_t hlen) {
    if (!origin || !olen) return 1;
    if (policy.any) return 1;
    if (policy.same_origin && same_origin(origin, olen, host, hlen)) return 1;
    for (int i = 0; i < policy.n; i++)
        if (strlen(policy.origins[i]) == olen && !strncasecmp(policy.origins[i], origin, olen)) return 1;
    return 0;
}

char *cors_headers(char *buf, size_t cap, const char *origin, size_t olen, const char *host, size_t hlen) {
    buf[0] = 0;
    if (policy.any && !policy.n && !policy.same_origin) {
        snprintf(buf, cap, "Access-Control-Allow-Origin: *\r\n");
    } else if (origin && olen && olen <= CORS_ORIGIN_MAX && cors_allowed(origin, olen, host, hlen)) {
        /* The answer depends on the request's Origin: caches must keep one copy per origin. */
        snprintf(buf, cap, "Access-Control-Allow-Origin: %.*s\r\nVary: Origin\r\n", (int)olen, origin);
    } else if (!policy.any) {
        snprintf(buf, cap, "Vary: Origin\r\n");
    }
    return buf;
}

const char *cors_policy_text(void) { return policy.text; }
