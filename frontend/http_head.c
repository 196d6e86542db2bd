#include "frontend/http_head.h"

#include <string.h>
#include <strings.h>

static int is_tchar(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Finds the end of the head ("\r\n\r\n", or bare "\n\n" from lenient clients) within len. */
static size_t head_end(const char *buf, size_t len) {
    for (size_t i = 0; i + 1 < len; i++) {
        if (buf[i] != '\n') continue;
        if (buf[i + 1] == '\n') return i + 2;
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n') return i + 3;
    }
    return 0;
}

int http_head_parse(const char *buf, size_t len, http_head *h, int *status, const char **why) {
    size_t scan = len < HTTP_HEAD_MAX ? len : HTTP_HEAD_MAX;
    size_t end = head_end(buf, scan);
    if (!end) {
        if (len >= HTTP_HEAD_MAX) {
            *status = 431;
            *why = "request head larger than 16 KB";
            return -1;
        }
        return 0;
    }
    memset(h, 0, sizeof *h);
    h->head_len = end;
    *status = 400;
    size_t p = 0;
    /* Request line: METHOD SP TARGET SP HTTP/1.x CRLF */
    h->method = buf;
    while (p < end && is_tchar((unsigned char)buf[p])) p++;
    h->method_len = p;
    if (!h->method_len || p >= end || buf[p] != ' ') {
        *why = "malformed request line";
        return -1;
    }
    p++;
    h->target = buf + p;
    while (p < end && buf[p] > ' ' && buf[p] != 0x7f) p++;
    h->target_len = (size_t)(buf + p - h->target);
    if (!h->target_len || p >= end || buf[p] != ' ') {
        *why = "malformed request target";
        return -1;
    }
    p++;
    if (end - p < 9 || memcmp(buf + p, "HTTP/", 5)) {
        *why = "malformed HTTP version";
        return -1;
    }
    if (buf[p + 5] < '0' || buf[p + 5] > '9' || buf[p + 6] != '.' || buf[p + 7] < '0' || buf[p + 7] > '9') {
        *why = "malformed HTTP version";
        return -1;
    }
    if (buf[p + 5] != '1') {
        *status = 505;
        *why = "only HTTP/1.x is supported";
        return -1;
    }
    h->minor_version = buf[p + 7] - '0';
    p += 8;
    if (buf[p] == '\r') p++;
    if (buf[p] != '\n') {
        *why = "malformed request line";
        return -1;
    }
    p++;
    /* Header fields until the blank line. */
    while (p < end) {
        /* Only a whole empty line ends the head: a stray CR must not hide the headers after it
         * (a proxy in front could frame the request differently from us). */
        if (buf[p] == '\n' || (buf[p] == '\r' && p + 1 < end && buf[p + 1] == '\n')) break;
        if (buf[p] == '\r') {
            *why = "malformed header field";
            return -1;
        }
        if (h->num_headers == HTTP_MAX_HEADERS) {
            *status = 431;
            *why = "more than 64 request headers";
            return -1;
        }
        http_header *f = &h->headers[h->num_headers++];
        f->name = buf + p;
        while (p < end && is_tchar((unsigned char)buf[p])) p++;
        f->name_len = (size_t)(buf + p - f->name);
        if (!f->name_len || p >= end || buf[p] != ':') {
            *why = "malformed header field";
            return -1;
        }
        p++;
        while (p < end && (buf[p] == ' ' || buf[p] == '\t')) p++;
        f->value = buf + p;
        while (p < end && buf[p] != '\r' && buf[p] != '\n') {
            if ((unsigned char)buf[p] < 0x20 && buf[p] != '\t') {
                *why = "control character in a header value";
                return -1;
            }
            p++;
        }
        size_t vl = (size_t)(buf + p - f->value);
        while (vl && (f->value[vl - 1] == ' ' || f->value[vl - 1] == '\t')) vl--;
        f->value_len = vl;
        if (p < end && buf[p] == '\r') p++;
        if (p >= end || buf[p] != '\n') {
            *why = "malformed header field";
            return -1;
        }
        p++;
    }
    return 1;
}

const char *http_head_get(const http_head *h, const char *name, size_t *len) {
    size_t n = strlen(name);
    for (int i = 0; i < h->num_headers; i++)
        if (h->headers[i].name_len == n && !strncasecmp(h->headers[i].name, name, n)) {
            if (len) *len = h->headers[i].value_len;
            return h->headers[i].value;
        }
    return NULL;
}

int http_head_has_token(const http_head *h, const char *name, const char *token) {
    size_t tl = strlen(token), n = strlen(name);
    for (int i = 0; i < h->num_headers; i++) {
        const http_header *f = &h->headers[i];
        if (f->name_len != n || strncasecmp(f->name, name, n)) continue;
        size_t p = 0;
        while (p < f->value_len) {
            while (p < f->value_len && (f->value[p] == ' ' || f->value[p] == '\t' || f->value[p] == ',')) p++;
            size_t s = p;
            while (p < f->value_len && f->value[p] != ',') p++;
            size_t e = p;
            while (e > s && (f->value[e - 1] == ' ' || f->value[e - 1] == '\t')) e--;
            if (e - s == tl && !strncasecmp(f->value + s, token, tl)) return 1;
        }
    }
    return 0;
}

int http_head_method_is(const http_head *h, const char *m) {
    size_t n = strlen(m);
    return h->method_len == n && !memcmp(h->method, m, n);
}
