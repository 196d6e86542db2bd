/* TLS for the public socket (--tls-cert/--tls-key): https and wss served by the connection loop
 * itself, with OpenSSL, the library Debian's CivetWeb links. The loop owns every client socket
 * (net_loop.h says why CivetWeb does not), so TLS is a layer under the loop's reads and writes:
 * a non-blocking handshake after accept, then records read and written on the same non-blocking
 * socket. CivetWeb behind the loop stays plain HTTP on loopback.
 *
 * Policy: TLS 1.2 and 1.3 only; no renegotiation (a client-driven CPU cost and a source of
 * reads that must write); no session tickets (nothing to rotate; a reconnect pays a full
 * handshake); idle connections give their record buffers back (SSL_MODE_RELEASE_BUFFERS), so a
 * silent TLS socket costs a few KB, not ~34 KB.
 *
 * Threads: everything here but tls_reload runs on the loop thread. tls_reload (SIGHUP) swaps the
 * context under a leaf lock that tls_conn_new also takes: connections already open keep the
 * certificate they were made with (OpenSSL counts its references). */
#ifndef DA3_TLS_H
#define DA3_TLS_H

#include <stddef.h>
#include <sys/types.h>

typedef struct tls_conn tls_conn;

/* Loads the certificate chain and key (PEM) and checks that they match; on reload the old
 * context stays when the new files are unusable. Returns 0, or -1 with err set. */
int tls_init(const char *cert_file, const char *key_file, char *err, size_t errlen);

/* Reloads the files given to tls_init (SIGHUP). Returns 0, or -1 with err set (old ones stay). */
int tls_reload(char *err, size_t errlen);

/* A TLS server end for an accepted non-blocking socket, or NULL (out of memory). */
tls_conn *tls_conn_new(int fd);

/* Frees the connection (sends close_notify once if the socket takes it; never waits). */
void tls_conn_free(tls_conn *t);

/* Advances the handshake: 1 done, 0 waiting for the socket (tls_wants_write says which way),
 * -1 failed (why says why, e.g. a plain-HTTP client on the TLS port). */
int tls_handshake(tls_conn *t, char *why, size_t whylen);

/* Like read(2): bytes read, 0 at the peer's close (close_notify or TCP end), -1 with errno
 * (EAGAIN: wait for the socket, in the direction tls_wants_write says; EPROTO: a TLS error). */
ssize_t tls_read(tls_conn *t, void *buf, size_t n);

/* Like send(2): bytes written (a partial write is normal), -1 with errno (EAGAIN: retry later
 * with at least the same bytes; EPIPE / EPROTO: the connection is gone). OpenSSL writes with
 * write(2), so the process must ignore SIGPIPE (da3-server's main does). */
ssize_t tls_write(tls_conn *t, const void *buf, size_t n);

/* 1 when the last call that returned EAGAIN (or handshake 0) waits for the socket to be
 * writable rather than readable. */
int tls_wants_write(const tls_conn *t);

/* Decrypted bytes already inside OpenSSL, which epoll cannot see: read them without waiting. */
size_t tls_pending(const tls_conn *t);

#endif
