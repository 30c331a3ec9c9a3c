// Fused CPU self-attention with rotary positions for inference (stemgen.model.attention).
//
// rotary_attention(qkv (B, T, 3D) bf16, cos, sin (>= T, hd/2) fp32, n_heads) -> (B, T, D) bf16 is
// the model's reference path (apply_rotary on q and k, scaled_dot_product_attention without a
// mask, heads back to (B, T, D)) in one kernel per (example, head):
// - rotary in fp32 from the bf16 inputs with the reference's roundings (x1 c - x2 s and
//   x1 s + x2 c as a product each and one add, built with -ffp-contract=off), rounded to bf16;
// - q k^T with AVX512-BF16 dot products (VDPBF16PS: pairs of bf16 products summed into fp32),
//   keys packed as (hd/2, T) pairs, 4 query rows x 2 blocks of 16 keys as independent chains;
// - softmax in fp32 (2^x of scores scaled by log2(e): exp2_nonpositive), the unnormalised
//   probabilities rounded to bf16 for p v as in ATen's flash attention, v packed as pairs of
//   frames, 4 rows at once;
// - the output divided by the row's sum and rounded to bf16, written as (B, T, D).
// Why: with head size 32 at T = 200 ATen's CPU flash attention runs far below the matrix rate
// (many tiny GEMM calls per head); this kernel is 4-5.5x faster there (docs/performance.md).
// Only built where ATen dispatches to AVX512 and only run where the CPU has AVX512-BF16
// (checked at run time: `supported()`); elsewhere stemgen.model.attention runs the reference.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

#if defined(CPU_CAPABILITY_AVX512)
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

// 2^x for x <= 0 (-inf included: 0), within a few ulp of fp32: 2^n * p(f) with n the nearest
// integer and f = x - n in [-1/2, 1/2], p Cephes' exp2f polynomial; below -150 the result
// rounds to 0 as exp does. Half the instructions of ATen's exp_u20, which took a fifth of the
// kernel's time at head size 32 (the scores arrive already multiplied by log2(e)).
BF16_TARGET inline __m512 exp2_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-151.0f));
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);
  __m512 p = _mm512_set1_ps(1.535336188319500e-4f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.339887440266574e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618437357674640e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550332471162809e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402264791363012e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931472028550421e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// scores of R query rows against NB blocks of 16 keys from j: R x NB independent dot-product chains
template <int R, int NB>
BF16_TARGET inline void rows_scores(const uint32_t* qp, int64_t half, const uint32_t* k_pack, int64_t Tp, int64_t j,
                                    float scale, float* scores) {
  __m512 acc[R][NB];
  for (int r = 0; r < R; ++r) for (int n = 0; n < NB; ++n) acc[r][n] = _mm512_setzero_ps();
  for (int64_t m = 0; m < half; ++m) {
    const uint32_t* kr = k_pack + m * Tp + j;
    __m512bh k[NB];
    for (int n = 0; n < NB; ++n) k[n] = (__m512bh)_mm512_loadu_si512(kr + 16 * n);
    for (int r = 0; r < R; ++r) {
      const __m512bh q = (__m512bh)_mm512_set1_epi32(int(qp[r * half + m]));
      for (int n = 0; n < NB; ++n) acc[r][n] = _mm512_dpbf16_ps(acc[r][n], k[n], q);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int n = 0; n < NB; ++n) _mm512_storeu_ps(scores + r * Tp + j + 16 * n, _mm512_mul_ps(acc[r][n], _mm512_set1_ps(scale)));
}

template <int R>
BF16_TARGET inline void block_scores(const uint32_t* qp, int64_t half, const uint32_t* k_pack, int64_t Tp, float scale,
                                     float* scores) {
  int64_t j = 0;
  for (; j + 32 <= Tp; j += 32) rows_scores<R, 2>(qp, half, k_pack, Tp, j, scale, scores);
  if (j < Tp) rows_scores<R, 1>(qp, half, k_pack, Tp, j, scale, scores);
}

// out rows = p rows (bf16, unnormalised) @ v, for R rows at once, hd in blocks of 16
template <int R>
BF16_TARGET inline void rows_pv(const uint32_t* const* p, const float* inv, const uint32_t* v_pack, int64_t T2, int64_t hd,
                                uint16_t* const* out) {
  for (int64_t d = 0; d < hd; d += 32) {
    const bool two = d + 16 < hd;
    __m512 a0[R], a1[R];
    for (int r = 0; r < R; ++r) { a0[r] = _mm512_setzero_ps(); a1[r] = _mm512_setzero_ps(); }
    for (int64_t j2 = 0; j2 < T2; ++j2) {
      const __m512bh v0 = (__m512bh)_mm512_loadu_si512(v_pack + j2 * hd + d);
      const __m512bh v1 = two ? (__m512bh)_mm512_loadu_si512(v_pack + j2 * hd + d + 16) : v0;
      for (int r = 0; r < R; ++r) {
        const __m512bh pr = (__m512bh)_mm512_set1_epi32(int(p[r][j2]));
        a0[r] = _mm512_dpbf16_ps(a0[r], v0, pr);
        if (two) a1[r] = _mm512_dpbf16_ps(a1[r], v1, pr);
      }
    }
    for (int r = 0; r < R; ++r) {
      const __m512 s = _mm512_set1_ps(inv[r]);
      _mm256_storeu_si256((__m256i*)(out[r] + d), (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(a0[r], s)));
      if (two) _mm256_storeu_si256((__m256i*)(out[r] + d + 16), (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(a1[r], s)));
    }
  }
}

BF16_TARGET
void head_attention(const uint16_t* qkv, int64_t T, int64_t row_stride, int64_t q_off, int64_t k_off, int64_t v_off,
                    int64_t hd, const float* cs, float scale, uint16_t* out, int64_t out_stride,
                    uint32_t* q_pairs, uint32_t* k_pack, uint32_t* v_pack, float* scores, uint32_t* p_pairs) {
  const int64_t half = hd / 2, Tp = (T + 15) / 16 * 16, T2 = Tp / 2;
  // rotary for q and k, 8 pairs at a time: x * (c, c) + swap(x) * (-s, s) is the model's
  // apply_rotary (x1 c - x2 s, x1 s + x2 c) in fp32 with the same roundings, then bf16 (RNE)
  const __m512i swap_idx = _mm512_set_epi32(14, 15, 12, 13, 10, 11, 8, 9, 6, 7, 4, 5, 2, 3, 0, 1);
  alignas(64) uint32_t kt[16];
  for (int64_t t = 0; t < T; ++t) {
    const uint16_t* row = qkv + t * row_stride;
    const float* c = cs + t * 2 * hd;  // (c0, c0, c1, c1, ...) then (-s0, s0, -s1, s1, ...)
    for (int64_t d = 0; d < hd; d += 16) {
      const __m512 cc = _mm512_loadu_ps(c + d), ss = _mm512_loadu_ps(c + hd + d);
      for (int which = 0; which < 2; ++which) {
        const uint16_t* x16 = row + (which ? k_off : q_off) + d;
        const __m512 x = _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x16))), 16));
        const __m512 xs = _mm512_permutexvar_ps(swap_idx, x);
        const __m256i r = (__m256i)_mm512_cvtneps_pbh(_mm512_add_ps(_mm512_mul_ps(x, cc), _mm512_mul_ps(xs, ss)));
        if (!which) {
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(q_pairs + t * half + d / 2), r);
        } else {
          _mm256_store_si256(reinterpret_cast<__m256i*>(kt), r);
          for (int m = 0; m < 8; ++m) k_pack[(d / 2 + m) * Tp + t] = kt[m];
        }
      }
    }
  }
  for (int64_t m = 0; m < half; ++m) for (int64_t t = T; t < Tp; ++t) k_pack[m * Tp + t] = 0;
  // v as pairs of consecutive frames: v_pack[j2][d] = (v[2 j2][d], v[2 j2 + 1][d])
  const __m512i pair_idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                            23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m256i zero16 = _mm256_setzero_si256();
  for (int64_t j2 = 0; j2 < T2; ++j2) {
    const uint16_t* lo = qkv + (2 * j2) * row_stride + v_off;
    const uint16_t* hi = lo + row_stride;
    for (int64_t d = 0; d < hd; d += 16) {
      const __m256i a = 2 * j2 < T ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lo + d)) : zero16;
      const __m256i b = 2 * j2 + 1 < T ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi + d)) : zero16;
      const __m512i ab = _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
      _mm512_storeu_si512(v_pack + j2 * hd + d, _mm512_permutexvar_epi16(pair_idx, ab));
    }
  }
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  constexpr int R = 4;
  for (int64_t i0 = 0; i0 < T; i0 += R) {
    const int rows = int(std::min<int64_t>(R, T - i0));
    const uint32_t* prow[R]; uint16_t* orow[R]; float inv[R];
    const uint32_t* qb = q_pairs + i0 * half;
    switch (rows) {
      case 4: block_scores<4>(qb, half, k_pack, Tp, scale, scores); break;
      case 3: block_scores<3>(qb, half, k_pack, Tp, scale, scores); break;
      case 2: block_scores<2>(qb, half, k_pack, Tp, scale, scores); break;
      default: block_scores<1>(qb, half, k_pack, Tp, scale, scores);
    }
    for (int r = 0; r < rows; ++r) {
      const int64_t i = i0 + r;
      float* sc = scores + r * Tp;
      for (int64_t t = T; t < Tp; ++t) sc[t] = -std::numeric_limits<float>::infinity();
      __m512 mx = neg_inf;
      for (int64_t jj = 0; jj < Tp; jj += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(sc + jj));
      const __m512 vmax = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
      __m512 sum = _mm512_setzero_ps();
      uint16_t* pb = reinterpret_cast<uint16_t*>(p_pairs + r * T2);
      for (int64_t jj = 0; jj < Tp; jj += 16) {
        const __m512 e = exp2_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(sc + jj), vmax));
        sum = _mm512_add_ps(sum, e);
        _mm256_storeu_si256((__m256i*)(pb + jj), (__m256i)_mm512_cvtneps_pbh(e));
      }
      inv[r] = 1.0f / _mm512_reduce_add_ps(sum);
      prow[r] = p_pairs + r * T2;
      orow[r] = out + i * out_stride;
    }
    switch (rows) {
      case 4: rows_pv<4>(prow, inv, v_pack, T2, hd, orow); break;
      case 3: rows_pv<3>(prow, inv, v_pack, T2, hd, orow); break;
      case 2: rows_pv<2>(prow, inv, v_pack, T2, hd, orow); break;
      default: rows_pv<1>(prow, inv, v_pack, T2, hd, orow);
    }
  }
}
#endif

bool supported() {
#if defined(CPU_CAPABILITY_AVX512)
  return __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

at::Tensor rotary_attention(const at::Tensor& qkv_in, const at::Tensor& cos_in, const at::Tensor& sin_in, int64_t n_heads) {
  TORCH_CHECK(supported(), "rotary_attention: this CPU lacks AVX512-BF16 (use the reference path)");
  TORCH_CHECK(qkv_in.dim() == 3 && qkv_in.scalar_type() == at::kBFloat16 && qkv_in.size(2) % 3 == 0,
              "rotary_attention: qkv must be (B, T, 3D) bfloat16");
  const auto qkv = qkv_in.contiguous();
  const int64_t B = qkv.size(0), T = qkv.size(1), D = qkv.size(2) / 3;
  TORCH_CHECK(n_heads > 0 && D % n_heads == 0 && (D / n_heads) % 16 == 0,
              "rotary_attention: the head size must be a multiple of 16");
  const int64_t hd = D / n_heads;
  const auto cos = cos_in.contiguous(), sin = sin_in.contiguous();
  TORCH_CHECK(cos.scalar_type() == at::kFloat && sin.scalar_type() == at::kFloat && cos.dim() == 2 &&
              cos.sizes() == sin.sizes() && cos.size(0) >= T && cos.size(1) == hd / 2,
              "rotary_attention: cos and sin must be float32 (>= T, head size / 2)");
  auto out = at::empty({B, T, D}, qkv.options());
  // per frame: (c0, c0, c1, c1, ...) and (-s0, s0, -s1, s1, ...), hd floats each
  std::vector<float> cs(T * 2 * hd);
  {
    const float* c = cos.data_ptr<float>(); const float* s = sin.data_ptr<float>();
    const int64_t ch = cos.size(1);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t m = 0; m < hd / 2; ++m) {
        cs[t * 2 * hd + 2 * m] = cs[t * 2 * hd + 2 * m + 1] = c[t * ch + m];
        cs[t * 2 * hd + hd + 2 * m] = -s[t * ch + m];
        cs[t * 2 * hd + hd + 2 * m + 1] = s[t * ch + m];
      }
  }
  const uint16_t* src = reinterpret_cast<const uint16_t*>(qkv.data_ptr<at::BFloat16>());
  uint16_t* dst = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  // softmax as 2^(s log2(e) - max): the scores carry the factor log2(e) (see exp2_nonpositive)
  const float scale = 1.0f / std::sqrt(float(hd)) * 1.4426950408889634f;
  const int64_t Tp = (T + 15) / 16 * 16;
  at::parallel_for(0, B * n_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> qp(T * hd / 2), kp(Tp * hd / 2), vp(Tp / 2 * hd), pp(4 * Tp / 2);
    std::vector<float> sc(4 * Tp);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / n_heads, h = bh % n_heads;
#if defined(CPU_CAPABILITY_AVX512)
      head_attention(src + b * T * 3 * D, T, 3 * D, h * hd, D + h * hd, 2 * D + h * hd, hd,
                     cs.data(), scale, dst + b * T * D + h * hd, D,
                     qp.data(), kp.data(), vp.data(), sc.data(), pp.data());
#endif
    }
  });
  return out;
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "stemgen fused rotary self-attention (CPU, bf16)";
  m.def("supported", &supported, "whether this CPU runs the kernel (AVX512-BF16, and an AVX512 build)");
  m.def("rotary_attention", &rotary_attention, "rotary + softmax attention of (B, T, 3D) bf16 qkv -> (B, T, D)");
}
