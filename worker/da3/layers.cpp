// Parameter-holding primitives. See layers.hpp.
#include "worker/da3/layers.hpp"

#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>

namespace da3 {

namespace {
// Fewer rows than this per part are not worth a thread.
constexpr int64_t kMinRowsPerPart = 64;
}  // namespace

void parallel_tasks(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
    if (n <= 0) return;
    if (n == 1 || at::get_num_threads() == 1 || at::in_parallel_region()) {
        fn(0, n);
        return;
    }
    // This file is not compiled with -fopenmp, so ATen's header-only parallel_for would run
    // serially here; TensorIterator::for_each is compiled inside libtorch and uses its pool.
    // Iterating over arange(n) hands each thread a contiguous run of task indices.
    const bool inference = c10::InferenceMode::is_enabled();
    at::Tensor index = at::arange(n, at::TensorOptions().dtype(at::kLong));
    at::TensorIterator iter = at::TensorIteratorConfig()
                                  .resize_outputs(false)  // keep the index's own shape
                                  .check_all_same_dtype(false)
                                  .add_output(index)
                                  .build();
    iter.for_each(
        [&](char** data, const int64_t* strides, int64_t size0, int64_t size1) {
            c10::InferenceMode guard(inference);  // thread-local: not inherited by pool threads
            for (int64_t j = 0; j < size1; j++) {
                const int64_t first = *reinterpret_cast<const int64_t*>(data[0] + j * strides[1]);
                fn(first, first + size0);
            }
        },
        /*grain_size=*/1);
}

void Linear::load(WeightSource& ws, const std::string& prefix, int64_t in, int64_t out, bool with_bias) {
    weight = ws.take(prefix + ".weight", {out, in});
    bias = with_bias ? ws.take(prefix + ".bias", {out}) : at::Tensor();
}

void Linear::to(const at::Device& device, at::ScalarType dtype) {
    weight = weight.to(device, dtype).contiguous();
    if (bias.defined()) bias = bias.to(device, dtype);
}

void Linear::scale_outputs(const at::Tensor& s) {
    weight = weight * s.unsqueeze(1);
    if (bias.defined()) bias = bias * s;
}

void Linear::gemm_rows(at::Tensor& y, const at::Tensor& x, bool accumulate) const {
    const int64_t rows = x.size(0);
    const int64_t parts = x.is_cpu() ? std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows / kMinRowsPerPart)) : 1;
    parallel_tasks(parts, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; p++) {
            const int64_t r0 = rows * p / parts, r1 = rows * (p + 1) / parts;
            at::Tensor yi = y.narrow(0, r0, r1 - r0), xi = x.narrow(0, r0, r1 - r0);
            // W^T as a transposed view: BLAS takes the transpose flag, nothing is copied.
            if (accumulate) {  // GEMM with beta=1 straight into y, no temporary
                if (bias.defined()) yi.add_(bias);
                yi.addmm_(xi, weight.t());
            } else if (bias.defined()) {
                at::addmm_out(yi, bias, xi, weight.t());
            } else {
                at::mm_out(yi, xi, weight.t());
            }
        }
    });
}

at::Tensor Linear::operator()(const at::Tensor& x) const {
    const int64_t in = weight.size(1);
    at::Tensor x2 = x.reshape({-1, in});
    if (x2.scalar_type() != weight.scalar_type()) x2 = x2.to(weight.scalar_type());
    at::Tensor y = at::empty({x2.size(0), weight.size(0)}, x2.options());
    gemm_rows(y, x2, false);
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = weight.size(0);
    return y.view(shape);
}

void Linear::add_to_(at::Tensor& x2d, const at::Tensor& h) const {
    if (x2d.scalar_type() == weight.scalar_type() && h.scalar_type() == weight.scalar_type()) {
        gemm_rows(x2d, h, true);
    } else {
        x2d.add_((*this)(h));
    }
}

void LayerNorm::load(WeightSource& ws, const std::string& prefix, int64_t dim, double eps_) {
    weight = ws.take(prefix + ".weight", {dim});
    bias = ws.take(prefix + ".bias", {dim});
    eps = eps_;
}

void LayerNorm::to(const at::Device& device) {
    weight = weight.to(device);
    bias = bias.to(device);
}

at::Tensor LayerNorm::operator()(const at::Tensor& x) const {
    at::Tensor xf = x.scalar_type() == at::kFloat ? x : x.to(at::kFloat);
    return at::layer_norm(xf, {weight.size(0)}, weight, bias, eps);
}

void Conv2d::load(WeightSource& ws, const std::string& prefix, int64_t in, int64_t out, int64_t kernel,
                  int64_t stride_, int64_t padding_, bool with_bias) {
    weight = ws.take(prefix + ".weight", {out, in, kernel, kernel});
    bias = with_bias ? ws.take(prefix + ".bias", {out}) : at::Tensor();
    stride = stride_;
    padding = padding_;
}

void Conv2d::to(const at::Device& device, at::ScalarType dtype, bool channels_last) {
    weight = weight.to(device, dtype).contiguous(channels_last ? at::MemoryFormat::ChannelsLast
                                                               : at::MemoryFormat::Contiguous);
    if (bias.defined()) bias = bias.to(device, dtype);
}

at::Tensor Conv2d::operator()(const at::Tensor& x) const {
    at::Tensor xin = x.scalar_type() == weight.scalar_type() ? x : x.to(weight.scalar_type());
    return at::conv2d(xin, weight, bias, {stride, stride}, {padding, padding});
}

void ConvTranspose2d::load(WeightSource& ws, const std::string& prefix, int64_t in, int64_t out,
                           int64_t kernel) {
    weight = ws.take(prefix + ".weight", {in, out, kernel, kernel});
    bias = ws.take(prefix + ".bias", {out});
    stride = kernel;  // DualDPT's up-samplers use kernel == stride, no padding
}

void ConvTranspose2d::to(const at::Device& device, bool channels_last) {
    weight = weight.to(device).contiguous(channels_last ? at::MemoryFormat::ChannelsLast
                                                        : at::MemoryFormat::Contiguous);
    bias = bias.to(device);
}

at::Tensor ConvTranspose2d::operator()(const at::Tensor& x) const {
    return at::conv_transpose2d(x, weight, bias, {stride, stride});
}

void expect_conv(WeightSource& ws, const std::string& prefix, int64_t in, int64_t out, int64_t kernel,
                 bool with_bias) {
    ws.expect_unused(prefix + ".weight", {out, in, kernel, kernel});
    if (with_bias) ws.expect_unused(prefix + ".bias", {out});
}

}  // namespace da3
