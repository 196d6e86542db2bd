/* Fuzzes the client-address parsing of frontend/client_limits.c: X-Real-IP and X-Forwarded-For
 * values come from the request head (with --trust-proxy, from whatever the proxy forwards), and
 * the key they give names a client's budget. Invariants:
 *   - a refusal leaves the output untouched; an accepted key is NUL-terminated inside
 *     CLIENT_ADDR_MAX, and is itself a valid address or "<IPv6>/64" whose address part parses
 *     back to the same key (keys are canonical: two spellings of one client are one key);
 *   - X-Forwarded-For takes exactly its last entry's key;
 *   - the socket path gives the same key as the text path for the same address. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include "frontend/client_limits.h"
#include "fuzz_util.h"

static void check_key(const char *key) {
    size_t n = strnlen(key, CLIENT_ADDR_MAX);
    FUZZ_ASSERT(n > 0 && n < CLIENT_ADDR_MAX);
    char addr[CLIENT_ADDR_MAX], again[CLIENT_ADDR_MAX];
    memcpy(addr, key, n + 1);
    char *slash = strchr(addr, '/');
    if (slash) {
        FUZZ_ASSERT(!strcmp(slash, "/64"));
        *slash = 0;
    }
    FUZZ_ASSERT(client_address_parse(addr, strlen(addr), again) == 0);
    FUZZ_ASSERT(!strcmp(again, key));
    /* the socket path agrees */
    struct sockaddr_in s4 = {.sin_family = AF_INET};
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
    char via_socket[CLIENT_ADDR_MAX];
    if (inet_pton(AF_INET, addr, &s4.sin_addr) == 1) client_address_of_peer((struct sockaddr *)&s4, via_socket);
    else if (inet_pton(AF_INET6, addr, &s6.sin6_addr) == 1) client_address_of_peer((struct sockaddr *)&s6, via_socket);
    else FUZZ_ASSERT(0);
    FUZZ_ASSERT(!strcmp(via_socket, key));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *v = (const char *)data;
    char out[CLIENT_ADDR_MAX + 8];
    memset(out, 'Z', sizeof out);
    if (client_address_parse(v, size, out) == 0) check_key(out);
    else FUZZ_ASSERT(out[0] == 'Z');
    FUZZ_ASSERT(out[CLIENT_ADDR_MAX] == 'Z'); /* nothing written past the key */

    char fwd[CLIENT_ADDR_MAX], last[CLIENT_ADDR_MAX];
    const char *comma = memrchr(v, ',', size);
    const char *tail = comma ? comma + 1 : v;
    int rf = client_address_forwarded(v, size, fwd);
    int rl = client_address_parse(tail, (size_t)(v + size - tail), last);
    FUZZ_ASSERT(rf == rl);
    if (rf == 0) FUZZ_ASSERT(!strcmp(fwd, last));
    return 0;
}
