/* Frustum geometry and colours; see fusion_frustum.h. */
#include "worker/fusion_frustum.h"

#include "worker/fusion_mat.h"

void frustum_lines(const double kinv[9], const double c2w[16], const double align[16], int width,
                   int height, double depth, float out[48]) {
    double to_out[16]; /* camera frame -> aligned world in one matrix */
    fmat4_mul(align, c2w, to_out);

    const double px[4][2] = {{0, 0}, {width - 1, 0}, {width - 1, height - 1}, {0, height - 1}};
    double corner[4][3], centre[3];
    const double origin[3] = {0, 0, 0};
    fmat4_apply(to_out, origin, centre);
    for (int k = 0; k < 4; k++) {
        double ray[3];
        for (int r = 0; r < 3; r++) ray[r] = kinv[3 * r] * px[k][0] + kinv[3 * r + 1] * px[k][1] + kinv[3 * r + 2];
        double z = ray[2] == 0.0 ? 1.0 : ray[2]; /* as the reference: a ray parallel to the plane keeps z=1 */
        double p[3] = {ray[0] / z * depth, ray[1] / z * depth, ray[2] / z * depth};
        fmat4_apply(to_out, p, corner[k]);
    }

    const double *seg[8][2] = {
        {centre, corner[0]},    {centre, corner[1]},    {centre, corner[2]},    {centre, corner[3]},
        {corner[0], corner[1]}, {corner[1], corner[2]}, {corner[2], corner[3]}, {corner[3], corner[0]},
    };
    for (int s = 0; s < 8; s++)
        for (int e = 0; e < 2; e++)
            for (int c = 0; c < 3; c++) out[(2 * s + e) * 3 + c] = (float)seg[s][e][c];
}

void frustum_color(int i, int n, uint8_t rgba[4]) {
    /* The reference's own _hsv_to_rgb, which is colorsys.hsv_to_rgb's formula. */
    double h = (i + 0.5) / (n > 1 ? n : 1), s = 0.85, v = 0.95;
    int sector = (int)(h * 6.0);
    double f = h * 6.0 - sector;
    double p = v * (1.0 - s), q = v * (1.0 - f * s), t = v * (1.0 - (1.0 - f) * s);
    double r, g, b;
    switch (sector % 6) {
    case 0: r = v, g = t, b = p; break;
    case 1: r = q, g = v, b = p; break;
    case 2: r = p, g = v, b = t; break;
    case 3: r = p, g = q, b = v; break;
    case 4: r = t, g = p, b = v; break;
    default: r = v, g = p, b = q; break;
    }
    /* (np.array([r,g,b]) * 255).astype(np.uint8) truncates; the values lie in [0, 242.25]. */
    rgba[0] = (uint8_t)(r * 255.0);
    rgba[1] = (uint8_t)(g * 255.0);
    rgba[2] = (uint8_t)(b * 255.0);
    rgba[3] = 255;
}
