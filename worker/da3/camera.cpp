// Pose encodings, camera decoder and camera encoder. See camera.hpp.
#include "worker/da3/camera.hpp"

#include <algorithm>
#include <cmath>
#include <string>

namespace da3 {

namespace {

constexpr int kEncoderTrunkDepth = 4;

// Rotation matrix (row-major 3x3, float) -> unit quaternion x, y, z, w with w >= 0. Picks the
// best-conditioned of the four standard candidates (largest |component|), as PyTorch3D does.
void rotation_to_quaternion(const float* m, float out[4]) {
    auto sqrt_pos = [](float v) { return v > 0.f ? std::sqrt(v) : 0.f; };
    const float m00 = m[0], m01 = m[1], m02 = m[2], m10 = m[3], m11 = m[4], m12 = m[5];
    const float m20 = m[6], m21 = m[7], m22 = m[8];
    const float mag[4] = {sqrt_pos(1.f + m00 + m11 + m22), sqrt_pos(1.f + m00 - m11 - m22),
                          sqrt_pos(1.f - m00 + m11 - m22), sqrt_pos(1.f - m00 - m11 + m22)};
    // Candidates in (w, x, y, z) order, each scaled by 2 * its dominant component.
    const float cand[4][4] = {
        {mag[0] * mag[0], m21 - m12, m02 - m20, m10 - m01},
        {m21 - m12, mag[1] * mag[1], m10 + m01, m02 + m20},
        {m02 - m20, m10 + m01, mag[2] * mag[2], m12 + m21},
        {m10 - m01, m20 + m02, m21 + m12, mag[3] * mag[3]},
    };
    int best = 0;
    for (int i = 1; i < 4; i++)
        if (mag[i] > mag[best]) best = i;
    const float denom = 2.f * std::max(mag[best], 0.1f);
    float w = cand[best][0] / denom, x = cand[best][1] / denom, y = cand[best][2] / denom,
          z = cand[best][3] / denom;
    const float sign = w < 0.f ? -1.f : 1.f;
    out[0] = sign * x;
    out[1] = sign * y;
    out[2] = sign * z;
    out[3] = sign * w;
}

// Quaternions x, y, z, w (S, 4), not necessarily unit -> rotation matrices (S, 3, 3).
at::Tensor quaternion_to_rotation(const at::Tensor& q) {
    at::Tensor i = q.select(1, 0), j = q.select(1, 1), k = q.select(1, 2), r = q.select(1, 3);
    at::Tensor two_s = 2.0 / (q * q).sum(1);
    auto one_minus = [&](const at::Tensor& a, const at::Tensor& b) { return 1.0 - two_s * (a * a + b * b); };
    return at::stack({one_minus(j, k), two_s * (i * j - k * r), two_s * (i * k + j * r),
                      two_s * (i * j + k * r), one_minus(i, k), two_s * (j * k - i * r),
                      two_s * (i * k - j * r), two_s * (j * k + i * r), one_minus(i, j)},
                     1)
        .view({q.size(0), 3, 3});
}

// [R | t] (S, 3 or 4, 4) -> the rigid inverse [R^T | -R^T t] (S, 3, 4).
at::Tensor rigid_inverse(const at::Tensor& pose) {
    at::Tensor rt = pose.narrow(1, 0, 3).narrow(2, 0, 3).transpose(1, 2);
    at::Tensor t = pose.narrow(1, 0, 3).narrow(2, 3, 1);
    return at::cat({rt, -at::matmul(rt, t)}, 2);
}

}  // namespace

std::pair<at::Tensor, at::Tensor> decode_pose_encoding(const at::Tensor& encoding, int64_t height,
                                                       int64_t width) {
    const int64_t views = encoding.size(0);
    at::Tensor rotation = quaternion_to_rotation(encoding.narrow(1, 3, 4));
    at::Tensor c2w = at::cat({rotation, encoding.narrow(1, 0, 3).unsqueeze(2)}, 2);  // (S, 3, 4)
    at::Tensor w2c = rigid_inverse(c2w);
    const double half_h = static_cast<double>(height) / 2.0, half_w = static_cast<double>(width) / 2.0;
    at::Tensor fy = half_h / at::clamp_min(at::tan(encoding.select(1, 7) / 2.0), 1e-6);
    at::Tensor fx = half_w / at::clamp_min(at::tan(encoding.select(1, 8) / 2.0), 1e-6);
    at::Tensor k = at::zeros({views, 3, 3}, encoding.options());
    k.select(1, 0).select(1, 0).copy_(fx);
    k.select(1, 1).select(1, 1).copy_(fy);
    k.select(1, 0).select(1, 2).fill_(half_w);
    k.select(1, 1).select(1, 2).fill_(half_h);
    k.select(1, 2).select(1, 2).fill_(1.0);
    return {w2c, k};
}

at::Tensor encode_known_cameras(const at::Tensor& w2c, const at::Tensor& intrinsics, int64_t height,
                                int64_t width) {
    const int64_t views = w2c.size(0);
    at::Tensor c2w = rigid_inverse(w2c.to(at::kCPU, at::kFloat)).contiguous();
    at::Tensor k = intrinsics.to(at::kCPU, at::kFloat).contiguous();
    at::Tensor enc = at::empty({views, 9}, at::kFloat);
    auto pose = c2w.accessor<float, 3>();
    auto kk = k.accessor<float, 3>();
    auto e = enc.accessor<float, 2>();
    for (int64_t s = 0; s < views; s++) {
        float rot[9], quat[4];
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 3; c++) rot[r * 3 + c] = pose[s][r][c];
        rotation_to_quaternion(rot, quat);
        for (int r = 0; r < 3; r++) e[s][r] = pose[s][r][3];
        for (int q = 0; q < 4; q++) e[s][3 + q] = quat[q];
        e[s][7] = 2.f * std::atan(static_cast<float>(height) / 2.f / kk[s][1][1]);  // fov_h
        e[s][8] = 2.f * std::atan(static_cast<float>(width) / 2.f / kk[s][0][0]);   // fov_w
    }
    return enc.to(w2c.device());
}

void CameraDecoder::load(WeightSource& ws, int64_t dim_in) {
    const std::string p = "model.cam_dec";
    hidden1_.load(ws, p + ".backbone.0", dim_in, dim_in);
    hidden2_.load(ws, p + ".backbone.2", dim_in, dim_in);
    fc_t_.load(ws, p + ".fc_t", dim_in, 3);
    fc_qvec_.load(ws, p + ".fc_qvec", dim_in, 4);
    fc_fov_.load(ws, p + ".fc_fov.0", dim_in, 2);
}

void CameraDecoder::to(const at::Device& device) {
    for (Linear* l : {&hidden1_, &hidden2_, &fc_t_, &fc_qvec_, &fc_fov_}) l->to(device);
}

at::Tensor CameraDecoder::operator()(const at::Tensor& cam_tokens) const {
    at::Tensor h = hidden1_(cam_tokens).relu_();
    h = hidden2_(h).relu_();
    return at::cat({fc_t_(h), fc_qvec_(h), fc_fov_(h).relu_()}, 1);
}

void CameraEncoder::load(WeightSource& ws, const NetConfig& cfg) {
    const std::string p = "model.cam_enc";
    const int64_t c = cfg.cam_enc_dim_out;
    fc1_.load(ws, p + ".pose_branch.fc1", 9, c / 2);
    fc2_.load(ws, p + ".pose_branch.fc2", c / 2, c);
    token_norm_.load(ws, p + ".token_norm", c, 1e-5);
    trunk_.resize(kEncoderTrunkDepth);
    BlockSpec spec;
    spec.dim = c;
    spec.heads = cfg.cam_enc_heads;
    spec.ffn = FfnKind::Mlp;
    spec.ffn_hidden = 4 * c;
    spec.qk_norm = false;
    spec.ln_eps = 1e-5;
    for (int i = 0; i < kEncoderTrunkDepth; i++)
        trunk_[static_cast<size_t>(i)].load(ws, p + ".trunk." + std::to_string(i), spec);
    trunk_norm_.load(ws, p + ".trunk_norm", c, 1e-5);
}

void CameraEncoder::to(const at::Device& device) {
    fc1_.to(device);
    fc2_.to(device);
    token_norm_.to(device);
    trunk_norm_.to(device);
    for (auto& b : trunk_) b.to(device, at::kFloat);
}

at::Tensor CameraEncoder::operator()(const at::Tensor& pose_encoding) const {
    at::Tensor h = fc2_(at::gelu(fc1_(pose_encoding)));
    at::Tensor x = token_norm_(h).unsqueeze(0).contiguous();  // (1, S, C): one sequence of views
    for (const auto& block : trunk_) block.forward_(x, nullptr);
    return trunk_norm_(x.squeeze(0));
}

}  // namespace da3
