// Fused row softmax. See softmax.hpp.
//
// Why: at DA3's multi-view sizes the attention scores are large (4 views: 0.55 G elements per
// forward, 16 views: 6.5 G) and ATen's CPU softmax costs ~0.84 ns per element on the machines
// here (AVX2 exp, three passes): 10-15% of the forward pass. This kernel keeps the three passes
// (max; exp and sum; scale) but evaluates exp on 16 lanes with AVX-512.
//
// exp(x) = 2^n * e^r with n = round(x / ln 2), r = x - n ln 2 (two-part ln 2), e^r by a degree-6
// Taylor/minimax polynomial on |r| <= ln2/2 (relative error ~2e-7, a float's rounding), and 2^n
// applied with vscalefps. Inputs are x - max(row) <= 0; below -87 the result underflows to 0 as
// expf does.
#include "worker/da3/softmax.hpp"

#include "worker/da3/introspect.h"

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

// GCC 12's AVX-512 headers seed some intrinsics with a self-initialised "undefined" register,
// which -Wmaybe-uninitialized reports once inlined here; the value is never read.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace da3 {

namespace {

__attribute__((target("avx512f"))) inline __m512 exp512(__m512 x) {
    const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
    const __m512 ln2_hi = _mm512_set1_ps(0.693359375f);
    const __m512 ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, ln2_hi, x);
    r = _mm512_fnmadd_ps(n, ln2_lo, r);
    // Cephes expf coefficients: e^r ~ 1 + r + r^2 (c0 + c1 r + ... + c5 r^5)
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
    const __m512 r2 = _mm512_mul_ps(r, r);
    y = _mm512_fmadd_ps(y, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, n);
}

// Horizontal max / sum of 16 lanes (once per row: scalar is fine).
__attribute__((target("avx512f"))) inline float lanes_max(__m512 v) {
    alignas(64) float l[16];
    _mm512_store_ps(l, v);
    float m = l[0];
    for (int i = 1; i < 16; i++) m = l[i] > m ? l[i] : m;
    return m;
}

__attribute__((target("avx512f"))) inline float lanes_sum(__m512 v) {
    alignas(64) float l[16];
    _mm512_store_ps(l, v);
    float s = 0;
    for (int i = 0; i < 16; i++) s += l[i];
    return s;
}

// Loads and stores of 16 lanes (masked for a row's tail) as float32 from float or bfloat16.
struct F32 {
    using T = float;
    __attribute__((target("avx512f"))) static __m512 load(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
    __attribute__((target("avx512f"))) static void store(float* p, __mmask16 m, __m512 v) { _mm512_mask_storeu_ps(p, m, v); }
};

struct BF16 {
    using T = uint16_t;
    // bfloat16 is the top half of a float32.
    __attribute__((target("avx512f"))) static __m512 load(const uint16_t* p, __mmask16 m) {
        const __m256i h = load_halves(m, p);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    // Round to nearest even, as ATen's float -> bfloat16 conversion does (inputs are finite).
    __attribute__((target("avx512f"))) static void store(uint16_t* p, __mmask16 m, __m512 v) {
        const __m512i bits = _mm512_castps_si512(v);
        const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
        const __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
        const __m256i h = _mm512_cvtepi32_epi16(_mm512_srli_epi32(rounded, 16));
        store_halves(p, m, h);
    }
    // AVX-512F alone has no 16-bit masked load/store: go through a small buffer for the tail.
    __attribute__((target("avx512f"))) static __m256i load_halves(__mmask16 m, const uint16_t* p) {
        if (m == 0xFFFF) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
        alignas(32) uint16_t buf[16] = {0};
        for (int i = 0; i < 16; i++)
            if (m >> i & 1) buf[i] = p[i];
        return _mm256_load_si256(reinterpret_cast<const __m256i*>(buf));
    }
    __attribute__((target("avx512f"))) static void store_halves(uint16_t* p, __mmask16 m, __m256i h) {
        if (m == 0xFFFF) {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), h);
            return;
        }
        alignas(32) uint16_t buf[16];
        _mm256_store_si256(reinterpret_cast<__m256i*>(buf), h);
        for (int i = 0; i < 16; i++)
            if (m >> i & 1) p[i] = buf[i];
    }
};

// The lanes a 16-wide step covers when `left` elements of the row remain.
inline __mmask16 lanes_left(int64_t left) {
    return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
}

// One row: max; exp(x - max) and its sum (exp values kept as float32 in the output row when it
// is float32, recomputed for bfloat16 so that only the final value is rounded); scale by 1/sum.
template <class IO>
__attribute__((target("avx512f"))) void softmax_row(const typename IO::T* s, typename IO::T* p, int64_t len) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < len; i += 16) {
        const __mmask16 m = lanes_left(len - i);
        vmax = _mm512_mask_max_ps(vmax, m, vmax, IO::load(s + i, m));
    }
    const __m512 mx = _mm512_set1_ps(lanes_max(vmax));
    __m512 vsum = _mm512_setzero_ps();
    for (int64_t i = 0; i < len; i += 16) {
        const __mmask16 m = lanes_left(len - i);
        const __m512 e = exp512(_mm512_sub_ps(IO::load(s + i, m), mx));
        vsum = _mm512_mask_add_ps(vsum, m, vsum, e);
        if (std::is_same<typename IO::T, float>::value) IO::store(p + i, m, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / lanes_sum(vsum));
    for (int64_t i = 0; i < len; i += 16) {
        const __mmask16 m = lanes_left(len - i);
        const __m512 e = std::is_same<typename IO::T, float>::value ? IO::load(p + i, m)
                                                                    : exp512(_mm512_sub_ps(IO::load(s + i, m), mx));
        IO::store(p + i, m, _mm512_mul_ps(e, inv));
    }
}

bool cpu_has_avx512f() {
    static const bool has = __builtin_cpu_supports("avx512f");
    return has;
}

}  // namespace

bool softmax_rows_avx512(const float* s, int64_t s_stride, float* p, int64_t p_stride, int64_t rows, int64_t len) {
    if (!cpu_has_avx512f() || len <= 0) return false;
    for (int64_t r = 0; r < rows; r++) softmax_row<F32>(s + r * s_stride, p + r * p_stride, len);
    return true;
}

bool softmax_rows_avx512_bf16(const uint16_t* s, int64_t s_stride, uint16_t* p, int64_t p_stride, int64_t rows,
                              int64_t len) {
    if (!cpu_has_avx512f() || len <= 0) return false;
    for (int64_t r = 0; r < rows; r++) softmax_row<BF16>(s + r * s_stride, p + r * p_stride, len);
    return true;
}

void softmax_rows(at::Tensor& p, const at::Tensor& s) {
    const bool plain = s.is_cpu() && s.dim() == 2 && s.stride(1) == 1 && p.stride(1) == 1 &&
                       p.scalar_type() == s.scalar_type();
    if (plain && s.scalar_type() == at::kFloat &&
        softmax_rows_avx512(s.data_ptr<float>(), s.stride(0), p.data_ptr<float>(), p.stride(0), s.size(0), s.size(1)))
        return;
    if (plain && s.scalar_type() == at::kBFloat16 &&
        softmax_rows_avx512_bf16(reinterpret_cast<const uint16_t*>(s.data_ptr()), s.stride(0),
                                 reinterpret_cast<uint16_t*>(p.data_ptr()), p.stride(0), s.size(0), s.size(1)))
        return;
    at::_softmax_out(p, s, -1, false);
}

}  // namespace da3

#pragma GCC diagnostic pop

extern "C" int da3_softmax_check(int rows, int len, int bf16, unsigned seed, double* max_diff) {
    try {
        at::manual_seed(seed);
        const at::ScalarType dt = bf16 ? at::kBFloat16 : at::kFloat;
        // Scores like attention's: spread over tens of units, so exp spans many octaves.
        at::Tensor s = (at::randn({rows, len}) * 8).to(dt);
        at::Tensor want = at::_softmax(s, -1, false);
        at::Tensor got = at::empty_like(s);
        const bool fused = dt == at::kFloat
                               ? da3::softmax_rows_avx512(s.data_ptr<float>(), len, got.data_ptr<float>(), len, rows, len)
                               : da3::softmax_rows_avx512_bf16(reinterpret_cast<const uint16_t*>(s.data_ptr()), len,
                                                               reinterpret_cast<uint16_t*>(got.data_ptr()), len, rows, len);
        if (!fused) da3::softmax_rows(got, s);
        *max_diff = (got.to(at::kFloat) - want.to(at::kFloat)).abs().max().item<double>();
        return fused ? 1 : 0;
    } catch (...) {
        return -1;
    }
}
