// DualDPT head, main branch. See dpt_head.hpp.
#include "worker/da3/dpt_head.hpp"

#include <algorithm>
#include <cmath>
#include <string>

namespace da3 {

namespace {

// Views decoded together: bounds the full-resolution activations (~100 MB per 504x378 view).
constexpr int64_t kViewsPerChunk = 4;
// Width of the hidden layer of the last convs (DualDPT's head_features_2).
constexpr int64_t kOutputHidden = 32;
const std::string kPrefix = "model.head";

// (M, C/2) sin/cos embedding of positions `pos` (M) with frequencies 1/100^(k/(C/4)).
at::Tensor sincos(const at::Tensor& pos, int64_t channels_half) {
    const int64_t quarter = channels_half / 2;
    at::Tensor omega = at::arange(quarter, pos.options()) / (static_cast<double>(channels_half) / 2.0);
    omega = at::reciprocal(at::pow(100.0, omega));
    at::Tensor angles = pos.reshape({-1, 1}) * omega.unsqueeze(0);
    return at::cat({angles.sin(), angles.cos()}, 1);
}

}  // namespace

at::Tensor uv_position_embedding(int64_t channels, int64_t h, int64_t w, double aspect,
                                 const at::TensorOptions& options) {
    // A grid spanning +-(aspect, 1)/diagonal, sampled at pixel centres of an h x w map.
    const double diag = std::sqrt(aspect * aspect + 1.0);
    const double span_x = aspect / diag, span_y = 1.0 / diag;
    const double x_end = span_x * static_cast<double>(w - 1) / static_cast<double>(w);
    const double y_end = span_y * static_cast<double>(h - 1) / static_cast<double>(h);
    const at::TensorOptions f32 = options.dtype(at::kFloat);
    at::Tensor xs = at::linspace(-x_end, x_end, w, f32);
    at::Tensor ys = at::linspace(-y_end, y_end, h, f32);
    at::Tensor u = xs.view({1, w}).expand({h, w});
    at::Tensor v = ys.view({h, 1}).expand({h, w});
    at::Tensor emb = at::cat({sincos(u, channels / 2), sincos(v, channels / 2)}, 1);  // (h*w, C)
    return (emb * 0.1).view({h, w, channels}).permute({2, 0, 1});
}

void DualDptHead::ResidualConvUnit::load(WeightSource& ws, const std::string& prefix, int64_t features) {
    conv1.load(ws, prefix + ".conv1", features, features, 3, 1, 1);
    conv2.load(ws, prefix + ".conv2", features, features, 3, 1, 1);
}

void DualDptHead::ResidualConvUnit::to(const at::Device& device) {
    conv1.to(device, at::kFloat, true);
    conv2.to(device, at::kFloat, true);
}

at::Tensor DualDptHead::ResidualConvUnit::operator()(const at::Tensor& x) const {
    at::Tensor y = conv1(at::relu(x));
    y = conv2(at::relu_(y));
    return y.add_(x);
}

void DualDptHead::FusionBlock::load(WeightSource& ws, const std::string& prefix, int64_t features,
                                    bool with_skip) {
    has_skip = with_skip;
    if (with_skip) skip_unit.load(ws, prefix + ".resConfUnit1", features);
    unit.load(ws, prefix + ".resConfUnit2", features);
    out_conv.load(ws, prefix + ".out_conv", features, features, 1, 1, 0);
}

void DualDptHead::FusionBlock::to(const at::Device& device) {
    if (has_skip) skip_unit.to(device);
    unit.to(device);
    out_conv.to(device, at::kFloat, true);
}

at::Tensor DualDptHead::FusionBlock::operator()(const at::Tensor& x, const at::Tensor& skip, int64_t h,
                                                int64_t w) const {
    at::Tensor y = x;
    if (has_skip && skip.defined()) y = x + skip_unit(skip);
    y = unit(y);
    // DPT resizes, then applies the 1x1 conv. Both are linear per pixel and bilinear weights sum
    // to one, so applying the conv first is the same map on 4x fewer pixels.
    y = out_conv(y);
    return at::upsample_bilinear2d(y, {h, w}, true);
}

void DualDptHead::load(WeightSource& ws, const HeadConfig& cfg) {
    cfg_ = cfg;
    const int64_t f = cfg.features, half = f / 2;
    const auto& oc = cfg.out_channels;
    norm_.load(ws, kPrefix + ".norm", cfg.dim_in, 1e-5);
    for (size_t l = 0; l < 4; l++) {
        const std::string p = kPrefix + ".projects." + std::to_string(l);
        projects_[l].weight = ws.take(p + ".weight", {oc[l], cfg.dim_in, 1, 1}).view({oc[l], cfg.dim_in});
        projects_[l].bias = ws.take(p + ".bias", {oc[l]});
    }
    upsample4_.load(ws, kPrefix + ".resize_layers.0", oc[0], oc[0], 4);
    upsample2_.load(ws, kPrefix + ".resize_layers.1", oc[1], oc[1], 2);
    downsample2_.load(ws, kPrefix + ".resize_layers.3", oc[3], oc[3], 3, 2, 1);
    for (size_t l = 0; l < 4; l++)
        layer_rn_[l].load(ws, kPrefix + ".scratch.layer" + std::to_string(l + 1) + "_rn", oc[l], f, 3, 1, 1,
                          false);
    for (size_t l = 0; l < 4; l++)  // refinenet4 (coarsest) has no lateral input
        refine_[l].load(ws, kPrefix + ".scratch.refinenet" + std::to_string(l + 1), f, l != 3);
    output_conv1_.load(ws, kPrefix + ".scratch.output_conv1", f, half, 3, 1, 1);
    output_conv2a_.load(ws, kPrefix + ".scratch.output_conv2.0", half, kOutputHidden, 3, 1, 1);
    output_conv2b_.load(ws, kPrefix + ".scratch.output_conv2.2", kOutputHidden, cfg.output_dim, 1, 1, 0);
    expect_aux_branch(ws);
}

void DualDptHead::expect_aux_branch(WeightSource& ws) const {
    const int64_t f = cfg_.features, half = f / 2;
    const std::string s = kPrefix + ".scratch.";
    for (int l = 1; l <= 4; l++) {
        const std::string p = s + "refinenet" + std::to_string(l) + "_aux";
        for (const char* unit : {".resConfUnit1", ".resConfUnit2"}) {
            if (l == 4 && std::string(unit) == ".resConfUnit1") continue;
            expect_conv(ws, p + unit + ".conv1", f, f, 3);
            expect_conv(ws, p + unit + ".conv2", f, f, 3);
        }
        expect_conv(ws, p + ".out_conv", f, f, 1);
    }
    for (int l = 0; l < 4; l++) {
        const std::string p1 = s + "output_conv1_aux." + std::to_string(l) + ".";
        const int64_t chans[6] = {f, half, f, half, f, half};  // in/out of its 5 convs
        for (int c = 0; c < 5; c++) expect_conv(ws, p1 + std::to_string(c), chans[c], chans[c + 1], 3);
        const std::string p2 = s + "output_conv2_aux." + std::to_string(l) + ".";
        expect_conv(ws, p2 + "0", half, kOutputHidden, 3);
        ws.expect_unused(p2 + "2.weight", {kOutputHidden});  // LayerNorm
        ws.expect_unused(p2 + "2.bias", {kOutputHidden});
        expect_conv(ws, p2 + "5", kOutputHidden, 7, 1);
    }
}

void DualDptHead::to(const at::Device& device) {
    // The whole head runs on channels-last (NHWC) maps: the token rows already are NHWC, and
    // oneDNN's convolutions and the bilinear resize are 2-5x faster on them than on NCHW.
    norm_.to(device);
    for (auto& p : projects_) p.to(device);
    upsample4_.to(device, true);
    upsample2_.to(device, true);
    downsample2_.to(device, at::kFloat, true);
    for (auto& c : layer_rn_) c.to(device, at::kFloat, true);
    for (auto& r : refine_) r.to(device);
    output_conv1_.to(device, at::kFloat, true);
    output_conv2a_.to(device, at::kFloat, true);
    output_conv2b_.to(device, at::kFloat, true);
}

at::Tensor DualDptHead::project_level(int level, const at::Tensor& tokens, int64_t ph, int64_t pw,
                                      double aspect) const {
    const int64_t views = tokens.size(0), oc = cfg_.out_channels[static_cast<size_t>(level)];
    // LayerNorm and the 1x1 projection on token rows; (S, P, oc) rows are an NHWC map already.
    at::Tensor x = projects_[static_cast<size_t>(level)](norm_(tokens));
    x = x.view({views, ph, pw, oc}).permute({0, 3, 1, 2});  // (S, oc, ph, pw), channels-last
    x.add_(uv_position_embedding(oc, ph, pw, aspect, x.options()));
    switch (level) {
        case 0: return upsample4_(x);
        case 1: return upsample2_(x);
        case 2: return x;
        default: return downsample2_(x);
    }
}

std::pair<at::Tensor, at::Tensor> DualDptHead::forward(const std::array<at::Tensor, 4>& tokens, int64_t ph,
                                                       int64_t pw, int64_t height, int64_t width) const {
    const int64_t views = tokens[0].size(0);
    const double aspect = static_cast<double>(width) / static_cast<double>(height);
    const at::TensorOptions opts = tokens[0].options().dtype(at::kFloat);
    at::Tensor depth = at::empty({views, height, width}, opts);
    at::Tensor conf = at::empty({views, height, width}, opts);
    const at::Tensor final_pos = uv_position_embedding(cfg_.features / 2, height, width, aspect, opts);

    for (int64_t s0 = 0; s0 < views; s0 += kViewsPerChunk) {
        const int64_t n = std::min(kViewsPerChunk, views - s0);
        std::array<at::Tensor, 4> rn;
        for (int l = 0; l < 4; l++) {
            at::Tensor level = project_level(l, tokens[static_cast<size_t>(l)].narrow(0, s0, n), ph, pw, aspect);
            rn[static_cast<size_t>(l)] = layer_rn_[static_cast<size_t>(l)](level);
        }
        at::Tensor y = refine_[3](rn[3], at::Tensor(), rn[2].size(2), rn[2].size(3));
        y = refine_[2](y, rn[2], rn[1].size(2), rn[1].size(3));
        y = refine_[1](y, rn[1], rn[0].size(2), rn[0].size(3));
        y = refine_[0](y, rn[0], 2 * rn[0].size(2), 2 * rn[0].size(3));
        y = output_conv1_(y);
        y = at::upsample_bilinear2d(y, {height, width}, true);
        y.add_(final_pos);
        y = output_conv2b_(output_conv2a_(y).relu_());  // (n, 2, H, W)
        depth.narrow(0, s0, n).copy_(at::exp(y.select(1, 0)));
        conf.narrow(0, s0, n).copy_(at::exp(y.select(1, 1)).add_(1.0));
    }
    return {depth, conf};
}

}  // namespace da3
