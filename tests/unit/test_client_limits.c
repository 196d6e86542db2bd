/* Per-client limits (frontend/client_limits.h): address keys from proxy headers and sockets
 * (IPv4, IPv4-mapped, IPv6 grouped by /64, junk refused), and the token buckets: HTTP requests
 * with their retry time, WebSocket messages, bytes, WebSockets per address. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "common/util.h"
#include "frontend/client_limits.h"
#include "tests/unit/check.h"

static int parse(const char *s, char out[CLIENT_ADDR_MAX]) { return client_address_parse(s, strlen(s), out); }

static void addresses(void) {
    char a[CLIENT_ADDR_MAX], b[CLIENT_ADDR_MAX];
    CHECK(parse(" 10.0.0.1\t", a) == 0 && !strcmp(a, "10.0.0.1"));
    CHECK(parse("::ffff:10.0.0.1", a) == 0 && !strcmp(a, "10.0.0.1"));
    CHECK(parse("2001:db8:1:2:aaaa::1", a) == 0 && parse("2001:db8:1:2:ffff:ffff:ffff:ffff", b) == 0 && !strcmp(a, b));
    CHECK_MSG(!strcmp(a, "2001:db8:1:2::/64"), "%s", a);
    CHECK(parse("2001:db8:1:3::1", b) == 0 && strcmp(a, b) != 0); /* another /64 is another client */
    CHECK(parse("::1", a) == 0 && !strcmp(a, "::/64"));
    const char *junk[] = {"", " ", "10.0.0", "10.0.0.256", "1.2.3.4.5", "evil", "10.0.0.1 x", "::g",
                          "1:2:3:4:5:6:7:8:9", "10.0.0.1\r\nX: y", "0x7f.1", "[::1]", "::1%eth0",
                          "1234567890123456789012345678901234567890123456789012345678901234567890"};
    for (size_t i = 0; i < sizeof junk / sizeof *junk; i++) {
        strcpy(a, "untouched");
        CHECK_MSG(parse(junk[i], a) == -1 && !strcmp(a, "untouched"), "'%s' accepted as %s", junk[i], a);
    }
    const char *xff = "1.1.1.1, 2.2.2.2,3.3.3.3 ";
    CHECK(client_address_forwarded(xff, strlen(xff), a) == 0 && !strcmp(a, "3.3.3.3"));
    const char *bad_last = "1.1.1.1, nonsense";
    CHECK(client_address_forwarded(bad_last, strlen(bad_last), a) == -1); /* the first is not believed */
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "2001:db8:5:6:7::8", &s6.sin6_addr);
    client_address_of_peer((struct sockaddr *)&s6, a);
    CHECK_MSG(!strcmp(a, "2001:db8:5:6::/64"), "%s", a);
    struct sockaddr_in s4 = {.sin_family = AF_INET};
    inet_pton(AF_INET, "192.0.2.7", &s4.sin_addr);
    client_address_of_peer((struct sockaddr *)&s4, a);
    CHECK(!strcmp(a, "192.0.2.7"));
    struct sockaddr su = {.sa_family = AF_UNIX};
    client_address_of_peer(&su, a);
    CHECK(!strcmp(a, "unknown"));
}

static void buckets(void) {
    client_limits_config cfg = {.max_websockets = 2, .msg_rate = 5, .byte_rate = 1000, .http_rate = 10};
    CHECK(client_limits_init(&cfg, 64) == 0);
    double t = 1000.0;
    /* HTTP: a burst of 2 s worth, then refused with the time until the next token. */
    int ok = 0;
    for (int i = 0; i < 30; i++) ok += client_take_request("10.0.0.1", t) == 0;
    CHECK_MSG(ok == 20, "%d requests in the burst", ok);
    double wait = client_take_request("10.0.0.1", t);
    CHECK_NEAR(wait, 0.1, 1e-9);
    CHECK(client_take_request("10.0.0.2", t) == 0); /* another address has its own bucket */
    CHECK(client_take_request("10.0.0.1", t + 0.1) == 0);
    CHECK(client_take_request("10.0.0.1", t + 0.1) > 0);
    CHECK(client_take_request("10.0.0.1", t + 100) == 0); /* refilled (capped at the burst) */
    ok = 0;
    for (int i = 0; i < 30; i++) ok += client_take_request("10.0.0.1", t + 100) == 0;
    CHECK_MSG(ok == 19, "after a long pause the burst is capped: %d", ok);
    /* WebSockets per address, messages and bytes on the entry. */
    client_entry *a = client_ws_acquire("10.0.0.3"), *b = client_ws_acquire("10.0.0.3");
    CHECK(a && a == b && client_ws_acquire("10.0.0.3") == NULL);
    client_ws_release(b);
    CHECK(client_ws_acquire("10.0.0.3") == a);
    double now = now_mono() + 10; /* WebSocket entries start on the real clock */
    client_take_message(a, now); /* the entry's clock starts here */
    ok = 1;
    for (int i = 0; i < 20; i++) ok += client_take_message(a, now);
    CHECK_MSG(ok == 10, "%d messages in the burst", ok);
    CHECK(client_take_message(a, now + 0.25) == 1 && client_take_message(a, now + 0.25) == 0);
    CHECK(client_take_bytes(a, 2000, now + 10) == 0);
    CHECK_NEAR(client_take_bytes(a, 500, now + 10), 0.5, 1e-9);
    client_ws_release(a);
    client_ws_release(a);
    /* A rate under 0.5/s still holds one token (else it would refuse everything). */
    client_limits_config slow = {.http_rate = 0.2};
    CHECK(client_limits_init(&slow, 64) == 0);
    CHECK(client_take_request("10.0.0.9", t) == 0 && client_take_request("10.0.0.9", t) > 0);
    CHECK(client_take_request("10.0.0.9", t + 5.1) == 0);
    client_limits_free();
}

int main(void) {
    addresses();
    buckets();
    CHECK_DONE("test_client_limits");
}
