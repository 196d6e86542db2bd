// Row softmax for CPU attention scores: one fused pass structure (max, exp and sum, scale) with an
// AVX-512 exp, where the CPU has AVX-512F; ATen's softmax everywhere else.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace da3 {

// p = softmax(s) over the last dim of 2-D s (rows, len) with unit stride along it; p has s's
// shape and dtype. float32 and bfloat16 use the fused kernel when the CPU has AVX-512F (float32
// arithmetic inside, as ATen's); anything else goes to ATen.
void softmax_rows(at::Tensor& p, const at::Tensor& s);

// The fused float32 kernel on raw rows (row strides in elements); false when this CPU lacks
// AVX-512F, and then nothing is written. Exposed for its unit test.
bool softmax_rows_avx512(const float* s, int64_t s_stride, float* p, int64_t p_stride, int64_t rows, int64_t len);
// The same for bfloat16 rows (raw bits): float32 inside, each output rounded to nearest even once.
bool softmax_rows_avx512_bf16(const uint16_t* s, int64_t s_stride, uint16_t* p, int64_t p_stride, int64_t rows,
                              int64_t len);

}  // namespace da3
