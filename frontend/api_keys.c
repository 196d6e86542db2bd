#include "frontend/api_keys.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    api_identity who;
} key_entry;

static struct {
    pthread_mutex_t lock; /* a leaf: nothing else is locked while it is held */
    key_entry *keys;
    int n;
    int enabled;
} table = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0};

/* Splits line into at most 3 whitespace-separated fields; returns how many (4 = too many). */
static int split_fields(char *line, char *f[3]) {
    int n = 0;
    for (char *p = strtok(line, " \t\r\n"); p; p = strtok(NULL, " \t\r\n")) {
        if (n == 3) return 4;
        f[n++] = p;
    }
    return n;
}

static int key_chars_ok(const char *k) {
    for (; *k; k++)
        if (*k <= ' ' || *k > '~') return 0;
    return 1;
}

/* Parses the whole file into a new table; 0, or -1 with err naming the line. */
static int parse_file(FILE *f, key_entry **out, int *count, char *err, size_t errlen) {
    key_entry *keys = NULL;
    int n = 0, cap = 0, lineno = 0;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            snprintf(err, errlen, "line %d: longer than %zu characters", lineno, sizeof line - 2);
            goto fail;
        }
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *fld[3] = {NULL, NULL, NULL};
        int nf = split_fields(line, fld);
        if (nf == 0) continue;
        if (nf > 3) {
            snprintf(err, errlen, "line %d: expected KEY [NAME [ROLE]]", lineno);
            goto fail;
        }
        size_t klen = strlen(fld[0]);
        if (klen < API_KEY_MIN_LEN || klen > API_KEY_MAX_LEN || !key_chars_ok(fld[0])) {
            snprintf(err, errlen, "line %d: a key is %d to %d printable characters without spaces", lineno,
                     API_KEY_MIN_LEN, API_KEY_MAX_LEN);
            goto fail;
        }
        if (fld[1] && strlen(fld[1]) > API_KEY_NAME_MAX) {
            snprintf(err, errlen, "line %d: a name is at most %d characters", lineno, API_KEY_NAME_MAX);
            goto fail;
        }
        api_role role = API_ROLE_USER;
        if (fld[2]) {
            if (!strcmp(fld[2], "admin")) role = API_ROLE_ADMIN;
            else if (strcmp(fld[2], "user")) {
                snprintf(err, errlen, "line %d: the role is 'user' or 'admin', not '%.32s'", lineno, fld[2]);
                goto fail;
            }
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            key_entry *grown = realloc(keys, (size_t)cap * sizeof *keys);
            if (!grown) {
                snprintf(err, errlen, "out of memory");
                goto fail;
            }
            keys = grown;
        }
        key_entry *e = &keys[n++];
        memset(e, 0, sizeof *e);
        SHA256((const unsigned char *)fld[0], klen, e->digest);
        if (fld[1]) snprintf(e->who.name, sizeof e->who.name, "%s", fld[1]);
        else snprintf(e->who.name, sizeof e->who.name, "key%d", lineno);
        e->who.role = role;
        OPENSSL_cleanse(fld[0], klen); /* the key itself is not kept in memory */
    }
    if (n == 0) {
        snprintf(err, errlen, "no keys in the file (an empty key file would lock every client out)");
        goto fail;
    }
    *out = keys;
    *count = n;
    return 0;
fail:
    OPENSSL_cleanse(line, sizeof line);
    free(keys);
    return -1;
}

int api_keys_load(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open %s", path);
        return -1;
    }
    key_entry *keys;
    int n;
    int rc = parse_file(f, &keys, &n, err, errlen);
    fclose(f);
    if (rc) return -1;
    pthread_mutex_lock(&table.lock);
    key_entry *old = table.keys;
    int old_n = table.n;
    table.keys = keys;
    table.n = n;
    table.enabled = 1;
    pthread_mutex_unlock(&table.lock);
    if (old) OPENSSL_cleanse(old, (size_t)old_n * sizeof *old);
    free(old);
    return n;
}

int api_keys_enabled(void) {
    pthread_mutex_lock(&table.lock);
    int on = table.enabled;
    pthread_mutex_unlock(&table.lock);
    return on;
}

int api_keys_check(const char *key, size_t len, api_identity *who) {
    unsigned char d[SHA256_DIGEST_LENGTH];
    /* Hashing first makes every comparison the same length, whatever was sent. */
    SHA256((const unsigned char *)key, len, d);
    int found = -1;
    pthread_mutex_lock(&table.lock);
    for (int i = 0; i < table.n; i++) {
        int same = CRYPTO_memcmp(d, table.keys[i].digest, sizeof d) == 0;
        /* No early exit and no branch on the result: keep the first match. */
        found += (found < 0) * same * (i + 1);
    }
    if (found >= 0 && who) *who = table.keys[found].who;
    pthread_mutex_unlock(&table.lock);
    return found >= 0;
}

int api_identity_owns(const api_identity *who, const char *owner) {
    if (!api_keys_enabled() || who->role == API_ROLE_ADMIN) return 1;
    return who->name[0] && !strcmp(who->name, owner ? owner : "");
}

void api_keys_clear(void) {
    pthread_mutex_lock(&table.lock);
    if (table.keys) OPENSSL_cleanse(table.keys, (size_t)table.n * sizeof *table.keys);
    free(table.keys);
    table.keys = NULL;
    table.n = 0;
    table.enabled = 0;
    pthread_mutex_unlock(&table.lock);
}
