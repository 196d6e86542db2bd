#include "frontend/tls.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

struct tls_conn {
    SSL *ssl;
    int want_write; /* the last EAGAIN waits for POLLOUT */
    int fatal;      /* a socket or protocol error: no close_notify may be sent (OpenSSL's rule) */
};

static struct {
    pthread_mutex_t lock; /* leaf: guards ctx against a reload while a connection is made */
    SSL_CTX *ctx;
    char cert[4096], key[4096];
} T = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* OpenSSL's newest queued error as text ("wrong version number"), or fallback. */
static void openssl_reason(char *out, size_t n, const char *fallback) {
    unsigned long e = ERR_peek_last_error();
    if (e) {
        const char *r = ERR_reason_error_string(e);
        snprintf(out, n, "%s", r ? r : fallback);
    } else {
        snprintf(out, n, "%s", fallback);
    }
    ERR_clear_error();
}

static SSL_CTX *make_ctx(const char *cert, const char *key, char *err, size_t errlen) {
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        openssl_reason(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    char why[200];
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        openssl_reason(why, sizeof why, "unreadable");
        snprintf(err, errlen, "--tls-cert %s: %s (a PEM certificate chain is expected)", cert, why);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        openssl_reason(why, sizeof why, "unreadable");
        if (strstr(why, "mismatch"))
            snprintf(err, errlen, "--tls-key %s does not belong to --tls-cert %s (%s)", key, cert, why);
        else
            snprintf(err, errlen, "--tls-key %s: %s (an unencrypted PEM key is expected)", key, why);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        openssl_reason(why, sizeof why, "mismatch");
        snprintf(err, errlen, "--tls-key %s does not belong to --tls-cert %s (%s)", key, cert, why);
        goto fail;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* IGNORE_UNEXPECTED_EOF: a peer that drops TCP without close_notify is an ordinary close
     * here (WebSocket and HTTP framing already say whether a message was whole). */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    /* The loop retries a write from a rebuilt buffer (same bytes, maybe another address). */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int tls_init(const char *cert_file, const char *key_file, char *err, size_t errlen) {
    if (strlen(cert_file) >= sizeof T.cert || strlen(key_file) >= sizeof T.key) {
        snprintf(err, errlen, "--tls-cert/--tls-key: path too long");
        return -1;
    }
    SSL_CTX *ctx = make_ctx(cert_file, key_file, err, errlen);
    if (!ctx) return -1;
    pthread_mutex_lock(&T.lock);
    snprintf(T.cert, sizeof T.cert, "%s", cert_file);
    snprintf(T.key, sizeof T.key, "%s", key_file);
    SSL_CTX *old = T.ctx;
    T.ctx = ctx;
    pthread_mutex_unlock(&T.lock);
    SSL_CTX_free(old);
    return 0;
}

int tls_reload(char *err, size_t errlen) {
    char cert[sizeof T.cert], key[sizeof T.key];
    pthread_mutex_lock(&T.lock);
    int on = T.ctx != NULL;
    memcpy(cert, T.cert, sizeof cert);
    memcpy(key, T.key, sizeof key);
    pthread_mutex_unlock(&T.lock);
    if (!on) {
        snprintf(err, errlen, "TLS is not enabled");
        return -1;
    }
    return tls_init(cert, key, err, errlen);
}

tls_conn *tls_conn_new(int fd) {
    tls_conn *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    pthread_mutex_lock(&T.lock);
    t->ssl = T.ctx ? SSL_new(T.ctx) : NULL; /* SSL_new takes its own reference on the context */
    pthread_mutex_unlock(&T.lock);
    if (!t->ssl || SSL_set_fd(t->ssl, fd) != 1) {
        SSL_free(t->ssl);
        free(t);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_accept_state(t->ssl);
    return t;
}

void tls_conn_free(tls_conn *t) {
    if (!t) return;
    /* One close_notify if the socket takes it now; the peer's answer is not awaited. */
    if (!t->fatal && SSL_is_init_finished(t->ssl)) SSL_shutdown(t->ssl);
    SSL_free(t->ssl);
    ERR_clear_error();
    free(t);
}

/* Maps an SSL_* result <= 0 to errno conventions: returns 0 for a clean close, -1 otherwise. */
static int map_error(tls_conn *t, int rc) {
    int e = SSL_get_error(t->ssl, rc);
    int saved = errno;
    ERR_clear_error();
    switch (e) {
    case SSL_ERROR_WANT_READ:
        t->want_write = 0;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_WANT_WRITE:
        t->want_write = 1;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        /* errno from the socket; 0 means the TCP stream simply ended */
        if (saved == 0) return 0;
        t->fatal = 1;
        errno = saved == EAGAIN ? EPROTO : saved;
        return -1;
    default:
        t->fatal = 1;
        errno = EPROTO;
        return -1;
    }
}

int tls_handshake(tls_conn *t, char *why, size_t whylen) {
    ERR_clear_error();
    errno = 0;
    int rc = SSL_do_handshake(t->ssl);
    if (rc == 1) {
        SSL_free_buffers(t->ssl); /* most connections now wait for a request: hold no buffers */
        return 1;
    }
    int e = SSL_get_error(t->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        t->want_write = e == SSL_ERROR_WANT_WRITE;
        ERR_clear_error();
        return 0;
    }
    t->fatal = 1;
    if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN) {
        snprintf(why, whylen, "TLS handshake: %s", errno ? strerror(errno) : "the peer closed");
        ERR_clear_error();
    } else {
        char r[160];
        openssl_reason(r, sizeof r, "protocol error");
        snprintf(why, whylen, "TLS handshake failed: %s", r);
    }
    return -1;
}

ssize_t tls_read(tls_conn *t, void *buf, size_t n) {
    if (n > INT_MAX) n = INT_MAX;
    ERR_clear_error();
    errno = 0;
    int rc = SSL_read(t->ssl, buf, (int)n);
    if (rc > 0) return rc;
    return map_error(t, rc);
}

ssize_t tls_write(tls_conn *t, const void *buf, size_t n) {
    if (n == 0) return 0;
    if (n > INT_MAX) n = INT_MAX;
    ERR_clear_error();
    errno = 0;
    int rc = SSL_write(t->ssl, buf, (int)n);
    if (rc > 0) return rc;
    if (map_error(t, rc) == 0) errno = EPIPE; /* the peer closed: nothing more can be written */
    return -1;
}

int tls_wants_write(const tls_conn *t) { return t->want_write; }

size_t tls_pending(const tls_conn *t) {
    int p = SSL_pending(t->ssl);
    return p > 0 ? (size_t)p : 0;
}
