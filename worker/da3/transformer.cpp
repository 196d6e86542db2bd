// ViT block, attention and 2D RoPE. See transformer.hpp.
#include "worker/da3/transformer.hpp"

#include <torch/version.h>

#include "worker/da3/softmax.hpp"

#include <algorithm>
#include <cmath>

namespace da3 {

namespace {

// Query rows per CPU attention task, measured on 2 cores (6 heads of 64; len 973 = one 504x378
// view, 3892 = four, 15568 = sixteen):
// * float32 (OpenBLAS): each task's two GEMMs repack the head's whole K and V, so long sequences
//   want many rows per task to spread that cost, short ones few so the scores stay in cache:
//   max(128, len / 16). Best were 128-256 rows at 973 and 3892, 538-1024 at 15568 (20% faster
//   than 64 rows there).
// * bfloat16 (oneDNN): a score block of about an L2 cache (2 MB of float32-sized entries), at
//   least 64 rows: 538 rows at 973, 134 at 3892, 64 at 15568 — where 538+ rows run 1.8x slower.
constexpr int64_t kMinScoreRowsF32 = 128;
constexpr int64_t kRowsPerLenDivisorF32 = 16;
constexpr int64_t kScoreBlockBytesBF16 = 2048ll << 10;
constexpr int64_t kMinScoreRowsBF16 = 64;

int64_t attention_rows(int64_t len, at::ScalarType dtype) {
    const int64_t rows = dtype == at::kFloat ? std::max(kMinScoreRowsF32, len / kRowsPerLenDivisorF32)
                                             : std::max(kMinScoreRowsBF16, kScoreBlockBytesBF16 / (len * 4));
    return std::min(len, rows);
}
// Score chunk per step on GPUs without fused attention (libtorch < 2).
constexpr int64_t kGpuScoreChunkBytes = 256ll << 20;
constexpr int64_t kFfnChunkRows = 2048;

at::Tensor apply_rope(const at::Tensor& t, const RopeTable& rope) {
    // t (G, L, H, hd); tables (L, hd) broadcast over groups and heads. Swap the two quarters
    // inside each half: [a b | c d] -> [b a | d c]; with the signed sine this gives the rotation
    // (a cos - b sin, b cos + a sin) per half.
    const int64_t hd = t.size(-1);
    std::vector<int64_t> split(t.sizes().begin(), t.sizes().end() - 1);
    split.insert(split.end(), {2, 2, hd / 4});
    at::Tensor swapped = t.reshape(split).flip({static_cast<int64_t>(split.size()) - 2}).view(t.sizes());
    const int64_t len = rope.cos.size(0);
    at::Tensor out = t * rope.cos.view({len, 1, hd});
    out.addcmul_(swapped, rope.sin_signed.view({len, 1, hd}));
    return out;
}

// CPU: one task = one block of queries of one head of one group; out (G, L, H, hd).
void attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& out) {
    const int64_t groups = q.size(0), len = q.size(1), heads = q.size(2), hd = q.size(3);
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    const int64_t rows = attention_rows(len, q.scalar_type());
    const int64_t blocks = (len + rows - 1) / rows;
    parallel_tasks(groups * heads * blocks, [&](int64_t begin, int64_t end) {
        at::Tensor scores = at::empty({rows * len}, q.options());
        at::Tensor probs = at::empty({rows * len}, q.options());
        for (int64_t task = begin; task < end; task++) {
            // Consecutive tasks share (group, head), so that head's K and V stay in cache.
            const int64_t g = task / (heads * blocks), h = (task / blocks) % heads, b = task % blocks;
            const int64_t r0 = b * rows, n = std::min(rows, len - r0);
            at::Tensor qh = q[g].select(1, h).narrow(0, r0, n);  // (n, hd), row stride = layout's
            at::Tensor kh = k[g].select(1, h), vh = v[g].select(1, h);
            at::Tensor s = scores.narrow(0, 0, n * len).view({n, len});
            at::Tensor p = probs.narrow(0, 0, n * len).view({n, len});
            at::addmm_out(s, s, qh, kh.t(), /*beta=*/0, /*alpha=*/scale);  // beta 0: s is not read
            // bf16 goes to ATen's CPU softmax, which accumulates in float32 and rounds only its
            // output, as fused GPU attention does before the P V product.
            softmax_rows(p, s);
            at::Tensor dst = out[g].select(1, h).narrow(0, r0, n);  // strided rows: BLAS writes in place
            at::mm_out(dst, p, vh);
        }
    });
}

// GPUs without fused attention (libtorch < 2): per group, chunks of queries over all heads.
void attention_chunked(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& out) {
    const int64_t groups = q.size(0), len = q.size(1), heads = q.size(2), hd = q.size(3);
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    const int64_t rows = std::max<int64_t>(1, std::min(len, kGpuScoreChunkBytes / (heads * len * 4)));
    for (int64_t g = 0; g < groups; g++) {
        at::Tensor kt = k[g].permute({1, 2, 0}), vh = v[g].transpose(0, 1);  // (H, hd, L), (H, L, hd)
        for (int64_t r0 = 0; r0 < len; r0 += rows) {
            const int64_t n = std::min(rows, len - r0);
            at::Tensor qc = q[g].narrow(0, r0, n).transpose(0, 1);  // (H, n, hd)
            at::Tensor probs = at::softmax(at::bmm(qc, kt).mul_(scale), -1, at::kFloat).to(v.scalar_type());
            out[g].narrow(0, r0, n).copy_(at::bmm(probs, vh).transpose(0, 1));
        }
    }
}

}  // namespace

RopeTable make_rope_table(const at::Tensor& positions, int64_t head_dim, double frequency) {
    const int64_t half = head_dim / 2;
    at::Tensor exponents = at::arange(0, half, 2, at::kFloat) / static_cast<double>(half);
    at::Tensor inv_freq = at::reciprocal(at::pow(frequency, exponents));
    at::Tensor pos = positions.to(at::kFloat);
    at::Tensor ang_row = pos.select(1, 0).unsqueeze(1) * inv_freq.unsqueeze(0);  // (L, hd/4)
    at::Tensor ang_col = pos.select(1, 1).unsqueeze(1) * inv_freq.unsqueeze(0);
    at::Tensor cr = ang_row.cos(), sr = ang_row.sin(), cc = ang_col.cos(), sc = ang_col.sin();
    return RopeTable{at::cat({cr, cr, cc, cc}, 1), at::cat({-sr, sr, -sc, sc}, 1)};
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    const int64_t groups = q.size(0), len = q.size(1), heads = q.size(2), hd = q.size(3);
#if TORCH_VERSION_MAJOR >= 2
    if (!q.is_cpu()) {  // fused flash / memory-efficient kernels: no score matrix at all
        at::Tensor o = at::scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2));
        return o.transpose(1, 2).reshape({groups, len, heads * hd});
    }
#endif
    at::Tensor out = at::empty({groups, len, heads, hd}, v.options());
    if (q.is_cpu()) attention_cpu(q, k, v, out);
    else attention_chunked(q, k, v, out);
    return out.view({groups, len, heads * hd});
}

void TransformerBlock::load(WeightSource& ws, const std::string& prefix, const BlockSpec& spec) {
    spec_ = spec;
    const int64_t c = spec.dim, hd = spec.dim / spec.heads;
    norm1_.load(ws, prefix + ".norm1", c, spec.ln_eps);
    qkv_.load(ws, prefix + ".attn.qkv", c, 3 * c);
    if (spec.qk_norm) {  // plain nn.LayerNorm(head_dim): default eps 1e-5
        q_norm_.load(ws, prefix + ".attn.q_norm", hd, 1e-5);
        k_norm_.load(ws, prefix + ".attn.k_norm", hd, 1e-5);
    }
    proj_.load(ws, prefix + ".attn.proj", c, c);
    at::Tensor ls1 = ws.take(prefix + ".ls1.gamma", {c});
    norm2_.load(ws, prefix + ".norm2", c, spec.ln_eps);
    if (spec.ffn == FfnKind::Mlp) {
        fc1_.load(ws, prefix + ".mlp.fc1", c, spec.ffn_hidden);
        fc2_.load(ws, prefix + ".mlp.fc2", spec.ffn_hidden, c);
    } else {
        fc1_.load(ws, prefix + ".mlp.w12", c, 2 * spec.ffn_hidden);
        fc2_.load(ws, prefix + ".mlp.w3", spec.ffn_hidden, c);
    }
    at::Tensor ls2 = ws.take(prefix + ".ls2.gamma", {c});
    // gamma * (W h + b) == (gamma W) h + gamma b: one less pass over the activations per branch.
    proj_.scale_outputs(ls1);
    fc2_.scale_outputs(ls2);
}

void TransformerBlock::to(const at::Device& device, at::ScalarType matmul_dtype) {
    norm1_.to(device);
    norm2_.to(device);
    if (spec_.qk_norm) {
        q_norm_.to(device);
        k_norm_.to(device);
    }
    qkv_.to(device, matmul_dtype);
    proj_.to(device, matmul_dtype);
    fc1_.to(device, matmul_dtype);
    fc2_.to(device, matmul_dtype);
}

at::Tensor TransformerBlock::attend(const at::Tensor& x2d, int64_t groups, int64_t tokens,
                                    const RopeTable* rope) const {
    const int64_t c = spec_.dim, heads = spec_.heads, hd = c / heads;
    at::Tensor qkv = qkv_(norm1_(x2d));  // one fused GEMM for q, k and v: (T, 3C)
    // Views (G, L, H, hd) into the fused output; attention reads heads as strided slices.
    auto part = [&](int i) { return qkv.narrow(1, i * c, c).view({groups, tokens, heads, hd}); };
    at::Tensor q = part(0), k = part(1), v = part(2);
    if (spec_.qk_norm) {
        q = q_norm_(q);
        k = k_norm_(k);
    }
    if (rope) {
        q = apply_rope(q.to(at::kFloat), *rope);
        k = apply_rope(k.to(at::kFloat), *rope);
    }
    if (q.scalar_type() != v.scalar_type()) {
        q = q.to(v.scalar_type());
        k = k.to(v.scalar_type());
    }
    return attention(q, k, v).view({groups * tokens, c});
}

void TransformerBlock::feed_forward_(at::Tensor& x2d) const {
    const int64_t total = x2d.size(0), hidden = spec_.ffn_hidden;
    for (int64_t r0 = 0; r0 < total; r0 += kFfnChunkRows) {
        at::Tensor rows = x2d.narrow(0, r0, std::min(kFfnChunkRows, total - r0));
        at::Tensor h = fc1_(norm2_(rows));
        if (spec_.ffn == FfnKind::Mlp) {
            at::gelu_(h);  // exact (erf) GELU, as nn.GELU()
        } else {
            h = at::silu(h.narrow(1, 0, hidden)).mul_(h.narrow(1, hidden, hidden));
        }
        fc2_.add_to_(rows, h);
    }
}

void TransformerBlock::forward_(at::Tensor& x, const RopeTable* rope) const {
    const int64_t groups = x.size(0), tokens = x.size(1);
    at::Tensor x2d = x.view({groups * tokens, spec_.dim});
    at::Tensor attn = attend(x2d, groups, tokens, rope);
    proj_.add_to_(x2d, attn);
    feed_forward_(x2d);
}

}  // namespace da3
