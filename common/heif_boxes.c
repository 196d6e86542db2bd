/* A bounded reader of HEIF box structure (see heif_boxes.h). Every count and length in the file is
 * checked against the bytes that remain before it is used, and everything kept is capped, so a
 * file can make this code neither read out of bounds nor allocate by its say-so. The point is to
 * learn what libheif and libde265 would allocate before they do: libheif sizes a grid's canvas
 * from the grid's own header and libde265 sizes a picture from its sequence parameter set (up to
 * 65535x65535), neither from the ispe size the limits are checked against. */
#include "common/heif_boxes.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define FOURCC(a, b, c, d) ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (uint32_t)(d))

/* Caps on what one file may declare (an iPhone photo has ~50 items, 48 of them tiles). */
enum {
    MAX_ITEMS = 4096,
    MAX_PROPS = 2048,
    MAX_EXTENTS = 8192,
    MAX_REFS = 4096,
    MAX_TILES = 2048,
    MAX_NALS_PER_ITEM = 4096,
    /* A coded HEVC picture covers whole coding blocks (CTBs are at most 64x64): it may exceed its
     * item's declared size by less than that, never more. */
    CODED_PAD = 64,
};

typedef struct {
    uint64_t off, len; /* absolute in the file (construction method 0) or in idat (method 1) */
} extent;

typedef struct {
    uint32_t id, type;
    int has_loc, method, ext_first, ext_count;
    const uint8_t *assoc; /* its ipma entry's associations */
    int n_assoc, wide_assoc;
    int checked; /* hvc1 items: parameter sets and pictures already read */
    uint32_t coded_w, coded_h;
    int depth;
} item;

typedef struct {
    uint32_t type;
    const uint8_t *body;
    size_t len;
} prop;

typedef struct {
    uint32_t type, from;
    const uint8_t *to; /* reference_count ids of 2 or 4 bytes */
    int n_to, wide;
} ref;

typedef struct {
    const uint8_t *d;
    size_t len;
    item *items;
    int n_items;
    prop *props;
    int n_props;
    extent *ext;
    int n_ext;
    ref *refs;
    int n_refs;
    const uint8_t *idat;
    size_t idat_len;
    char *err;
    size_t errlen;
} hctx;

static uint32_t be16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }

/* A four-character code as text, with anything unprintable shown as '?'. */
static const char *fcc(uint32_t t, char out[5]) {
    for (int i = 0; i < 4; i++) {
        char ch = (char)(t >> (24 - 8 * i));
        out[i] = ch >= 0x20 && ch < 0x7f ? ch : '?';
    }
    out[4] = 0;
    return out;
}

static int fail(hctx *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(hctx *c, int code, const char *fmt, ...) {
    if (c->err && c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, c->errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* ---- cursor over one box body: reads past the end set `bad` and return 0 ---- */

typedef struct {
    const uint8_t *p;
    size_t n, i;
    int bad;
} cursor;

static uint64_t rd(cursor *k, int bytes) {
    if (bytes == 0) return 0;
    if (k->bad || (size_t)bytes > k->n - k->i) {
        k->bad = 1;
        return 0;
    }
    const uint8_t *p = k->p + k->i;
    k->i += (size_t)bytes;
    switch (bytes) {
    case 1: return p[0];
    case 2: return be16(p);
    case 4: return be32(p);
    default: return be64(p);
    }
}

/* Reads the box at *pos (which must end by `end`), advancing *pos past it. Returns 1 with its type
 * and body, 0 at `end`, or HBOX_CORRUPT for a header that is cut short or a size that overruns. */
static int box_next(hctx *c, size_t *pos, size_t end, uint32_t *type, const uint8_t **body, size_t *body_len) {
    char t[5];
    if (*pos >= end) return 0;
    size_t left = end - *pos;
    if (left < 8) return fail(c, HBOX_CORRUPT, "a box header at byte %zu is cut short", *pos);
    const uint8_t *p = c->d + *pos;
    uint64_t size = be32(p);
    size_t hdr = 8;
    *type = be32(p + 4);
    if (size == 1) {
        if (left < 16) return fail(c, HBOX_CORRUPT, "box '%s' at byte %zu is cut short", fcc(*type, t), *pos);
        size = be64(p + 8);
        hdr = 16;
    } else if (size == 0) {
        size = left; /* "to the end of the file" */
    }
    if (size < hdr)
        return fail(c, HBOX_CORRUPT, "box '%s' at byte %zu has size %llu", fcc(*type, t), *pos,
                    (unsigned long long)size);
    if (size > left)
        return fail(c, HBOX_CORRUPT, "box '%s' at byte %zu needs %llu bytes but only %zu remain (truncated file?)",
                    fcc(*type, t), *pos, (unsigned long long)size, left);
    *body = p + hdr;
    *body_len = (size_t)size - hdr;
    *pos += (size_t)size;
    return 1;
}

/* ---- brands ---- */

static int is_hevc_brand(uint32_t b) {
    static const uint32_t brands[] = {
        FOURCC('h', 'e', 'i', 'c'), FOURCC('h', 'e', 'i', 'x'), FOURCC('h', 'e', 'v', 'c'), FOURCC('h', 'e', 'v', 'x'),
        FOURCC('h', 'e', 'i', 'm'), FOURCC('h', 'e', 'i', 's'), FOURCC('h', 'e', 'v', 'm'), FOURCC('h', 'e', 'v', 's')};
    for (size_t i = 0; i < sizeof brands / sizeof brands[0]; i++)
        if (b == brands[i]) return 1;
    return 0;
}

hbox_brand hbox_sniff(const uint8_t *d, size_t len) {
    if (!d || len < 12 || be32(d + 4) != FOURCC('f', 't', 'y', 'p')) return HBOX_BRAND_NONE;
    size_t size = be32(d);
    if (size < 12) return HBOX_BRAND_NONE;
    if (size > len) size = len; /* a cut file still says what it was; hbox_read reports the cut */
    int hevc = 0, avif = 0, generic = 0;
    for (size_t p = 8; p + 4 <= size;
         p += p == 8 ? 8 : 4) { /* major brand, then (after minor_version) the compatible ones */
        uint32_t b = be32(d + p);
        hevc |= is_hevc_brand(b);
        avif |= b == FOURCC('a', 'v', 'i', 'f') || b == FOURCC('a', 'v', 'i', 's');
        generic |= b == FOURCC('m', 'i', 'f', '1') || b == FOURCC('m', 's', 'f', '1');
    }
    return hevc ? HBOX_BRAND_HEIF : avif ? HBOX_BRAND_AVIF : generic ? HBOX_BRAND_HEIF : HBOX_BRAND_NONE;
}

/* ---- items, properties, references ---- */

static int cmp_item(const void *a, const void *b) {
    uint32_t x = ((const item *)a)->id, y = ((const item *)b)->id;
    return x < y ? -1 : x > y;
}

static item *find_item(hctx *c, uint32_t id) {
    item key = {.id = id};
    return bsearch(&key, c->items, (size_t)c->n_items, sizeof *c->items, cmp_item);
}

static int read_iinf(hctx *c, const uint8_t *b, size_t n) {
    if (n < 6 || (b[0] != 0 && n < 8)) return fail(c, HBOX_CORRUPT, "the item list (iinf) is cut short");
    /* FullBox header, then entry_count (16 bits in version 0, else 32); the entries are boxes. */
    size_t pos = (size_t)(b - c->d) + (b[0] == 0 ? 6 : 8), end = (size_t)(b - c->d) + n;
    uint32_t type;
    const uint8_t *body;
    size_t blen;
    int r;
    while ((r = box_next(c, &pos, end, &type, &body, &blen)) == 1) {
        if (type != FOURCC('i', 'n', 'f', 'e') || blen < 4 || body[0] < 2) continue; /* versions 0/1 name no type */
        cursor k = {body, blen, 4, 0};
        uint32_t id = (uint32_t)rd(&k, body[0] == 2 ? 2 : 4);
        rd(&k, 2); /* item_protection_index */
        uint32_t itype = (uint32_t)rd(&k, 4);
        if (k.bad) return fail(c, HBOX_CORRUPT, "an item entry (infe) is cut short");
        if (c->n_items == MAX_ITEMS) return fail(c, HBOX_UNSUPPORTED, "HEIF file with more than %d items", MAX_ITEMS);
        c->items[c->n_items++] = (item){.id = id, .type = itype};
    }
    if (r < 0) return r;
    qsort(c->items, (size_t)c->n_items, sizeof *c->items, cmp_item);
    for (int i = 1; i < c->n_items; i++)
        if (c->items[i].id == c->items[i - 1].id)
            return fail(c, HBOX_CORRUPT, "item %u is declared twice", c->items[i].id);
    return 0;
}

static int read_iloc(hctx *c, const uint8_t *b, size_t n) {
    cursor k = {b, n, 0, 0};
    int version = (int)rd(&k, 1);
    rd(&k, 3);
    int s1 = (int)rd(&k, 1), s2 = (int)rd(&k, 1);
    int off_size = s1 >> 4, len_size = s1 & 15, base_size = s2 >> 4, idx_size = version >= 1 ? s2 & 15 : 0;
    if (version > 2)
        return fail(c, HBOX_UNSUPPORTED, "HEIF item locations (iloc) of version %d are not supported", version);
    const int sizes[4] = {off_size, len_size, base_size, idx_size};
    for (int i = 0; i < 4; i++)
        if (sizes[i] != 0 && sizes[i] != 4 && sizes[i] != 8)
            return fail(c, HBOX_CORRUPT, "iloc field size %d", sizes[i]);
    uint32_t count = (uint32_t)rd(&k, version < 2 ? 2 : 4);
    for (uint32_t i = 0; i < count && !k.bad; i++) {
        uint32_t id = (uint32_t)rd(&k, version < 2 ? 2 : 4);
        int method = version >= 1 ? (int)(rd(&k, 2) & 15) : 0;
        rd(&k, 2); /* data_reference_index: 0 means this file, the only one we read */
        uint64_t base = rd(&k, base_size);
        int n_ext = (int)rd(&k, 2);
        item *it = find_item(c, id);
        int keep = it && !it->has_loc; /* items without infe, and repeated entries, are skipped */
        if (keep) {
            it->has_loc = 1;
            it->method = method;
            it->ext_first = c->n_ext;
        }
        for (int e = 0; e < n_ext && !k.bad; e++) {
            rd(&k, idx_size);
            uint64_t off = rd(&k, off_size), elen = rd(&k, len_size);
            if (!keep) continue;
            if (c->n_ext == MAX_EXTENTS)
                return fail(c, HBOX_UNSUPPORTED, "HEIF file with more than %d data extents", MAX_EXTENTS);
            if (off > UINT64_MAX - base) return fail(c, HBOX_CORRUPT, "item %u's data offset overflows", id);
            c->ext[c->n_ext++] = (extent){base + off, elen};
            it->ext_count++;
        }
    }
    return k.bad ? fail(c, HBOX_CORRUPT, "the item locations (iloc) are cut short") : 0;
}

static int read_ipco(hctx *c, const uint8_t *b, size_t n) {
    size_t pos = (size_t)(b - c->d), end = pos + n;
    uint32_t type;
    const uint8_t *body;
    size_t blen;
    int r;
    while ((r = box_next(c, &pos, end, &type, &body, &blen)) == 1) {
        if (c->n_props == MAX_PROPS)
            return fail(c, HBOX_UNSUPPORTED, "HEIF file with more than %d properties", MAX_PROPS);
        c->props[c->n_props++] = (prop){type, body, blen};
    }
    return r;
}

/* The first ipma box is the one libheif reads; so do we. */
static int read_ipma(hctx *c, const uint8_t *b, size_t n) {
    cursor k = {b, n, 0, 0};
    int version = (int)rd(&k, 1);
    uint32_t flags = (uint32_t)rd(&k, 3), count = (uint32_t)rd(&k, 4);
    int wide = flags & 1;
    for (uint32_t i = 0; i < count && !k.bad; i++) {
        uint32_t id = (uint32_t)rd(&k, version < 1 ? 2 : 4);
        int n_assoc = (int)rd(&k, 1);
        const uint8_t *assoc = k.p + k.i;
        for (int a = 0; a < n_assoc; a++) rd(&k, wide ? 2 : 1);
        item *it = find_item(c, id);
        if (!k.bad && it && !it->assoc) {
            it->assoc = assoc;
            it->n_assoc = n_assoc;
            it->wide_assoc = wide;
        }
    }
    return k.bad ? fail(c, HBOX_CORRUPT, "the property associations (ipma) are cut short") : 0;
}

static int read_iprp(hctx *c, const uint8_t *b, size_t n) {
    size_t pos = (size_t)(b - c->d), end = pos + n;
    uint32_t type;
    const uint8_t *body;
    size_t blen;
    int r, have_ipco = 0, have_ipma = 0;
    while ((r = box_next(c, &pos, end, &type, &body, &blen)) == 1) {
        if (type == FOURCC('i', 'p', 'c', 'o') && !have_ipco) {
            have_ipco = 1;
            if ((r = read_ipco(c, body, blen))) return r;
        } else if (type == FOURCC('i', 'p', 'm', 'a') && !have_ipma) {
            have_ipma = 1;
            if ((r = read_ipma(c, body, blen))) return r;
        }
    }
    return r;
}

static int read_iref(hctx *c, const uint8_t *b, size_t n) {
    if (n < 4) return fail(c, HBOX_CORRUPT, "the item references (iref) are cut short");
    int wide = b[0] != 0;
    size_t pos = (size_t)(b - c->d) + 4, end = (size_t)(b - c->d) + n;
    uint32_t type;
    const uint8_t *body;
    size_t blen;
    int r;
    while ((r = box_next(c, &pos, end, &type, &body, &blen)) == 1) {
        cursor k = {body, blen, 0, 0};
        uint32_t from = (uint32_t)rd(&k, wide ? 4 : 2);
        int n_to = (int)rd(&k, 2);
        const uint8_t *to = k.p + k.i;
        for (int i = 0; i < n_to; i++) rd(&k, wide ? 4 : 2);
        if (k.bad) return fail(c, HBOX_CORRUPT, "an item reference is cut short");
        if (c->n_refs == MAX_REFS)
            return fail(c, HBOX_UNSUPPORTED, "HEIF file with more than %d item references", MAX_REFS);
        c->refs[c->n_refs++] = (ref){type, from, to, n_to, wide};
    }
    return r;
}

static uint32_t ref_to(const ref *r, int i) { return r->wide ? be32(r->to + 4 * i) : be16(r->to + 2 * i); }

/* The first reference of `type` from item `from`, or NULL (libheif uses the first, too). */
static const ref *find_ref(const hctx *c, uint32_t type, uint32_t from) {
    for (int i = 0; i < c->n_refs; i++)
        if (c->refs[i].type == type && c->refs[i].from == from) return &c->refs[i];
    return NULL;
}

/* The i-th property associated with the item (in ipma order), or NULL past the end; a
 * reference to a property that does not exist is an error. */
static int item_prop_at(hctx *c, const item *it, int i, const prop **out) {
    *out = NULL;
    if (!it->assoc || i >= it->n_assoc) return 0;
    int index = it->wide_assoc ? (int)(be16(it->assoc + 2 * i) & 0x7fff) : it->assoc[i] & 0x7f;
    if (index == 0) return 0; /* "no property" */
    if (index > c->n_props)
        return fail(c, HBOX_CORRUPT, "item %u refers to property %d of %d", it->id, index, c->n_props);
    *out = &c->props[index - 1];
    return 0;
}

/* The first property of `type` associated with the item, or NULL; *rc gets 0 or an error. */
static const prop *item_prop(hctx *c, const item *it, uint32_t type, int *rc) {
    *rc = 0;
    for (int i = 0; it->assoc && i < it->n_assoc; i++) {
        const prop *p;
        if ((*rc = item_prop_at(c, it, i, &p))) return NULL;
        if (p && p->type == type) return p;
    }
    return NULL;
}

static int item_ispe(hctx *c, const item *it, uint32_t *w, uint32_t *h) {
    int rc = 0;
    const prop *p = item_prop(c, it, FOURCC('i', 's', 'p', 'e'), &rc);
    if (rc) return rc;
    if (!p || p->len < 12) return fail(c, HBOX_CORRUPT, "item %u has no image size (ispe)", it->id);
    *w = be32(p->body + 4);
    *h = be32(p->body + 8);
    if (*w == 0 || *h == 0) return fail(c, HBOX_CORRUPT, "item %u declares a size of %ux%u", it->id, *w, *h);
    return 0;
}

/* Whether the item carries a transformative property (irot, imir, clap); *rc gets any error. */
static int item_transformed(hctx *c, const item *it, int *rc) {
    static const uint32_t kinds[] = {FOURCC('i', 'r', 'o', 't'), FOURCC('i', 'm', 'i', 'r'),
                                     FOURCC('c', 'l', 'a', 'p')};
    for (int i = 0; i < 3; i++) {
        int found = item_prop(c, it, kinds[i], rc) != NULL;
        if (*rc || found) return found;
    }
    return 0;
}

/* ---- item data ---- */

static uint64_t item_size(const hctx *c, const item *it) {
    uint64_t n = 0;
    for (int e = 0; e < it->ext_count; e++) n += c->ext[it->ext_first + e].len;
    return n;
}

/* Checks that the item's data exists and lies inside the file (or idat). */
static int item_data_check(hctx *c, const item *it) {
    if (!it->has_loc || it->ext_count == 0) return fail(c, HBOX_CORRUPT, "item %u has no data", it->id);
    if (it->method > 1)
        return fail(c, HBOX_UNSUPPORTED,
                    "HEIF item data by reference to other items (construction method %d) is not supported", it->method);
    uint64_t limit = it->method == 0 ? c->len : c->idat_len;
    if (it->method == 1 && !c->idat)
        return fail(c, HBOX_CORRUPT, "item %u's data is in an idat box that is missing", it->id);
    for (int e = 0; e < it->ext_count; e++) {
        const extent *x = &c->ext[it->ext_first + e];
        if (x->len == 0) return fail(c, HBOX_CORRUPT, "item %u has an empty data extent", it->id);
        if (x->off > limit || x->len > limit - x->off)
            return fail(c, HBOX_CORRUPT,
                        "item %u's data (bytes %llu-%llu) lies beyond the end of the %s (%llu bytes): truncated?",
                        it->id, (unsigned long long)x->off, (unsigned long long)(x->off + x->len - 1),
                        it->method == 0 ? "file" : "idat box", (unsigned long long)limit);
    }
    return 0;
}

/* Copies n bytes of the item's data from logical position pos (across extents); 0 or -1 past its end. */
static int item_read(const hctx *c, const item *it, uint64_t pos, uint8_t *dst, size_t n) {
    const uint8_t *base = it->method == 0 ? c->d : c->idat;
    for (int e = 0; e < it->ext_count && n > 0; e++) {
        const extent *x = &c->ext[it->ext_first + e];
        if (pos >= x->len) {
            pos -= x->len;
            continue;
        }
        size_t take = (size_t)(x->len - pos) < n ? (size_t)(x->len - pos) : n;
        memcpy(dst, base + x->off + pos, take);
        dst += take;
        n -= take;
        pos = 0;
    }
    return n == 0 ? 0 : -1;
}

/* ---- HEVC parameter sets ---- */

typedef struct {
    const uint8_t *p;
    size_t n, bit;
    int bad;
} bits;

static uint32_t bits_u(bits *b, int n) {
    uint32_t v = 0;
    for (int i = 0; i < n; i++) {
        if (b->bit >= b->n * 8) {
            b->bad = 1;
            return 0;
        }
        v = v << 1 | ((b->p[b->bit >> 3] >> (7 - (b->bit & 7))) & 1);
        b->bit++;
    }
    return v;
}

static uint32_t bits_ue(bits *b) { /* Exp-Golomb */
    int zeros = 0;
    while (!b->bad && bits_u(b, 1) == 0)
        if (++zeros > 31) b->bad = 1;
    if (b->bad) return 0;
    return (uint32_t)((1ull << zeros) - 1 + bits_u(b, zeros));
}

/* The picture size and bit depth an HEVC SPS NAL unit (2-byte header included) asks for.
 * Returns 0, or -1 when the fields cannot be read. */
static int sps_read(const uint8_t *nal, size_t n, uint32_t *w, uint32_t *h, int *depth) {
    uint8_t rbsp[512];
    size_t m = 0;
    int zeros = 0;
    for (size_t i = 2; i < n && m < sizeof rbsp; i++) { /* drop emulation-prevention bytes (00 00 03) */
        if (zeros >= 2 && nal[i] == 3) {
            zeros = 0;
            continue;
        }
        zeros = nal[i] == 0 ? zeros + 1 : 0;
        rbsp[m++] = nal[i];
    }
    bits b = {rbsp, m, 0, 0};
    bits_u(&b, 4); /* sps_video_parameter_set_id */
    int sub_layers = (int)bits_u(&b, 3);
    bits_u(&b, 1);
    if (sub_layers > 6) return -1;
    bits_u(&b, 32), bits_u(&b, 32), bits_u(&b, 32); /* general profile, tier, flags and level: 96 bits */
    int profile_present[8] = {0}, level_present[8] = {0};
    for (int i = 0; i < sub_layers; i++) {
        profile_present[i] = (int)bits_u(&b, 1);
        level_present[i] = (int)bits_u(&b, 1);
    }
    if (sub_layers > 0)
        for (int i = sub_layers; i < 8; i++) bits_u(&b, 2);
    for (int i = 0; i < sub_layers; i++) {
        if (profile_present[i]) bits_u(&b, 32), bits_u(&b, 32), bits_u(&b, 24);
        if (level_present[i]) bits_u(&b, 8);
    }
    bits_ue(&b); /* sps_seq_parameter_set_id */
    uint32_t chroma = bits_ue(&b);
    if (chroma == 3) bits_u(&b, 1);
    *w = bits_ue(&b);
    *h = bits_ue(&b);
    if (bits_u(&b, 1))
        for (int i = 0; i < 4; i++) bits_ue(&b); /* conformance window */
    uint32_t dl = bits_ue(&b), dc = bits_ue(&b);
    if (b.bad || chroma > 3 || dl > 8 || dc > 8) return -1;
    *depth = 8 + (int)(dl > dc ? dl : dc);
    return 0;
}

/* Folds one SPS into the item's coded size (the largest any of its parameter sets asks for). */
static int note_sps(hctx *c, item *it, const uint8_t *nal, size_t n) {
    uint32_t w, h;
    int depth;
    if (sps_read(nal, n, &w, &h, &depth))
        return fail(c, HBOX_CORRUPT, "item %u has an unreadable HEVC parameter set", it->id);
    if (w > it->coded_w) it->coded_w = w;
    if (h > it->coded_h) it->coded_h = h;
    if (depth > it->depth) it->depth = depth;
    return 0;
}

/* Reads an hvc1 item's parameter sets (hvcC and in-band) and counts its coded pictures, once. */
static int check_hevc_item(hctx *c, item *it) {
    if (it->checked) return 0;
    int rc = 0;
    const prop *cfg = item_prop(c, it, FOURCC('h', 'v', 'c', 'C'), &rc);
    if (rc) return rc;
    if (!cfg || cfg->len < 23) return fail(c, HBOX_CORRUPT, "item %u has no HEVC configuration (hvcC)", it->id);
    if ((rc = item_data_check(c, it))) return rc;
    it->depth = 8 + ((cfg->body[17] & 7) > (cfg->body[18] & 7) ? cfg->body[17] & 7 : cfg->body[18] & 7);
    /* hvcC: 22 bytes of profile and format, then arrays of length-prefixed NAL units. */
    cursor k = {cfg->body, cfg->len, 22, 0};
    int arrays = (int)rd(&k, 1);
    for (int a = 0; a < arrays && !k.bad; a++) {
        rd(&k, 1);
        int nalus = (int)rd(&k, 2);
        for (int u = 0; u < nalus && !k.bad; u++) {
            size_t n = (size_t)rd(&k, 2);
            if (k.bad || n > k.n - k.i)
                return fail(c, HBOX_CORRUPT, "item %u's HEVC configuration is cut short", it->id);
            const uint8_t *nal = k.p + k.i;
            k.i += n;
            if (n >= 2 && ((nal[0] >> 1) & 0x3f) == 33 && (rc = note_sps(c, it, nal, n))) return rc;
        }
    }
    if (k.bad) return fail(c, HBOX_CORRUPT, "item %u's HEVC configuration is cut short", it->id);
    /* The data: NAL units with 4-byte lengths (what libheif hands libde265). A parameter set sent
     * in-band replaces the configuration's, so those count too. */
    uint64_t size = item_size(c, it), pos = 0;
    int pictures = 0, nals = 0;
    while (pos < size) {
        uint8_t head[4];
        if (++nals > MAX_NALS_PER_ITEM)
            return fail(c, HBOX_UNSUPPORTED, "HEIF image item with more than %d NAL units", MAX_NALS_PER_ITEM);
        if (size - pos < 4 || item_read(c, it, pos, head, 4))
            return fail(c, HBOX_CORRUPT, "item %u's coded data ends inside a NAL unit length", it->id);
        uint64_t n = be32(head);
        pos += 4;
        if (n > size - pos)
            return fail(c, HBOX_CORRUPT, "item %u's coded data is cut short (a NAL unit of %llu bytes, %llu left)",
                        it->id, (unsigned long long)n, (unsigned long long)(size - pos));
        uint8_t nal[512];
        size_t take = n < sizeof nal ? (size_t)n : sizeof nal;
        if (take >= 3 && item_read(c, it, pos, nal, take) == 0) {
            int type = (nal[0] >> 1) & 0x3f;
            if (type == 33 && (rc = note_sps(c, it, nal, take))) return rc;
            if (type < 32 && (nal[2] & 0x80)) pictures++; /* a VCL unit with first_slice_segment_in_pic_flag */
        }
        pos += n;
    }
    if (it->coded_w == 0 || it->coded_h == 0)
        return fail(c, HBOX_CORRUPT, "item %u has no HEVC sequence parameter set", it->id);
    if (pictures == 0) return fail(c, HBOX_CORRUPT, "item %u has no coded picture", it->id);
    /* libheif would decode every picture in turn: one image, one picture. */
    if (pictures > 1) return fail(c, HBOX_UNSUPPORTED, "HEIF image item with %d coded pictures", pictures);
    /* The parameter set, not ispe, is what libde265 allocates for. Some writers (libheif 1.15
     * among them) store a rotated image's ispe already rotated, so compare sides in either order. */
    uint32_t iw, ih;
    if ((rc = item_ispe(c, it, &iw, &ih))) return rc;
    uint32_t clo = it->coded_w < it->coded_h ? it->coded_w : it->coded_h;
    uint32_t chi = it->coded_w < it->coded_h ? it->coded_h : it->coded_w;
    uint32_t dlo = iw < ih ? iw : ih, dhi = iw < ih ? ih : iw;
    if ((uint64_t)clo > (uint64_t)dlo + CODED_PAD || (uint64_t)chi > (uint64_t)dhi + CODED_PAD)
        return fail(c, HBOX_CORRUPT, "item %u's coded picture is %ux%u but the item declares %ux%u", it->id,
                    it->coded_w, it->coded_h, iw, ih);
    it->checked = 1;
    return 0;
}

/* ---- images ---- */

typedef struct {
    uint64_t canvas_px, max_tile_px;
    uint32_t canvas_w, canvas_h;
    int tiles, depth, grid;
} measured;

/* What decoding the image item (hvc1, or a grid of hvc1 tiles) takes. */
static int measure_image(hctx *c, item *it, measured *m) {
    char t[5];
    int rc = 0;
    memset(m, 0, sizeof *m);
    if (it->type == FOURCC('h', 'v', 'c', '1')) {
        if ((rc = check_hevc_item(c, it))) return rc;
        m->canvas_w = it->coded_w;
        m->canvas_h = it->coded_h;
        m->canvas_px = m->max_tile_px = (uint64_t)it->coded_w * it->coded_h;
        m->tiles = 1;
        m->depth = it->depth;
        return 0;
    }
    if (it->type == FOURCC('a', 'v', '0', '1'))
        return fail(c, HBOX_UNSUPPORTED, "AVIF (AV1-coded HEIF) images are not accepted; send JPEG, PNG, HEIC or WebP");
    if (it->type != FOURCC('g', 'r', 'i', 'd'))
        return fail(c, HBOX_UNSUPPORTED,
                    "HEIF images of type '%s' are not supported (only HEVC-coded images and grids of them)",
                    fcc(it->type, t));
    /* ImageGrid: version, flags (bit 0: 32-bit sizes), rows-1, columns-1, output width, height. */
    uint8_t g[12];
    if ((rc = item_data_check(c, it))) return rc;
    uint64_t glen = item_size(c, it);
    int big = glen >= 2 && item_read(c, it, 0, g, 2) == 0 && (g[1] & 1);
    if (glen < (big ? 12u : 8u) || item_read(c, it, 0, g, big ? 12 : 8) || g[0] != 0)
        return fail(c, HBOX_CORRUPT, "item %u's grid description is cut short or of an unknown version", it->id);
    int rows = g[2] + 1, cols = g[3] + 1;
    m->canvas_w = big ? be32(g + 4) : be16(g + 4);
    m->canvas_h = big ? be32(g + 8) : be16(g + 6);
    m->canvas_px = (uint64_t)m->canvas_w * m->canvas_h;
    m->grid = 1;
    m->tiles = rows * cols;
    if (m->canvas_px == 0)
        return fail(c, HBOX_CORRUPT, "item %u is a grid of size %ux%u", it->id, m->canvas_w, m->canvas_h);
    if (m->tiles > MAX_TILES)
        return fail(c, HBOX_UNSUPPORTED, "HEIF grid of %d tiles (more than %d)", m->tiles, MAX_TILES);
    const ref *r = find_ref(c, FOURCC('d', 'i', 'm', 'g'), it->id);
    if (!r || r->n_to < m->tiles)
        return fail(c, HBOX_CORRUPT, "grid item %u has %d tiles but references %d images", it->id, m->tiles,
                    r ? r->n_to : 0);
    uint64_t sum = 0;
    m->depth = 8;
    for (int i = 0; i < m->tiles; i++) {
        item *tile = find_item(c, ref_to(r, i));
        if (!tile) return fail(c, HBOX_CORRUPT, "grid item %u refers to a missing item %u", it->id, ref_to(r, i));
        if (tile->type != FOURCC('h', 'v', 'c', '1'))
            return fail(c, HBOX_UNSUPPORTED, "HEIF grid tiles of type '%s' are not supported", fcc(tile->type, t));
        if (item_transformed(c, tile, &rc) || rc)
            return rc ? rc
                      : fail(c, HBOX_UNSUPPORTED,
                             "HEIF grid tiles that are rotated, mirrored or cropped are not supported");
        if ((rc = check_hevc_item(c, tile))) return rc;
        uint64_t px = (uint64_t)tile->coded_w * tile->coded_h;
        sum += px;
        if (px > m->max_tile_px) m->max_tile_px = px;
        if (tile->depth > m->depth) m->depth = tile->depth;
    }
    /* Tiles cover the output and overhang it by less than a tile: what is decoded is bounded by
     * the output size, not by how often one tile is referenced. */
    if (sum > 2 * m->canvas_px + m->max_tile_px)
        return fail(c, HBOX_CORRUPT, "grid item %u's %d tiles hold %llu pixels for an output of %ux%u", it->id,
                    m->tiles, (unsigned long long)sum, m->canvas_w, m->canvas_h);
    return 0;
}

/* The first item that is an alpha plane of `primary` (an auxl reference with an alpha auxC), or NULL. */
static item *find_alpha(hctx *c, uint32_t primary, int *rc) {
    static const char *urns[] = {"urn:mpeg:hevc:2015:auxid:1", "urn:mpeg:mpegB:cicp:systems:auxiliary:alpha"};
    for (int i = 0; i < c->n_refs; i++) {
        const ref *r = &c->refs[i];
        if (r->type != FOURCC('a', 'u', 'x', 'l')) continue;
        int to_primary = 0;
        for (int j = 0; j < r->n_to; j++) to_primary |= ref_to(r, j) == primary;
        item *a = to_primary ? find_item(c, r->from) : NULL;
        if (!a) continue;
        const prop *aux = item_prop(c, a, FOURCC('a', 'u', 'x', 'C'), rc);
        if (*rc) return NULL;
        if (!aux || aux->len < 5) continue;
        for (size_t u = 0; u < 2; u++) { /* the whole string: "...auxid:1" is not "...auxid:10" */
            size_t ulen = strlen(urns[u]);
            if (aux->len - 4 >= ulen && memcmp(aux->body + 4, urns[u], ulen) == 0 &&
                (aux->len - 4 == ulen || aux->body[4 + ulen] == 0))
                return a;
        }
    }
    return NULL;
}

static int read_transforms(hctx *c, const item *it, hbox_info *out) {
    for (int i = 0; it->assoc && i < it->n_assoc; i++) {
        const prop *p;
        int rc = item_prop_at(c, it, i, &p);
        if (rc) return rc;
        if (!p) continue;
        hbox_transform x = {0};
        if (p->type == FOURCC('i', 'r', 'o', 't') && p->len >= 1) {
            x.kind = HBOX_IROT;
            x.value = p->body[0] & 3;
        } else if (p->type == FOURCC('i', 'm', 'i', 'r') && p->len >= 1) {
            x.kind = HBOX_IMIR;
            x.value = p->body[0] & 1; /* 1: a horizontal mirror (left-right), as Apple and libheif read it */
        } else if (p->type == FOURCC('c', 'l', 'a', 'p') && p->len >= 32) {
            x.kind = HBOX_CLAP;
            for (int f = 0; f < 8; f++) x.clap[f] = (int32_t)be32(p->body + 4 * f);
        } else {
            continue;
        }
        if (out->n_transforms == HBOX_MAX_TRANSFORMS)
            return fail(c, HBOX_UNSUPPORTED, "HEIF image with more than %d transformations", HBOX_MAX_TRANSFORMS);
        out->transforms[out->n_transforms++] = x;
    }
    return 0;
}

/* Reads meta's children in the order the lookups need (items before their locations and properties). */
static int read_meta(hctx *c, const uint8_t *b, size_t n, uint32_t *primary) {
    if (n < 4) return fail(c, HBOX_CORRUPT, "the meta box is cut short");
    size_t pos = (size_t)(b - c->d) + 4, end = (size_t)(b - c->d) + n;
    const uint8_t *found[7] = {0};
    size_t found_len[7] = {0};
    static const uint32_t want[7] = {FOURCC('h', 'd', 'l', 'r'), FOURCC('p', 'i', 't', 'm'), FOURCC('i', 'i', 'n', 'f'),
                                     FOURCC('i', 'l', 'o', 'c'), FOURCC('i', 'p', 'r', 'p'), FOURCC('i', 'r', 'e', 'f'),
                                     FOURCC('i', 'd', 'a', 't')};
    uint32_t type;
    const uint8_t *body;
    size_t blen;
    int r;
    while ((r = box_next(c, &pos, end, &type, &body, &blen)) == 1)
        for (int i = 0; i < 7; i++)
            if (type == want[i] && !found[i]) found[i] = body, found_len[i] = blen;
    if (r < 0) return r;
    if (!found[0] || found_len[0] < 12 || be32(found[0] + 8) != FOURCC('p', 'i', 'c', 't'))
        return fail(c, HBOX_CORRUPT, "the meta box holds no picture handler");
    if (!found[1] || found_len[1] < 6 || (found[1][0] != 0 && found_len[1] < 8))
        return fail(c, HBOX_CORRUPT, "no primary item (pitm)");
    *primary = found[1][0] == 0 ? be16(found[1] + 4) : be32(found[1] + 4);
    if (!found[2] || !found[3] || !found[4])
        return fail(c, HBOX_CORRUPT, "the meta box lacks its item list, locations or properties");
    c->idat = found[6];
    c->idat_len = found_len[6];
    if ((r = read_iinf(c, found[2], found_len[2])) || (r = read_iloc(c, found[3], found_len[3])) ||
        (r = read_iprp(c, found[4], found_len[4])) || (found[5] && (r = read_iref(c, found[5], found_len[5]))))
        return r;
    return 0;
}

int hbox_read(const uint8_t *data, size_t len, hbox_info *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    hctx c = {.d = data, .len = len, .err = err, .errlen = errlen};
    if (hbox_sniff(data, len) == HBOX_BRAND_NONE) return fail(&c, HBOX_CORRUPT, "no HEIF file type (ftyp) box");
    /* calloc'd, so pages the file does not make us touch cost nothing. */
    c.items = calloc(MAX_ITEMS, sizeof *c.items);
    c.props = calloc(MAX_PROPS, sizeof *c.props);
    c.ext = calloc(MAX_EXTENTS, sizeof *c.ext);
    c.refs = calloc(MAX_REFS, sizeof *c.refs);
    int rc = 0;
    if (!c.items || !c.props || !c.ext || !c.refs) {
        rc = fail(&c, HBOX_CORRUPT, "out of memory");
        goto done;
    }
    /* Every top-level box must be whole: a file cut anywhere fails here or at its item data. */
    size_t pos = 0;
    uint32_t type, primary = 0;
    const uint8_t *body, *meta = NULL;
    size_t blen, meta_len = 0;
    while ((rc = box_next(&c, &pos, len, &type, &body, &blen)) == 1)
        if (type == FOURCC('m', 'e', 't', 'a') && !meta) meta = body, meta_len = blen;
    if (rc < 0) goto done;
    rc = 0;
    if (!meta) {
        /* A cut file, or an image sequence alone (a moov track, which libheif 1.15 does not read). */
        rc = fail(&c, HBOX_CORRUPT, "no meta box (a still image): cut short, or an image sequence without one");
        goto done;
    }
    if ((rc = read_meta(&c, meta, meta_len, &primary))) goto done;
    /* libheif sizes every item from its clap while it parses (rounding width n/d and height n/d):
     * a zero denominator there would be a division by zero in the front, so no clap may have one. */
    for (int i = 0; i < c.n_props; i++)
        if (c.props[i].type == FOURCC('c', 'l', 'a', 'p') &&
            (c.props[i].len < 32 || be32(c.props[i].body + 4) == 0 || be32(c.props[i].body + 12) == 0)) {
            rc = fail(&c, HBOX_CORRUPT, "a clean aperture (clap) with a zero denominator");
            goto done;
        }
    item *p = find_item(&c, primary);
    if (!p) {
        rc = fail(&c, HBOX_CORRUPT, "the primary item %u does not exist", primary);
        goto done;
    }
    measured m, a = {0};
    if ((rc = measure_image(&c, p, &m)) || (rc = item_ispe(&c, p, &out->width, &out->height)) ||
        (rc = read_transforms(&c, p, out)))
        goto done;
    item *alpha = find_alpha(&c, primary, &rc);
    if (rc || (alpha && (rc = measure_image(&c, alpha, &a)))) goto done;
    out->canvas_w = m.canvas_w;
    out->canvas_h = m.canvas_h;
    out->grid = m.grid;
    out->tiles = m.tiles;
    out->max_tile_px = m.max_tile_px;
    out->alpha_px = a.canvas_px;
    out->alpha_tile_px = a.max_tile_px;
    out->alpha_grid = a.grid;
    out->bit_depth = m.depth > a.depth ? m.depth : a.depth;
done:
    free(c.items);
    free(c.props);
    free(c.ext);
    free(c.refs);
    return rc;
}
