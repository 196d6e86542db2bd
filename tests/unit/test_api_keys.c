/* API keys (frontend/api_keys.h) and the CORS policy (frontend/cors.h): parsing with every
 * refusal, lookups, reload keeping the old table on error, ownership, origin decisions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frontend/api_keys.h"
#include "frontend/cors.h"
#include "tests/unit/check.h"

static const char *write_tmp(const char *text) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/da3-keys-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) return NULL;
    size_t n = strlen(text);
    if (write(fd, text, n) != (ssize_t)n) n = 0;
    close(fd);
    return path;
}

static int load_text(const char *text, char *err, size_t errlen) {
    const char *p = write_tmp(text);
    int n = p ? api_keys_load(p, err, errlen) : -1;
    if (p) unlink(p);
    return n;
}

static int check_key(const char *k, api_identity *who) { return api_keys_check(k, strlen(k), who); }

int main(void) {
    char err[256];
    api_identity who;
    CHECK(!api_keys_enabled());
    CHECK(api_identity_owns(&(api_identity){"", API_ROLE_USER}, "anyone")); /* keys off: no owners */
    CHECK(api_keys_load("/nonexistent/keys", err, sizeof err) == -1 && strstr(err, "cannot open"));

    /* Refusals, each naming its line; the table stays off. */
    CHECK(load_text("short alice\n", err, sizeof err) == -1 && strstr(err, "line 1"));
    CHECK(load_text("# only a comment\n\n", err, sizeof err) == -1 && strstr(err, "no keys"));
    CHECK(load_text("0123456789abcdef alice root\n", err, sizeof err) == -1 && strstr(err, "role"));
    CHECK(load_text("0123456789abcdef a b c\n", err, sizeof err) == -1 && strstr(err, "KEY [NAME [ROLE]]"));
    CHECK(load_text("0123456789abcdef\x01zz alice\n", err, sizeof err) == -1);
    CHECK(!api_keys_enabled());

    CHECK(load_text("# keys\n0123456789abcdef alice\n  fedcba9876543210fedc  bob admin # ops\nzzzzzzzzzzzzzzzzzzzz\n"
                    "aaaaaaaaaaaaaaaaaaaa alice user\n",
                    err, sizeof err) == 4);
    CHECK(api_keys_enabled());
    CHECK(check_key("0123456789abcdef", &who) && !strcmp(who.name, "alice") && who.role == API_ROLE_USER);
    CHECK(check_key("fedcba9876543210fedc", &who) && !strcmp(who.name, "bob") && who.role == API_ROLE_ADMIN);
    CHECK(check_key("zzzzzzzzzzzzzzzzzzzz", &who) && !strcmp(who.name, "key4")); /* default name: its line */
    /* A second key of one name is the same owner (key rotation keeps the sessions). */
    CHECK(check_key("aaaaaaaaaaaaaaaaaaaa", &who) && !strcmp(who.name, "alice"));
    CHECK(!check_key("0123456789abcdeF", &who));
    CHECK(!check_key("0123456789abcde", &who));
    CHECK(!check_key("", &who));
    CHECK(!api_keys_check("0123456789abcdef", 15, &who)); /* length is explicit */

    /* Ownership: the owner, an admin; never another user, never an unowned session. */
    api_identity alice = {"alice", API_ROLE_USER}, bob = {"bob", API_ROLE_ADMIN}, carol = {"carol", API_ROLE_USER};
    CHECK(api_identity_owns(&alice, "alice") && !api_identity_owns(&carol, "alice"));
    CHECK(api_identity_owns(&bob, "alice") && api_identity_owns(&bob, ""));
    CHECK(!api_identity_owns(&alice, "") && !api_identity_owns(&(api_identity){"", API_ROLE_USER}, ""));

    /* A broken reload keeps the keys in force. */
    CHECK(load_text("tiny\n", err, sizeof err) == -1);
    CHECK(check_key("0123456789abcdef", &who) && !strcmp(who.name, "alice"));
    CHECK(load_text("9999999999999999 dave\n", err, sizeof err) == 1);
    CHECK(!check_key("0123456789abcdef", &who) && check_key("9999999999999999", &who));
    api_keys_clear();
    CHECK(!api_keys_enabled());

    /* CORS: without keys anything; with keys the same origin only; a list exactly. */
    char buf[300];
    const char *host = "da3.example:8000";
    CHECK(cors_configure(NULL, 0, err, sizeof err) == 0 && !strcmp(cors_policy_text(), "*"));
    CHECK(cors_allowed("http://evil.example", 19, host, strlen(host)));
    CHECK(!strcmp(cors_headers(buf, sizeof buf, "http://x", 8, host, strlen(host)), "Access-Control-Allow-Origin: *\r\n"));
    CHECK(cors_configure(NULL, 1, err, sizeof err) == 0 && !strcmp(cors_policy_text(), "same-origin"));
    CHECK(cors_allowed(NULL, 0, host, strlen(host))); /* no Origin: not a browser's cross-site request */
    CHECK(cors_allowed("http://da3.example:8000", 23, host, strlen(host)));
    CHECK(cors_allowed("https://DA3.example:8000", 24, host, strlen(host))); /* behind a TLS proxy */
    CHECK(!cors_allowed("http://da3.example:8001", 23, host, strlen(host)));
    CHECK(!cors_allowed("http://da3.example:8000.evil", 28, host, strlen(host)));
    CHECK(!cors_allowed("http://evil.example", 19, host, strlen(host)));
    CHECK(!strcmp(cors_headers(buf, sizeof buf, "http://evil.example", 19, host, strlen(host)), "Vary: Origin\r\n"));
    CHECK(strstr(cors_headers(buf, sizeof buf, "http://da3.example:8000", 23, host, strlen(host)),
                 "Access-Control-Allow-Origin: http://da3.example:8000\r\nVary: Origin\r\n") == buf);
    CHECK(cors_configure("https://app.example, http://localhost:3000", 1, err, sizeof err) == 0);
    CHECK(cors_allowed("http://localhost:3000", 21, host, strlen(host)));
    CHECK(!cors_allowed("http://localhost:300", 20, host, strlen(host)));
    CHECK(!cors_allowed("http://da3.example:8000", 23, host, strlen(host))); /* same origin not listed */
    CHECK(cors_configure("https://app.example/path", 1, err, sizeof err) == -1 && strstr(err, "not an origin"));
    CHECK(cors_configure("app.example", 1, err, sizeof err) == -1);
    CHECK(cors_configure("*", 1, err, sizeof err) == 0 && cors_allowed("http://evil.example", 19, host, strlen(host)));
    CHECK_DONE("test_api_keys");
}
