/* Per-client-address limits the connection loop applies (loop thread only: no locks):
 * concurrent WebSockets, and token buckets for HTTP requests per second, WebSocket messages per
 * second and payload bytes per second. A client is its address: the TCP peer, or with --trust-proxy the address the
 * proxy names (X-Real-IP, else the last X-Forwarded-For entry). Sessions per client are counted
 * by the session registry (session.h), which sees creations from every thread. */
#ifndef DA3_CLIENT_LIMITS_H
#define DA3_CLIENT_LIMITS_H

#include <stddef.h>

struct sockaddr;

#define CLIENT_ADDR_MAX 64

typedef struct {
    int max_websockets;  /* concurrent WebSockets per address; 0 = no limit */
    double msg_rate;     /* messages per second (burst: 2 s worth); 0 = no limit */
    double byte_rate;    /* payload bytes per second (burst: 2 s worth); 0 = no limit */
    double http_rate;    /* HTTP requests (upgrades included) per second (burst: 2 s worth); 0 = no limit */
} client_limits_config;

typedef struct client_entry client_entry;

/* The client key of an address given as text (X-Real-IP, one X-Forwarded-For entry; blanks
 * around it allowed): IPv4 as dotted quad, an IPv4-mapped IPv6 address as its IPv4, any other
 * IPv6 address as its /64 prefix ("2001:db8:1:2::/64": one host or home network holds a whole
 * /64, so counting single addresses would let it take 2^64 budgets). Returns 0, or -1 when v is
 * not an IP address (out is then untouched). */
int client_address_parse(const char *v, size_t n, char out[CLIENT_ADDR_MAX]);

/* The same key from an X-Forwarded-For value: its last entry (the one the nearest proxy added).
 * Returns 0, or -1 when that entry is not an address. */
int client_address_forwarded(const char *v, size_t n, char out[CLIENT_ADDR_MAX]);

/* The same key for a socket peer (AF_INET / AF_INET6); "unknown" for anything else. */
void client_address_of_peer(const struct sockaddr *sa, char out[CLIENT_ADDR_MAX]);

/* Sets the limits (before the loop starts) and sizes the table for up to max_conns addresses
 * (a table from an earlier call is freed first). */
int client_limits_init(const client_limits_config *cfg, int max_conns);

/* Forgets every address and frees the table (entries held by sockets must be released first). */
void client_limits_free(void);

/* Takes a WebSocket slot for addr. Returns its entry (hold it until client_ws_release), or NULL
 * when the address already has max_websockets (or the table is full). */
client_entry *client_ws_acquire(const char *addr);

/* Gives the slot back; the entry is forgotten once it has no socket and its buckets are full. */
void client_ws_release(client_entry *e);

/* One more HTTP request (or WebSocket upgrade) from addr at time now: 0 when its bucket allows
 * it, else the seconds until it would (the request is then refused with 429). */
double client_take_request(const char *addr, double now);

/* One more message from the client at time now: 1 when its bucket allows it, 0 when it is over
 * msg_rate (the message is then refused). */
int client_take_message(client_entry *e, double now);

/* n more payload bytes at time now: 0 when allowed at once, else how many seconds the reader
 * should wait before reading more (the bytes are counted either way: the bucket goes negative). */
double client_take_bytes(client_entry *e, size_t n, double now);

/* The limits in force. */
const client_limits_config *client_limits(void);

#endif
