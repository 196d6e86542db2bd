// config.json -> NetConfig. Plain C++ + Jansson (no libtorch) so it compiles fast.
#include "worker/da3/config.hpp"

#include <jansson.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <stdexcept>

namespace da3 {

namespace {

using JsonPtr = std::unique_ptr<json_t, decltype(&json_decref)>;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
    throw std::runtime_error(path + ": " + what);
}

int get_int(const std::string& path, json_t* obj, const char* key, int fallback, bool required) {
    json_t* v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required) fail(path, std::string("missing integer '") + key + "'");
        return fallback;
    }
    if (!json_is_integer(v)) fail(path, std::string("'") + key + "' must be an integer");
    return static_cast<int>(json_integer_value(v));
}

std::array<int, 4> get_int4(const std::string& path, json_t* obj, const char* key) {
    json_t* v = json_object_get(obj, key);
    if (!json_is_array(v) || json_array_size(v) != 4)
        fail(path, std::string("'") + key + "' must be an array of 4 integers");
    std::array<int, 4> out{};
    for (size_t i = 0; i < 4; i++) {
        json_t* e = json_array_get(v, i);
        if (!json_is_integer(e)) fail(path, std::string("'") + key + "' must hold integers");
        out[i] = static_cast<int>(json_integer_value(e));
    }
    return out;
}

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
}

// The fixture form: every dimension spelled out, same names as DA3's yaml configs.
NetConfig parse_explicit(const std::string& path, json_t* root) {
    NetConfig c;
    json_t* name = json_object_get(root, "model_name");
    c.model_name = json_is_string(name) ? json_string_value(name) : "custom";
    c.patch_size = get_int(path, root, "patch_size", 14, false);
    int img_size = get_int(path, root, "img_size", 518, false);
    c.pos_embed_grid = img_size / c.patch_size;
    c.embed_dim = get_int(path, root, "embed_dim", 0, true);
    c.depth = get_int(path, root, "depth", 0, true);
    c.num_heads = get_int(path, root, "num_heads", 0, true);
    json_t* ratio = json_object_get(root, "mlp_ratio");
    if (ratio && json_is_number(ratio)) c.mlp_ratio = json_number_value(ratio);
    json_t* ffn = json_object_get(root, "ffn_layer");
    std::string ffn_name = json_is_string(ffn) ? json_string_value(ffn) : "mlp";
    if (ffn_name == "mlp") c.ffn = FfnKind::Mlp;
    else if (ffn_name == "swiglu" || ffn_name == "swiglufused") c.ffn = FfnKind::SwiGlu;
    else fail(path, "unknown ffn_layer '" + ffn_name + "' (mlp, swiglu, swiglufused)");
    c.alt_start = get_int(path, root, "alt_start", -1, false);
    c.qknorm_start = get_int(path, root, "qknorm_start", -1, false);
    c.rope_start = get_int(path, root, "rope_start", -1, false);
    json_t* freq = json_object_get(root, "rope_freq");
    if (freq && json_is_number(freq)) c.rope_freq = json_number_value(freq);
    json_t* cat = json_object_get(root, "cat_token");
    c.cat_token = cat ? json_is_true(cat) : true;
    c.out_layers = get_int4(path, root, "out_layers");

    json_t* head = json_object_get(root, "head");
    if (!json_is_object(head)) fail(path, "missing object 'head'");
    json_t* type = json_object_get(head, "type");
    if (type && (!json_is_string(type) || lower(json_string_value(type)) != "dualdpt"))
        fail(path, "only the DualDPT head of the any-view models is supported");
    c.head.dim_in = get_int(path, head, "dim_in", 0, true);
    c.head.features = get_int(path, head, "features", 0, true);
    c.head.output_dim = get_int(path, head, "output_dim", 2, false);
    c.head.out_channels = get_int4(path, head, "out_channels");

    json_t* dec = json_object_get(root, "cam_dec");
    if (!json_is_object(dec))
        fail(path, "missing object 'cam_dec' (the camera decoder is needed for the poses)");
    c.cam_dec_dim_in = get_int(path, dec, "dim_in", 0, true);
    json_t* enc = json_object_get(root, "cam_enc");
    if (json_is_object(enc)) {
        c.has_cam_enc = true;
        c.cam_enc_dim_out = get_int(path, enc, "dim_out", c.embed_dim, false);
        c.cam_enc_heads = get_int(path, enc, "num_heads", 16, false);
    }
    c.has_gs_head = json_is_object(json_object_get(root, "gs_head"));
    return c;
}

}  // namespace

int NetConfig::ffn_hidden() const {
    int hidden = static_cast<int>(embed_dim * mlp_ratio);
    if (ffn == FfnKind::SwiGlu) hidden = (hidden * 2 / 3 + 7) / 8 * 8;
    return hidden;
}

double NetConfig::backbone_matmul_flops(int64_t views, int64_t h, int64_t w) const {
    const double c = embed_dim, hidden = ffn_hidden();
    const double tokens = static_cast<double>(h / patch_size) * static_cast<double>(w / patch_size) + 1;  // + cls/camera
    const double ffn_macs = ffn == FfnKind::Mlp ? 2 * c * hidden : 3 * c * hidden;  // fc1+fc2, or w12+w3
    const double linear_per_token = 4 * c * c + ffn_macs;                            // qkv, proj, FFN
    double total = 0;
    for (int i = 0; i < depth; i++) {
        // q k^T and p v: 2 * L^2 * C multiply-adds over the sequence each block attends over
        const double seq = is_global_block(i) ? views * tokens : tokens;
        const double attention = 2 * seq * seq * c * (is_global_block(i) ? 1 : static_cast<double>(views));
        total += views * tokens * linear_per_token + attention;
    }
    return 2 * total;
}

NetConfig config_for_model_name(const std::string& raw_name) {
    const std::string name = lower(raw_name);
    NetConfig c;
    c.model_name = name;
    struct Row {
        const char* name;
        int embed, depth, heads, start;
        std::array<int, 4> out_layers;
        int features;
        std::array<int, 4> out_channels;
        FfnKind ffn;
        bool gs_head;
    };
    static const Row rows[] = {
        {"da3-small", 384, 12, 6, 4, {5, 7, 9, 11}, 64, {48, 96, 192, 384}, FfnKind::Mlp, false},
        {"da3-base", 768, 12, 12, 4, {5, 7, 9, 11}, 128, {96, 192, 384, 768}, FfnKind::Mlp, false},
        {"da3-large", 1024, 24, 16, 8, {11, 15, 19, 23}, 256, {256, 512, 1024, 1024}, FfnKind::Mlp,
         false},
        {"da3-giant", 1536, 40, 24, 13, {19, 27, 33, 39}, 256, {256, 512, 1024, 1024},
         FfnKind::SwiGlu, true},
    };
    for (const Row& r : rows) {
        if (name != r.name) continue;
        c.embed_dim = r.embed;
        c.depth = r.depth;
        c.num_heads = r.heads;
        c.alt_start = c.qknorm_start = c.rope_start = r.start;
        c.out_layers = r.out_layers;
        c.ffn = r.ffn;
        c.head.dim_in = 2 * r.embed;
        c.head.features = r.features;
        c.head.out_channels = r.out_channels;
        c.cam_dec_dim_in = 2 * r.embed;
        c.has_cam_enc = true;
        c.cam_enc_dim_out = r.embed;
        c.cam_enc_heads = 16;
        c.has_gs_head = r.gs_head;
        return c;
    }
    throw std::runtime_error("model_name '" + raw_name +
                             "' is not supported: only the any-view models da3-small, da3-base, "
                             "da3-large and da3-giant are (mono, metric and nested use other heads)");
}

void validate_config(const NetConfig& c) {
    auto bad = [&](const std::string& what) {
        throw std::runtime_error("config of '" + c.model_name + "': " + what);
    };
    if (c.patch_size <= 0 || c.pos_embed_grid <= 0) bad("patch_size/img_size must be positive");
    if (c.embed_dim <= 0 || c.depth <= 0 || c.num_heads <= 0) bad("embed_dim, depth, num_heads must be positive");
    if (c.embed_dim % c.num_heads != 0) bad("num_heads must divide embed_dim");
    const int head_dim = c.embed_dim / c.num_heads;
    if (c.rope_start != -1 && head_dim % 4 != 0) bad("2D RoPE needs a head dim divisible by 4");
    for (int l : c.out_layers)
        if (l < 0 || l >= c.depth) bad("out_layers must lie in [0, depth)");
    for (int i = 1; i < 4; i++)
        if (c.out_layers[i] <= c.out_layers[i - 1]) bad("out_layers must be increasing");
    const int feat_dim = c.cat_token ? 2 * c.embed_dim : c.embed_dim;
    if (c.head.dim_in != feat_dim) bad("head.dim_in must be " + std::to_string(feat_dim));
    if (c.cam_dec_dim_in != feat_dim) bad("cam_dec.dim_in must be " + std::to_string(feat_dim));
    if (c.head.features <= 0 || c.head.features % 8 != 0)
        bad("head.features must be a positive multiple of 8 (position embeddings split it in four)");
    if (c.head.output_dim != 2) bad("head.output_dim must be 2 (depth, confidence)");
    for (int oc : c.head.out_channels)
        if (oc <= 0 || oc % 4 != 0) bad("head.out_channels must be positive multiples of 4");
    if (c.has_cam_enc) {
        if (c.alt_start == -1) bad("cam_enc needs camera tokens (alt_start != -1)");
        if (c.cam_enc_dim_out != c.embed_dim) bad("cam_enc.dim_out must equal embed_dim");
        if (c.cam_enc_heads <= 0 || c.cam_enc_dim_out % c.cam_enc_heads != 0)
            bad("cam_enc.num_heads must divide cam_enc.dim_out");
    }
}

NetConfig load_config(const std::string& path) {
    json_error_t jerr;
    JsonPtr root(json_load_file(path.c_str(), 0, &jerr), &json_decref);
    if (!root) fail(path, std::string("cannot read JSON: ") + jerr.text);
    if (!json_is_object(root.get())) fail(path, "not a JSON object");
    NetConfig c;
    if (json_object_get(root.get(), "embed_dim")) {
        c = parse_explicit(path, root.get());
    } else {
        json_t* name = json_object_get(root.get(), "model_name");
        if (!json_is_string(name))
            fail(path, "needs either \"model_name\" (da3-small|da3-base|da3-large|da3-giant) or "
                       "explicit dimensions (embed_dim, depth, ...)");
        c = config_for_model_name(json_string_value(name));
    }
    validate_config(c);
    return c;
}

}  // namespace da3
