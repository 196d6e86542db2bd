/* RFC 6455 framing for the server side: a strict parser of client frame headers (checked before
 * any payload is read, so a header announcing gigabytes costs nothing), payload unmasking, server
 * frame headers, close-frame payloads, and UTF-8 validation of text messages. Pure functions: no
 * I/O, no allocation. */
#ifndef DA3_WS_FRAME_H
#define DA3_WS_FRAME_H

#include <stddef.h>
#include <stdint.h>

enum {
    WS_OP_CONTINUATION = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

/* Close codes used by the server (RFC 6455 section 7.4.1). */
enum {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL_ERROR = 1002,
    WS_CLOSE_INVALID_DATA = 1007,
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_INTERNAL = 1011,
    WS_CLOSE_TRY_AGAIN = 1013,
};

#define WS_MAX_HEADER 14     /* 2 + 8 (64-bit length) + 4 (mask) */
#define WS_MAX_CONTROL 125   /* control frames carry at most this much payload */

typedef struct {
    int fin;
    int opcode;
    uint64_t payload_len;
    uint8_t mask[4];
    size_t header_len;       /* bytes the header took */
} ws_frame_header;

/* Parses a client->server frame header from buf. Returns 1 with *h filled when complete, 0 when
 * more bytes are needed, or -1 with *close_code (1002) and a reason in why when the header breaks
 * RFC 6455: reserved bits set (no extension is negotiated), unknown opcode, an unmasked frame, a
 * control frame that is fragmented or longer than 125 bytes, or a 64-bit length with its top bit
 * set. */
int ws_frame_parse_header(const uint8_t *buf, size_t len, ws_frame_header *h, int *close_code,
                          const char **why);

/* XORs n payload bytes in place with the frame's mask; `offset` is the position of data[0]
 * within the frame's payload (so a payload can be unmasked piece by piece as it arrives). */
void ws_frame_unmask(uint8_t *data, size_t n, const uint8_t mask[4], uint64_t offset);

/* Writes an unmasked server->client frame header (FIN set) for a payload of len bytes into out
 * (at least 10 bytes); returns its length. */
size_t ws_frame_server_header(uint8_t *out, int opcode, uint64_t len);

/* Checks a received close frame's payload: empty, or a 2-byte valid code plus a UTF-8 reason.
 * Returns 0 with *code (1005 when empty), or -1 with *fail_code (1002 bad length or code, 1007
 * bad UTF-8). */
int ws_close_payload_check(const uint8_t *p, size_t n, int *code, int *fail_code);

/* Writes a close payload (code, then reason truncated at a UTF-8 boundary to fit 125 bytes) into
 * out (>= 125 bytes); returns its length. */
size_t ws_close_payload(uint8_t *out, int code, const char *reason);

/* 1 when s[0..n) is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
int utf8_valid(const uint8_t *s, size_t n);

/* The longest prefix of s[0..n) that ends on a UTF-8 character boundary (for truncation). */
size_t utf8_prefix(const uint8_t *s, size_t n);

#endif
