// The DA3 any-view network. See network.hpp.
#include <atomic>
#include "worker/da3/network.hpp"

#include <c10/core/InferenceMode.h>

#include <cstdlib>
#include <stdexcept>
#include <utility>

#include "worker/da3/weights.hpp"

namespace da3 {

namespace {

constexpr uint64_t kDemoSeed = 42;

std::atomic<bool> g_cpu_bf16{false};

bool env_flag(const char* name) {
    const char* v = std::getenv(name);
    return v && v[0] == '1';
}

// The backbone's matmuls run in bfloat16 on CUDA (as DA3's autocast does); on the CPU in float32
// unless set_cpu_bf16() (--precision bf16) asks for DA3's GPU numerics there too (~1.5x faster on
// AVX512-BF16 CPUs; depth within ~1.5e-2 of float32). DA3_CUDA_FP32=1 keeps CUDA in float32, to
// compare a GPU with the CPU reference numbers.
at::ScalarType backbone_matmul_dtype(const at::Device& device) {
    if (device.is_cuda()) return env_flag("DA3_CUDA_FP32") ? at::kFloat : at::kBFloat16;
    return g_cpu_bf16 ? at::kBFloat16 : at::kFloat;
}

void check_shape(const at::Tensor& t, at::IntArrayRef want, const char* what) {
    if (t.sizes() != want)
        throw std::invalid_argument(std::string(what) + " has shape " + c10::str(t.sizes()) + ", expected " +
                                    c10::str(want));
}

}  // namespace

void set_cpu_bf16(bool on) { g_cpu_bf16 = on; }

Network::Network(const NetConfig& cfg, WeightSource& ws, const at::Device& device)
    : cfg_(cfg), device_(device), trained_(ws.trained()) {
    backbone_.load(ws, cfg);
    head_.load(ws, cfg.head);
    cam_dec_.load(ws, cfg.cam_dec_dim_in);
    if (cfg.has_cam_enc) {
        cam_enc_ = std::make_unique<CameraEncoder>();
        cam_enc_->load(ws, cfg);
    }
    if (cfg.has_gs_head) {  // Giant's Gaussian-splatting head: present in the file, never run here
        ws.ignore_prefix("model.gs_head.");
        ws.ignore_prefix("model.gs_adapter.");
    }
    ws.finish();
    // DA3_CUDA_FP32=1 is for comparing with the CPU reference: cuDNN's default TF32 convolutions
    // (10-bit mantissas) in the head would blur that comparison, so they are turned off too.
    if (device.is_cuda() && env_flag("DA3_CUDA_FP32")) at::globalContext().setAllowTF32CuDNN(false);
    backbone_.to(device, backbone_matmul_dtype(device));
    head_.to(device);
    cam_dec_.to(device);
    if (cam_enc_) cam_enc_->to(device);
}

std::unique_ptr<Network> Network::from_folder(const std::string& dir, const at::Device& device) {
    NetConfig cfg = load_config(dir + "/config.json");
    auto ws = open_safetensors_weights(dir + "/model.safetensors", cfg.model_name);
    return std::unique_ptr<Network>(new Network(cfg, *ws, device));
}

std::unique_ptr<Network> Network::demo(const at::Device& device, const std::string& topology) {
    NetConfig cfg = config_for_model_name(topology);
    cfg.model_name = "demo";
    auto ws = make_random_weights(kDemoSeed);
    return std::unique_ptr<Network>(new Network(cfg, *ws, device));
}

NetworkOutput Network::forward(const at::Tensor& images_in, const at::Tensor& w2c, const at::Tensor& intrinsics,
                               RefView strategy, BackboneOutput* features) const {
    c10::InferenceMode no_autograd;
    if (images_in.dim() != 4 || images_in.size(1) != 3)
        throw std::invalid_argument("images must be (views, 3, H, W), got " + c10::str(images_in.sizes()));
    const int64_t views = images_in.size(0), height = images_in.size(2), width = images_in.size(3);
    const int64_t patch = cfg_.patch_size;
    if (views < 1 || height < patch || width < patch || height % patch || width % patch)
        throw std::invalid_argument("image size " + std::to_string(height) + "x" + std::to_string(width) +
                                    " must be a positive multiple of " + std::to_string(patch));
    at::Tensor images = images_in.to(device_, at::kFloat).contiguous();

    at::Tensor cam_tokens;
    if (w2c.defined() != intrinsics.defined())
        throw std::invalid_argument("known cameras need both extrinsics and intrinsics");
    if (w2c.defined()) {
        if (!cam_enc_) throw std::invalid_argument("this model has no camera encoder: known cameras unsupported");
        check_shape(w2c, {views, 4, 4}, "extrinsics");
        check_shape(intrinsics, {views, 3, 3}, "intrinsics");
        at::Tensor encoding = encode_known_cameras(w2c, intrinsics, height, width).to(device_);
        cam_tokens = (*cam_enc_)(encoding);
    }

    BackboneOutput feats = backbone_.forward(images, cam_tokens, strategy);
    NetworkOutput out;
    std::tie(out.depth, out.conf) = head_.forward(feats.tokens, height / patch, width / patch, height, width);
    at::Tensor pose = cam_dec_(feats.cam[3]);  // the camera token of the last out layer
    std::tie(out.extrinsics, out.intrinsics) = decode_pose_encoding(pose, height, width);
    if (features) *features = std::move(feats);
    return out;
}

}  // namespace da3
