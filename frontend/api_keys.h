/* API keys (--api-keys FILE): who may use the server, and as whom. One key per line,
 *     KEY [NAME [ROLE]]
 * with '#' comments and blank lines ignored. NAME (default "key<line>") is the identity a
 * session belongs to: two keys with one name are one owner (rotate a key without losing the
 * sessions). ROLE is "user" (default) or "admin" (sees and may act on every session, and reads
 * /status and /metrics when they are kept private). Keys are at least API_KEY_MIN_LEN
 * characters of printable ASCII without spaces.
 *
 * Keys are kept only as SHA-256 digests and a presented key is compared with every one of them
 * with CRYPTO_memcmp, without stopping at a match: the time taken says nothing about which
 * bytes, or which key, matched. The table is replaced whole on reload (SIGHUP), under a lock
 * that is a leaf. */
#ifndef DA3_API_KEYS_H
#define DA3_API_KEYS_H

#include <stddef.h>

#define API_KEY_MIN_LEN 16
#define API_KEY_MAX_LEN 256
#define API_KEY_NAME_MAX 63

typedef enum { API_ROLE_USER = 0, API_ROLE_ADMIN = 1 } api_role;

/* Who a request comes from. name is "" when keys are off (everyone is the same anonymous user). */
typedef struct {
    char name[API_KEY_NAME_MAX + 1];
    api_role role;
} api_identity;

/* Loads (or, when already loaded, reloads) the key file. On any error the previous table stays
 * in force and err says which line is wrong. Returns the number of keys, or -1. */
int api_keys_load(const char *path, char *err, size_t errlen);

/* 1 when a key file is in force: every API request then needs a key. */
int api_keys_enabled(void);

/* Checks a presented key (len bytes, not NUL-terminated). Returns 1 and fills *who when it is
 * one of the keys, else 0. Constant time in which key matched and where a mismatch is. */
int api_keys_check(const char *key, size_t len, api_identity *who);

/* The caller may act on a session owned by `owner`: keys off, an admin, or the owner itself. */
int api_identity_owns(const api_identity *who, const char *owner);

/* Frees the table (tests, clean exit). */
void api_keys_clear(void);

#endif
