// The pre-norm ViT block shared by the DINOv2 backbone and the camera encoder's trunk:
// x += LS1 * Attn(LN1(x)); x += LS2 * FFN(LN2(x)), with optional QK-norm and 2D RoPE.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "worker/da3/config.hpp"
#include "worker/da3/layers.hpp"

namespace da3 {

// Per-token rotation tables for 2D RoPE over one attention group of L tokens. The head dim is
// split in halves (first rotated by the row position, second by the column); each half rotates
// its two quarters against each other. sin_signed carries the sign of that rotation.
struct RopeTable {
    at::Tensor cos;         // (L, head_dim) float32
    at::Tensor sin_signed;  // (L, head_dim) float32
};

// positions: (L, 2) float32 (row, col) per token; frequency: RoPE base (DA3: 100).
RopeTable make_rope_table(const at::Tensor& positions, int64_t head_dim, double frequency);

// Softmax attention softmax(q k^T / sqrt(hd)) v over G independent groups.
// q, k, v: (G, L, heads, hd), any strides with a contiguous last dim (views into the fused qkv
// output are fine). Returns (G, L, heads*hd) contiguous. On CPU: tasks of (group, head, block of
// queries) across the thread pool, each keeping its score block in cache; on GPU: SDPA
// (libtorch >= 2) or query-chunked matmuls, so memory stays bounded whatever the token count.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

struct BlockSpec {
    int64_t dim = 0, heads = 0, ffn_hidden = 0;
    FfnKind ffn = FfnKind::Mlp;
    bool qk_norm = false;
    double ln_eps = 1e-6;  // DINOv2 blocks use 1e-6; the camera encoder's trunk 1e-5
};

class TransformerBlock {
public:
    // Reads <prefix>.{norm1,attn.qkv,attn.q_norm,attn.k_norm,attn.proj,ls1.gamma,norm2,
    // mlp.fc1|fc2 or mlp.w12|w3,ls2.gamma}; LayerScale is folded into attn.proj and fc2/w3.
    void load(WeightSource& ws, const std::string& prefix, const BlockSpec& spec);
    // Moves to `device`; matrices take `matmul_dtype` (the residual stream stays float32).
    void to(const at::Device& device, at::ScalarType matmul_dtype);
    // x: (G, L, dim) float32 contiguous, G independent attention groups of L tokens; updated in
    // place. rope (L tokens) may be null.
    void forward_(at::Tensor& x, const RopeTable* rope) const;

private:
    at::Tensor attend(const at::Tensor& x2d, int64_t groups, int64_t tokens, const RopeTable* rope) const;
    void feed_forward_(at::Tensor& x2d) const;

    BlockSpec spec_;
    LayerNorm norm1_, norm2_, q_norm_, k_norm_;
    Linear qkv_, proj_;
    Linear fc1_, fc2_;  // Mlp: fc1 -> GELU -> fc2.  SwiGLU: w12 -> silu(a) * b -> w3
};

}  // namespace da3
