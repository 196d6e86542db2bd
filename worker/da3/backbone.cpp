// DA3 DINOv2 backbone. See backbone.hpp.
#include "worker/da3/backbone.hpp"

#include <algorithm>
#include <string>

namespace da3 {

namespace {

// Fewer views than this skip reference-view selection: view 0 is the reference.
constexpr int64_t kMinViewsForSelection = 3;

// (row, col) RoPE positions of one view's tokens: the special token at (0,0), patch (r,c) at
// (r+1, c+1).
at::Tensor grid_positions(int64_t ph, int64_t pw) {
    at::Tensor pos = at::zeros({1 + ph * pw, 2}, at::kFloat);
    auto a = pos.accessor<float, 2>();
    for (int64_t r = 0; r < ph; r++)
        for (int64_t c = 0; c < pw; c++) {
            a[1 + r * pw + c][0] = static_cast<float>(r + 1);
            a[1 + r * pw + c][1] = static_cast<float>(c + 1);
        }
    return pos;
}

// Positions for cross-view attention over S views ("pos_nodiff"): every patch at (1,1), each
// view's special token at (0,0), so patches carry no relative position across the joint sequence.
at::Tensor no_diff_positions(int64_t views, int64_t tokens_per_view) {
    at::Tensor pos = at::ones({views, tokens_per_view, 2}, at::kFloat);
    pos.select(1, 0).zero_();
    return pos.view({views * tokens_per_view, 2});
}

at::Tensor min_max_normalise(const at::Tensor& m) {
    return (m - m.min()) / (m.max() - m.min() + 1e-8);
}

}  // namespace

int select_reference_view(const at::Tensor& cls_tokens, RefView strategy) {
    const int64_t views = cls_tokens.size(0);
    if (views <= 1 || strategy == RefView::First) return 0;
    if (strategy == RefView::Middle) return static_cast<int>(views / 2);
    // saddle_balanced: the view closest to the middle of the range on three cls-token statistics
    // (mean cosine similarity to the others, norm, variance of the unit vector).
    at::Tensor feat = cls_tokens.to(at::kFloat);
    at::Tensor norm = at::norm(feat, 2, {1}, true);
    at::Tensor unit = feat / norm;
    at::Tensor sim = at::mm(unit, unit.t()) - at::eye(views, unit.options());
    at::Tensor similarity = sim.sum(1) / static_cast<double>(views - 1);
    at::Tensor centred = unit - unit.mean(1, true);
    at::Tensor variance = (centred * centred).sum(1) / static_cast<double>(unit.size(1) - 1);
    at::Tensor score = (min_max_normalise(similarity) - 0.5).abs() +
                       (min_max_normalise(norm.squeeze(1)) - 0.5).abs() +
                       (min_max_normalise(variance) - 0.5).abs();
    return static_cast<int>(score.argmin().item<int64_t>());
}

void Backbone::load(WeightSource& ws, const NetConfig& cfg) {
    cfg_ = cfg;
    const std::string p = "model.backbone.pretrained";
    const int64_t c = cfg.embed_dim, grid = cfg.pos_embed_grid;
    patch_embed_.load(ws, p + ".patch_embed.proj", 3, c, cfg.patch_size, cfg.patch_size, 0);
    cls_token_ = ws.take(p + ".cls_token", {1, 1, c});
    if (cfg.alt_start != -1) camera_token_ = ws.take(p + ".camera_token", {1, 2, c});
    pos_embed_ = ws.take(p + ".pos_embed", {1, 1 + grid * grid, c});
    blocks_.resize(static_cast<size_t>(cfg.depth));
    for (int i = 0; i < cfg.depth; i++) {
        BlockSpec spec;
        spec.dim = c;
        spec.heads = cfg.num_heads;
        spec.ffn = cfg.ffn;
        spec.ffn_hidden = cfg.ffn_hidden();
        spec.qk_norm = cfg.uses_qk_norm(i);
        spec.ln_eps = 1e-6;
        blocks_[static_cast<size_t>(i)].load(ws, p + ".blocks." + std::to_string(i), spec);
    }
    norm_.load(ws, p + ".norm", c, 1e-5);  // the final norm is a default nn.LayerNorm
}

void Backbone::to(const at::Device& device, at::ScalarType matmul_dtype) {
    patch_embed_.to(device, matmul_dtype);
    cls_token_ = cls_token_.to(device);
    if (camera_token_.defined()) camera_token_ = camera_token_.to(device);
    pos_embed_ = pos_embed_.to(device);
    for (auto& b : blocks_) b.to(device, matmul_dtype);
    norm_.to(device);
}

at::Tensor Backbone::position_embedding(int64_t ph, int64_t pw) const {
    const int64_t grid = cfg_.pos_embed_grid, c = cfg_.embed_dim;
    at::Tensor table = pos_embed_[0];  // (1 + grid^2, C)
    if (ph == grid && pw == grid) return table;
    // Bicubic resize of the learned grid. Like DINOv2, pass scale factors (grid + 0.1) / grid
    // rather than the output size: the kernel then samples at 1/scale, which differs slightly.
    at::Tensor patch_grid = table.narrow(0, 1, grid * grid).view({1, grid, grid, c}).permute({0, 3, 1, 2});
    const double scale_h = (static_cast<double>(ph) + 0.1) / static_cast<double>(grid);
    const double scale_w = (static_cast<double>(pw) + 0.1) / static_cast<double>(grid);
    at::Tensor resized = at::upsample_bicubic2d(patch_grid.contiguous(), {ph, pw}, false, scale_h, scale_w);
    at::Tensor patches = resized.permute({0, 2, 3, 1}).reshape({ph * pw, c});
    return at::cat({table.narrow(0, 0, 1), patches}, 0);
}

at::Tensor Backbone::embed(const at::Tensor& images) const {
    const int64_t views = images.size(0), c = cfg_.embed_dim;
    const int64_t ph = images.size(2) / cfg_.patch_size, pw = images.size(3) / cfg_.patch_size;
    const int64_t patches = ph * pw;
    at::Tensor proj = patch_embed_(images).flatten(2).transpose(1, 2);  // (S, P, C)
    at::Tensor x = at::empty({views, 1 + patches, c}, images.options().dtype(at::kFloat));
    x.narrow(1, 1, patches).copy_(proj);
    x.select(1, 0).copy_(cls_token_.view({1, c}).expand({views, c}));
    x.add_(position_embedding(ph, pw));
    return x;
}

at::Tensor Backbone::learned_camera_tokens(int64_t views) const {
    const int64_t c = cfg_.embed_dim;
    at::Tensor ref = camera_token_[0].narrow(0, 0, 1);                    // reference view
    at::Tensor src = camera_token_[0].narrow(0, 1, 1).expand({views - 1, c});  // all others
    return at::cat({ref, src}, 0);
}

std::vector<bool> Backbone::local_outputs_needed() const {
    // With cat_token, each out layer also returns the output of the last local block up to it.
    std::vector<bool> needed(static_cast<size_t>(cfg_.depth), false);
    if (!cfg_.cat_token) return needed;
    for (int o : cfg_.out_layers)
        for (int j = o; j >= 0; j--)
            if (!cfg_.is_global_block(j)) {
                needed[static_cast<size_t>(j)] = true;
                break;
            }
    return needed;
}

BackboneOutput Backbone::forward(const at::Tensor& images, const at::Tensor& cam_tokens,
                                 RefView strategy) const {
    const int64_t views = images.size(0), c = cfg_.embed_dim;
    const int64_t ph = images.size(2) / cfg_.patch_size, pw = images.size(3) / cfg_.patch_size;
    const int64_t patches = ph * pw, tokens = 1 + patches;
    const at::Device device = images.device();

    RopeTable local_rope, global_rope;
    if (cfg_.rope_start != -1) {
        const int64_t hd = c / cfg_.num_heads;
        local_rope = make_rope_table(grid_positions(ph, pw), hd, cfg_.rope_freq);
        global_rope = make_rope_table(no_diff_positions(views, tokens), hd, cfg_.rope_freq);
        local_rope = {local_rope.cos.to(device), local_rope.sin_signed.to(device)};
        global_rope = {global_rope.cos.to(device), global_rope.sin_signed.to(device)};
    }

    BackboneOutput out;
    at::Tensor x = embed(images);  // (S, N, C), float32 residual stream, updated in place
    at::Tensor local_x;
    at::Tensor restore;  // index_select order that undoes the reference-view reordering
    const std::vector<bool> keep_local = local_outputs_needed();
    size_t next_out = 0;

    for (int i = 0; i < cfg_.depth; i++) {
        if (cfg_.alt_start != -1 && i == cfg_.alt_start - 1 && views >= kMinViewsForSelection &&
            !cam_tokens.defined()) {
            const int ref = select_reference_view(x.select(1, 0), strategy);
            out.reference_view = ref;
            // New order: the reference view first, the others in their original order.
            std::vector<int64_t> order{ref}, inverse(static_cast<size_t>(views));
            for (int64_t v = 0; v < views; v++)
                if (v != ref) order.push_back(v);
            for (int64_t pos = 0; pos < views; pos++) inverse[static_cast<size_t>(order[pos])] = pos;
            if (ref != 0) {
                x = x.index_select(0, at::tensor(order, at::kLong).to(device));
                restore = at::tensor(inverse, at::kLong).to(device);
            }
        }
        if (cfg_.alt_start != -1 && i == cfg_.alt_start) {
            at::Tensor cams = cam_tokens.defined() ? cam_tokens : learned_camera_tokens(views);
            x.select(1, 0).copy_(cams);
            // In DA3 the block before alt_start is local and its output *is* local_x (one tensor),
            // so the camera tokens land in local_x too; this shows when alt_start is an out layer.
            if (local_x.defined()) local_x.select(1, 0).copy_(cams);
        }

        const bool global = cfg_.is_global_block(i);
        const RopeTable* rope = cfg_.uses_rope(i) ? (global ? &global_rope : &local_rope) : nullptr;
        const TransformerBlock& block = blocks_[static_cast<size_t>(i)];
        if (global) {
            at::Tensor joint = x.view({1, views * tokens, c});  // all views in one sequence
            block.forward_(joint, rope);
        } else {
            block.forward_(x, rope);
            if (keep_local[static_cast<size_t>(i)]) local_x = x.clone();
        }

        if (next_out < 4 && i == cfg_.out_layers[next_out]) {
            at::Tensor normed = norm_(x.narrow(1, 1, patches));
            at::Tensor feats, cam;
            if (cfg_.cat_token) {
                feats = at::cat({local_x.narrow(1, 1, patches), normed}, -1);
                cam = at::cat({local_x.select(1, 0), x.select(1, 0)}, -1);
            } else {
                feats = normed;
                cam = x.select(1, 0).clone();
            }
            if (restore.defined()) {
                feats = feats.index_select(0, restore);
                cam = cam.index_select(0, restore);
            }
            out.tokens[next_out] = feats;
            out.cam[next_out] = cam;
            next_out++;
        }
    }
    return out;
}

}  // namespace da3
