// Geometry the viewer derives from a result: robust extents of the cloud and the cameras' frustums
// from the result's metadata. Plain arrays in and out (three.js only for its matrix maths), so the
// viewer (viewer.js) stays about drawing.
import { Matrix3, Matrix4, Vector3, Color } from 'three';

// The server's frustum depth: 3 % of the cloud's extent (worker/fusion.c, CAMERA_SIZE).
const CAMERA_SIZE = 0.03;
// Above this many points, percentiles come from an even sample: sorting a million values per axis
// would stall the page for no visible difference.
const MAX_SAMPLES = 200000;

// Percentiles (0..100) of each axis of a position attribute (three.js BufferAttribute), with
// numpy's linear interpolation, the rule the server uses; returns [axis][percent].
export function axisPercentiles(position, percents) {
  const n = position.count;
  const step = Math.max(1, Math.ceil(n / MAX_SAMPLES));
  const m = Math.ceil(n / step);
  return [0, 1, 2].map((axis) => {
    const values = new Float64Array(m);
    for (let i = 0, k = 0; i < n; i += step, k++) values[k] = position.getComponent(i, axis);
    values.sort();
    return percents.map((p) => {
      if (!m) return 0;
      const rank = (p / 100) * (m - 1), lo = Math.floor(rank), hi = Math.min(m - 1, lo + 1);
      return values[lo] + (values[hi] - values[lo]) * (rank - lo);
    });
  });
}

// The server's frustum size for a cloud: CAMERA_SIZE times ||P95 - P5|| over the three axes
// (that extent taken as 1 when it is undefined, zero or not finite).
export function frustumDepth(position) {
  if (!position || position.count < 2) return CAMERA_SIZE;
  const q = axisPercentiles(position, [5, 95]);
  const diag = Math.hypot(...q.map(([lo, hi]) => hi - lo));
  return CAMERA_SIZE * (Number.isFinite(diag) && diag > 0 ? diag : 1);
}

// Line segments (8 per camera: apex to each image corner, then the image rectangle) for every view
// in the metadata, in the GLB's frame: world-to-camera extrinsics inverted, then hf_alignment, the
// transform the server applied to the points. `depth` is the distance of the image rectangle from
// the apex. Returns {positions, colors} (Float32Array, xyz / rgb per vertex), or null when the
// metadata has no cameras.
export function frustumSegments(metadata, depth) {
  const { extrinsics, intrinsics, processed_size: size, hf_alignment: alignment } = metadata;
  if (!Array.isArray(extrinsics) || !Array.isArray(intrinsics) || !Array.isArray(size)
      || !extrinsics.length || intrinsics.length !== extrinsics.length) return null;
  const [height, width] = size;
  const align = alignment ? new Matrix4().set(...alignment.flat()) : new Matrix4();
  const n = extrinsics.length;
  const positions = new Float32Array(n * 16 * 3), colors = new Float32Array(n * 16 * 3);
  const color = new Color();
  const apex = new Vector3(), corners = [0, 1, 2, 3].map(() => new Vector3());
  const pixels = [[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]];
  for (let i = 0; i < n; i++) {
    const [r0, r1, r2] = extrinsics[i];
    const worldToCamera = new Matrix4().set(...r0, ...r1, ...r2, 0, 0, 0, 1);
    const cameraToGlb = align.clone().multiply(worldToCamera.invert());
    const kInverse = new Matrix3().set(...intrinsics[i].flat()).invert();
    apex.set(0, 0, 0).applyMatrix4(cameraToGlb);
    pixels.forEach(([u, v], k) => {
      const ray = new Vector3(u, v, 1).applyMatrix3(kInverse);
      const z = ray.z === 0 ? 1 : ray.z; // as the server: a ray parallel to the image plane keeps z = 1
      corners[k].copy(ray).multiplyScalar(depth / z).applyMatrix4(cameraToGlb);
    });
    const ends = [apex, corners[0], apex, corners[1], apex, corners[2], apex, corners[3],
      corners[0], corners[1], corners[1], corners[2], corners[2], corners[3], corners[3], corners[0]];
    // The server's hue per camera, HSV (h, 0.85, 0.95) written as HSL.
    color.setHSL((i + 0.5) / n, 0.89, 0.546);
    ends.forEach((p, k) => {
      p.toArray(positions, (i * 16 + k) * 3);
      color.toArray(colors, (i * 16 + k) * 3);
    });
  }
  return { positions, colors };
}
