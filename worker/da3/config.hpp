// Dimensions of a DA3 any-view network, read from a model folder's config.json (the official hub
// form {"model_name": "da3-small", ...} or explicit dimensions as in the golden fixtures).
#pragma once

#include <array>
#include <string>

namespace da3 {

enum class FfnKind { Mlp, SwiGlu };

struct HeadConfig {
    int dim_in = 0;                       // 2*embed_dim when cat_token
    int features = 0;                     // fusion width
    int output_dim = 2;                   // depth + confidence
    std::array<int, 4> out_channels{};    // per pyramid level
};

struct NetConfig {
    std::string model_name;               // "da3-small", "custom", "demo", ...
    int patch_size = 14;
    int pos_embed_grid = 37;              // learned position grid side (img_size 518 / 14)
    int embed_dim = 0, depth = 0, num_heads = 0;
    double mlp_ratio = 4.0;
    FfnKind ffn = FfnKind::Mlp;
    int alt_start = -1, qknorm_start = -1, rope_start = -1;  // -1 switches the feature off
    double rope_freq = 100.0;
    bool cat_token = true;
    std::array<int, 4> out_layers{};
    HeadConfig head;
    int cam_dec_dim_in = 0;
    bool has_cam_enc = false;
    int cam_enc_dim_out = 0, cam_enc_heads = 16;
    bool has_gs_head = false;             // Giant: 3DGS head weights exist but are not used here

    // Hidden width of the transformer FFN (SwiGLU rounds 2/3 of it up to a multiple of 8).
    int ffn_hidden() const;
    // Floating-point operations (2 per multiply-add) of the backbone's matrix products for `views`
    // views of h x w: the linear layers and both attention products, per-view or cross-view as
    // the block alternation says. Element-wise work is left out: this is the figure to hold
    // against a device's matmul peak.
    double backbone_matmul_flops(int64_t views, int64_t h, int64_t w) const;
    // Block i attends across all views (DA3 alternates after alt_start: odd blocks are global).
    bool is_global_block(int i) const { return alt_start != -1 && i >= alt_start && i % 2 == 1; }
    bool uses_qk_norm(int i) const { return qknorm_start != -1 && i >= qknorm_start; }
    bool uses_rope(int i) const { return rope_start != -1 && rope_freq > 0 && i >= rope_start; }
};

// Parses config.json at `path`; throws std::runtime_error naming the problem.
NetConfig load_config(const std::string& path);

// The dimensions of an official any-view model ("da3-small", "da3-base", "da3-large",
// "da3-giant", case-insensitive); throws for anything else (mono/metric/nested included).
NetConfig config_for_model_name(const std::string& name);

// Checks internal consistency (head width vs embed, heads divide embed, layers in range...);
// throws std::runtime_error with the first violation.
void validate_config(const NetConfig& c);

}  // namespace da3
