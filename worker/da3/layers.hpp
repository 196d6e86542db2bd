// Parameter-holding primitives (Linear, LayerNorm, convolutions): load by checkpoint name, move to
// a device, apply. Weights are loaded as float32 on the CPU and moved once afterwards.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <string>

#include "worker/da3/weights.hpp"

namespace da3 {

// Runs fn(begin, end) over disjoint parts of [0, n) on libtorch's own intra-op thread pool
// (serially when it has one thread or we already are inside it). On CPU the network splits its
// GEMMs and attention into such tasks, each a single-threaded BLAS call: a second, BLAS-owned
// thread pool would fight libtorch's spinning OpenMP threads for the cores. fn runs in the
// caller's InferenceMode state.
void parallel_tasks(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

struct Linear {
    at::Tensor weight;  // (out, in)
    at::Tensor bias;    // (out) or undefined

    void load(WeightSource& ws, const std::string& prefix, int64_t in, int64_t out, bool with_bias = true);
    // Moves to `device`; the matrix takes `dtype` (bf16 for the CUDA backbone), the bias too.
    void to(const at::Device& device, at::ScalarType dtype = at::kFloat);
    // Multiplies rows and columns: y = x W^T + b with weight rows scaled by s (folds LayerScale).
    void scale_outputs(const at::Tensor& s);
    // x (..., in) -> (..., out) in the weight's dtype (x is cast when it differs).
    at::Tensor operator()(const at::Tensor& x) const;
    // x2d (rows, out) += h (rows, in) W^T + b, in place where the dtypes allow it.
    void add_to_(at::Tensor& x2d, const at::Tensor& h) const;

private:
    // y (rows, out) = x W^T + b, or y += x W^T + b; CPU rows split across the thread pool.
    void gemm_rows(at::Tensor& y, const at::Tensor& x, bool accumulate) const;
};

struct LayerNorm {
    at::Tensor weight, bias;
    double eps = 1e-5;

    void load(WeightSource& ws, const std::string& prefix, int64_t dim, double eps_);
    void to(const at::Device& device);
    // Normalises the last dim; float32 out (as under autocast), whatever the input dtype.
    at::Tensor operator()(const at::Tensor& x) const;
};

struct Conv2d {
    at::Tensor weight, bias;
    int64_t stride = 1, padding = 0;

    void load(WeightSource& ws, const std::string& prefix, int64_t in, int64_t out, int64_t kernel,
              int64_t stride_, int64_t padding_, bool with_bias = true);
    // channels_last: store the kernel NHWC, for convs fed channels-last feature maps.
    void to(const at::Device& device, at::ScalarType dtype = at::kFloat, bool channels_last = false);
    at::Tensor operator()(const at::Tensor& x) const;
};

struct ConvTranspose2d {
    at::Tensor weight, bias;  // weight (in, out, k, k) as PyTorch stores it
    int64_t stride = 1;

    void load(WeightSource& ws, const std::string& prefix, int64_t in, int64_t out, int64_t kernel);
    void to(const at::Device& device, bool channels_last = false);
    at::Tensor operator()(const at::Tensor& x) const;
};

// Checks a conv's weights exist with the right shapes without keeping them (unused branches).
void expect_conv(WeightSource& ws, const std::string& prefix, int64_t in, int64_t out, int64_t kernel,
                 bool with_bias = true);

}  // namespace da3
