/* Internal to common/image_heif.c: a bounded reader of a HEIF file's box structure (ISO/IEC
 * 14496-12 boxes, ISO/IEC 23008-12 items). It learns, before any pixel is decoded, what libheif
 * would decode for the primary image: the items, their declared sizes, the sizes their HEVC
 * parameter sets really ask the decoder for, the grid layout, the alpha plane and the geometric
 * transformations, so that the caller can refuse what is too large or inconsistent first. */
#ifndef DA3_HEIF_BOXES_H
#define DA3_HEIF_BOXES_H

#include <stddef.h>
#include <stdint.h>

/* What the ftyp box's brands say the file is. */
typedef enum { HBOX_BRAND_NONE = 0, HBOX_BRAND_HEIF, HBOX_BRAND_AVIF } hbox_brand;

#define HBOX_CORRUPT (-1)
#define HBOX_UNSUPPORTED (-2)

/* One transformative property of the primary item, in the order libheif applies them. */
typedef enum { HBOX_IROT, HBOX_IMIR, HBOX_CLAP } hbox_transform_kind;

typedef struct {
    hbox_transform_kind kind;
    int value;       /* irot: anticlockwise quarter turns (0-3); imir: 1 left-right, 0 top-bottom */
    int32_t clap[8]; /* clap: width n/d, height n/d, horizontal offset n/d, vertical offset n/d */
} hbox_transform;

#define HBOX_MAX_TRANSFORMS 8

/* The primary image as libheif will decode it. */
typedef struct {
    uint32_t width, height;      /* the primary item's ispe (declared size) */
    uint32_t canvas_w, canvas_h; /* the decoded size: a grid's output size, or the coded picture's */
    int grid;                    /* 1 when the primary is a grid of tiles */
    int tiles;                   /* coded pictures decoded for the colour image (1, or the grid's) */
    uint64_t max_tile_px;        /* the largest coded picture among them (its parameter set's size) */
    uint64_t alpha_px;           /* the alpha plane's canvas, 0 without alpha */
    uint64_t alpha_tile_px;      /* the largest coded picture of the alpha image */
    int alpha_grid;              /* 1 when the alpha image is a grid */
    int bit_depth;               /* the deepest sample of any picture decoded (8 ... 16) */
    int n_transforms;
    hbox_transform transforms[HBOX_MAX_TRANSFORMS];
} hbox_info;

/* The brand class of the file: HEIF (an HEVC brand, or only the generic mif1/msf1), AVIF, or
 * NONE when the first box is not an ftyp naming one of them. */
hbox_brand hbox_sniff(const uint8_t *data, size_t len);

/* Reads the structure and checks that it is complete and self-consistent: every box inside its
 * parent, every item's data inside the file, every parameter set no larger than its item's
 * declared size, one coded picture per item, a grid whose tiles cover its output. Returns 0;
 * HBOX_CORRUPT with what is wrong in err ("item 1's data ... lies beyond the end of the file");
 * or HBOX_UNSUPPORTED with a whole sentence in err (an AV1-coded primary image, an overlay...).
 * Reads only the bytes given; allocates well under 1 MB (lazily touched), whatever the file says. */
int hbox_read(const uint8_t *data, size_t len, hbox_info *out, char *err, size_t errlen);

#endif
