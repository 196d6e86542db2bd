// The whole DA3 any-view network: (camera encoder) -> backbone -> DualDPT head + camera decoder.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>

#include "worker/da3/backbone.hpp"
#include "worker/da3/camera.hpp"
#include "worker/da3/config.hpp"
#include "worker/da3/dpt_head.hpp"

namespace da3 {

struct NetworkOutput {
    at::Tensor depth;       // (S, H, W)
    at::Tensor conf;        // (S, H, W)
    at::Tensor extrinsics;  // (S, 3, 4) world-to-camera
    at::Tensor intrinsics;  // (S, 3, 3)
};

// Selects bfloat16 backbone matmuls for networks built on the CPU from now on.
void set_cpu_bf16(bool on);

class Network {
public:
    // Loads <dir>/config.json + <dir>/model.safetensors onto `device`; throws std::runtime_error
    // (or c10::Error) with a message naming the problem.
    static std::unique_ptr<Network> from_folder(const std::string& dir, const at::Device& device);
    // DA3-Small topology with fixed-seed random weights (no download needed, untrained).
    // Fixed-seed random weights in the topology of `topology` ("da3-small", "da3-base", ...).
    static std::unique_ptr<Network> demo(const at::Device& device, const std::string& topology = "da3-small");

    const NetConfig& config() const { return cfg_; }
    bool trained() const { return trained_; }
    const at::Device& device() const { return device_; }

    // images: (S, 3, H, W) ImageNet-normalised float32 (any device; moved to the model's).
    // w2c (S, 4, 4) and intrinsics (S, 3, 3) are the known cameras, or both undefined.
    // If `features` is not null it receives the backbone outputs (for tests and bisecting).
    NetworkOutput forward(const at::Tensor& images, const at::Tensor& w2c, const at::Tensor& intrinsics,
                          RefView strategy, BackboneOutput* features = nullptr) const;

private:
    Network(const NetConfig& cfg, WeightSource& ws, const at::Device& device);

    NetConfig cfg_;
    at::Device device_;
    bool trained_ = false;
    Backbone backbone_;
    DualDptHead head_;
    CameraDecoder cam_dec_;
    std::unique_ptr<CameraEncoder> cam_enc_;
};

}  // namespace da3
