// Cameras in DA3: the 9-value pose encoding [T(3), quaternion xyzw(4), fov_h, fov_w] of a
// camera-to-world pose, the decoder that predicts it from the last camera token, and the encoder
// that turns known cameras into camera tokens (the pose-conditioned path).
#pragma once

#include <ATen/ATen.h>

#include <utility>
#include <vector>

#include "worker/da3/config.hpp"
#include "worker/da3/layers.hpp"
#include "worker/da3/transformer.hpp"
#include "worker/da3/weights.hpp"

namespace da3 {

// Pose encoding (S, 9) of an image H x W -> (world-to-camera (S, 3, 4), intrinsics (S, 3, 3)),
// fx = (W/2) / tan(fov_w/2), fy likewise, principal point at the image centre.
std::pair<at::Tensor, at::Tensor> decode_pose_encoding(const at::Tensor& encoding, int64_t height,
                                                       int64_t width);

// Known cameras -> pose encoding (S, 9) of their camera-to-world poses.
// w2c: (S, 4, 4) world-to-camera; intrinsics: (S, 3, 3) in pixels of the H x W image.
at::Tensor encode_known_cameras(const at::Tensor& w2c, const at::Tensor& intrinsics, int64_t height,
                                int64_t width);

class CameraDecoder {
public:
    void load(WeightSource& ws, int64_t dim_in);
    void to(const at::Device& device);
    // Camera tokens (S, dim_in) -> pose encoding (S, 9).
    at::Tensor operator()(const at::Tensor& cam_tokens) const;

private:
    Linear hidden1_, hidden2_, fc_t_, fc_qvec_, fc_fov_;
};

class CameraEncoder {
public:
    void load(WeightSource& ws, const NetConfig& cfg);
    void to(const at::Device& device);
    // Pose encoding (S, 9) -> camera tokens (S, embed_dim). The trunk attends across views.
    at::Tensor operator()(const at::Tensor& pose_encoding) const;

private:
    Linear fc1_, fc2_;
    LayerNorm token_norm_, trunk_norm_;
    std::vector<TransformerBlock> trunk_;
};

}  // namespace da3
