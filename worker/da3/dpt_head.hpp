// DualDPT head, main (depth) branch: per-level token norm + projection + UV position embedding +
// resampling to strides x4, x2, x1, /2 of the patch grid; RefineNet fusion from coarse to fine;
// conv, bilinear upsampling to the input size, position embedding, conv-ReLU-conv -> 2 channels:
// depth = exp(c0), confidence = exp(c1) + 1. The auxiliary ray branch's outputs are discarded by
// DA3's camera-head path, so it is not computed; its weights are still checked when loading.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <utility>

#include "worker/da3/config.hpp"
#include "worker/da3/layers.hpp"
#include "worker/da3/weights.hpp"

namespace da3 {

class DualDptHead {
public:
    void load(WeightSource& ws, const HeadConfig& cfg);
    void to(const at::Device& device);

    // tokens: 4 x (S, ph*pw, dim_in) backbone features; H, W the input size.
    // Returns (depth, confidence), each (S, H, W) float32.
    std::pair<at::Tensor, at::Tensor> forward(const std::array<at::Tensor, 4>& tokens, int64_t ph,
                                              int64_t pw, int64_t height, int64_t width) const;

private:
    struct ResidualConvUnit {
        Conv2d conv1, conv2;
        void load(WeightSource& ws, const std::string& prefix, int64_t features);
        void to(const at::Device& device);
        at::Tensor operator()(const at::Tensor& x) const;  // conv2(relu(conv1(relu(x)))) + x
    };
    struct FusionBlock {
        bool has_skip = true;
        ResidualConvUnit skip_unit, unit;
        Conv2d out_conv;
        void load(WeightSource& ws, const std::string& prefix, int64_t features, bool with_skip);
        void to(const at::Device& device);
        // (x + unit1(skip)) -> unit2 -> bilinear resize to (h, w) -> 1x1 conv
        at::Tensor operator()(const at::Tensor& x, const at::Tensor& skip, int64_t h, int64_t w) const;
    };

    at::Tensor project_level(int level, const at::Tensor& tokens, int64_t ph, int64_t pw,
                             double aspect) const;
    void expect_aux_branch(WeightSource& ws) const;

    HeadConfig cfg_;
    LayerNorm norm_;
    std::array<Linear, 4> projects_;  // 1x1 convs applied as matrices on the token rows
    ConvTranspose2d upsample4_, upsample2_;
    Conv2d downsample2_;
    std::array<Conv2d, 4> layer_rn_;
    std::array<FusionBlock, 4> refine_;
    Conv2d output_conv1_, output_conv2a_, output_conv2b_;
};

// DualDPT's UV sin/cos position embedding for a (channels, h, w) map of an image with aspect
// ratio width/height, already multiplied by 0.1.
at::Tensor uv_position_embedding(int64_t channels, int64_t h, int64_t w, double aspect,
                                 const at::TensorOptions& options);

}  // namespace da3
