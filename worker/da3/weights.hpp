// Where the network's parameters come from: a checkpoint (model.safetensors) or fixed-seed random
// numbers (the "demo" model). Every parameter is requested by its official checkpoint name and
// expected shape. Problems are collected rather than thrown one by one, so that finish() can
// report all missing / misshapen / unexpected tensors in one message.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>

namespace da3 {

class WeightSource {
public:
    virtual ~WeightSource() = default;

    // The float32 CPU tensor `name` of `shape`. If it is missing or has another shape the problem
    // is recorded and a zero tensor of `shape` comes back, so loading can go on and list them all.
    virtual at::Tensor take(const std::string& name, at::IntArrayRef shape) = 0;

    // Checks that `name` exists with `shape` without keeping it: for weights of branches this
    // implementation does not compute (DualDPT's auxiliary ray head).
    virtual void expect_unused(const std::string& name, at::IntArrayRef shape) = 0;

    // Accepts every tensor whose name starts with `prefix` without checking or loading it
    // (DA3-Giant's 3DGS head, which the server never runs).
    virtual void ignore_prefix(const std::string& prefix) = 0;

    // Throws std::runtime_error listing the first few problems of each kind, if there were any.
    virtual void finish() = 0;

    // True for real checkpoints, false for random weights.
    virtual bool trained() const = 0;
};

// Opens `path` (a .safetensors file); `what` names the model in error messages. Accepts F32, F16
// and BF16 tensors (converted to float32). Tolerates checkpoints saved without the "model." prefix.
std::unique_ptr<WeightSource> open_safetensors_weights(const std::string& path, const std::string& what);

// Random weights with a non-trivial scale everywhere, drawn in request order from `seed`:
// N(0, 0.5) for embeddings and tokens, N(0, 1/sqrt(fan_in)) for matrices and kernels,
// U(0.05, 0.3) for LayerScale, U(0.8, 1.2) for norm weights, N(0, 0.05) for biases; the camera
// decoder's field-of-view layer is set up to give about 1 rad so intrinsics stay sensible.
std::unique_ptr<WeightSource> make_random_weights(uint64_t seed);

}  // namespace da3
