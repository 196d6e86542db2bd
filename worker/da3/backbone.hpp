// DA3's DINOv2 backbone: patch embedding + interpolated position embedding, then blocks that are
// per-view ("local") until alt_start and alternate local / cross-view ("global") after it, with
// camera tokens in the cls slot from alt_start on. Returns the four out_layers features.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <vector>

#include "worker/da3/config.hpp"
#include "worker/da3/layers.hpp"
#include "worker/da3/transformer.hpp"
#include "worker/da3/weights.hpp"

namespace da3 {

enum class RefView { SaddleBalanced, First, Middle };

struct BackboneOutput {
    std::array<at::Tensor, 4> tokens;  // (S, patches, dim_in): [last local x, norm(x)] per out layer
    std::array<at::Tensor, 4> cam;     // (S, dim_in): the cls/camera slot, not normed
    int reference_view = 0;            // view chosen as reference (0 when no selection ran)
};

// Index of the reference view among S views from their cls tokens (S, C), per `strategy`.
int select_reference_view(const at::Tensor& cls_tokens, RefView strategy);

class Backbone {
public:
    void load(WeightSource& ws, const NetConfig& cfg);
    void to(const at::Device& device, at::ScalarType matmul_dtype);

    // images: (S, 3, H, W) normalised, H and W multiples of the patch size, on the model's device.
    // cam_tokens: (S, embed) from the camera encoder, or undefined for the learned tokens (and
    // then, for S >= 3, reference-view selection). Outputs are in the input view order.
    BackboneOutput forward(const at::Tensor& images, const at::Tensor& cam_tokens, RefView strategy) const;

private:
    at::Tensor embed(const at::Tensor& images) const;                 // (S, 1+P, C)
    at::Tensor position_embedding(int64_t ph, int64_t pw) const;      // (1+P, C)
    at::Tensor learned_camera_tokens(int64_t views) const;            // (S, C)
    std::vector<bool> local_outputs_needed() const;

    NetConfig cfg_;
    Conv2d patch_embed_;
    at::Tensor cls_token_, camera_token_, pos_embed_;
    std::vector<TransformerBlock> blocks_;
    LayerNorm norm_;
};

}  // namespace da3
