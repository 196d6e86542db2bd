/* GLB (binary glTF 2.0) writer for a point cloud and its camera frustums. The size is known
 * before writing so the worker can reserve exactly that much of the shared arena. */
#ifndef DA3_GLB_H
#define DA3_GLB_H

#include <stddef.h>
#include "worker/fusion.h"

/* Exact number of bytes glb_write will produce for this cloud. */
size_t glb_size(const point_cloud *pc);

/* Writes the GLB into dst (capacity cap >= glb_size). Returns bytes written, or 0 if cap is short. */
size_t glb_write(const point_cloud *pc, unsigned char *dst, size_t cap);

#endif
