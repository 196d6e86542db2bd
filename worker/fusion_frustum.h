/* Camera frustum wireframes and colours as DA3's export_to_glb draws them. */
#ifndef DA3_FUSION_FRUSTUM_H
#define DA3_FUSION_FRUSTUM_H

#include <stdint.h>

/* Writes the 16 vertices (8 segments: centre->each corner, then the edges 0-1, 1-2, 2-3, 3-0)
 * of a camera's frustum: the image corners (0,0),(W-1,0),(W-1,H-1),(0,H-1) through kinv,
 * normalised to z=1, scaled by depth, taken to the world by c2w and then through align. */
void frustum_lines(const double kinv[9], const double c2w[16], const double align[16], int width,
                   int height, double depth, float out[48]);

/* Camera i of n's colour: HSV((i+0.5)/n, 0.85, 0.95) -> RGB, truncated to uint8 the way numpy's
 * astype(np.uint8) does, alpha 255. */
void frustum_color(int i, int n, uint8_t rgba[4]);

#endif
