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
// Where the CPU also has AMX-BF16 (Intel Xeon from Sapphire Rapids; `amx_supported()`), head sizes
// 32 and 64 run both products on AMX tiles instead (head_attention_amx), 2-3x faster again there.
//
// The same for float32 qkv (-> float32 out), for CPUs without native bf16 (AVX2 laptops and
// servers, where inference runs in float32): rotary in fp32 with the reference's roundings, q k^T
// and p v as fp32 FMA chains over 8 lanes (AVX2), softmax in fp32 with the same 2^x; no rounding
// to bf16 anywhere. Built where ATen dispatches to AVX2 or AVX512, run where the CPU has AVX2 and
// FMA (`supported_float32()`). At head size 32 ATen's fp32 flash attention and the reference's
// rotary took 5.7 of a layer's ~21 ms on one AVX2 core (docs/performance.md).

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

// Cephes' exp2f polynomial on [-1/2, 1/2], highest power first (Horner), for both kernels' 2^x
constexpr int kExp2Terms = 7;
constexpr float kExp2Poly[kExp2Terms] = {1.535336188319500e-4f, 1.339887440266574e-3f, 9.618437357674640e-3f,
                                         5.550332471162809e-2f, 2.402264791363012e-1f, 6.931472028550421e-1f, 1.0f};

#if defined(CPU_CAPABILITY_AVX512)
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

// 2^x for x <= 0 (-inf included: 0), within a few ulp of fp32: 2^n * p(f) with n the nearest
// integer and f = x - n in [-1/2, 1/2], p Cephes' exp2f polynomial. Where n < -125 the result
// (< 2^-125) is 0: no subnormal is ever made, which on Intel cores costs a microcode assist of
// ~100 cycles per instruction (padded keys, far-below-maximum scores: most rows have some; it
// made the whole kernel 1.6-1.9x slower on a Xeon). Half the instructions of ATen's exp_u20, which took a
// fifth of the kernel's time at head size 32 (the scores arrive already multiplied by log2(e)).
BF16_TARGET inline __m512 exp2_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-151.0f));
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);
  __m512 p = _mm512_set1_ps(kExp2Poly[0]);
  for (int c = 1; c < kExp2Terms; ++c) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2Poly[c]));
  return _mm512_maskz_scalef_ps(_mm512_cmp_ps_mask(n, _mm512_set1_ps(-125.0f), _CMP_GE_OQ), p, n);
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

// rotary q and k and the packing of one head: q_pairs (Tq, hd/2) rotated q rows as bf16 pairs (rows
// T..Tq zero), k_pack (hd/2, Tp) rotated keys as pairs of features (VNNI layout: key columns,
// padded with zeros to Tp), v_pack (Tp/2, hd) v as pairs of consecutive frames (zero beyond T)
BF16_TARGET
void pack_head(const uint16_t* qkv, int64_t T, int64_t Tq, int64_t Tp, int64_t row_stride, int64_t q_off, int64_t k_off,
               int64_t v_off, int64_t hd, const float* cs, uint32_t* q_pairs, uint32_t* k_pack, uint32_t* v_pack) {
  const int64_t half = hd / 2, T2 = Tp / 2;
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
  std::fill(q_pairs + T * half, q_pairs + Tq * half, 0u);
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
}

// softmax numerator of one row of raw scores sc (T real, padded to Tp with anything): 2^(sc scale -
// max), scale carrying log2(e), rounded to bf16 into p (Tp values, 0 beyond T); returns 1 / sum
BF16_TARGET inline float softmax_row(float* sc, int64_t T, int64_t Tp, float scale, uint16_t* p) {
  for (int64_t t = T; t < Tp; ++t) sc[t] = -std::numeric_limits<float>::infinity();
  const __m512 s = _mm512_set1_ps(scale);
  __m512 mx = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t jj = 0; jj < Tp; jj += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(sc + jj));
  const __m512 vmax = _mm512_mul_ps(_mm512_set1_ps(_mm512_reduce_max_ps(mx)), s);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t jj = 0; jj < Tp; jj += 16) {
    const __m512 e = exp2_nonpositive(_mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(sc + jj), s), vmax));
    sum = _mm512_add_ps(sum, e);
    _mm256_storeu_si256((__m256i*)(p + jj), (__m256i)_mm512_cvtneps_pbh(e));
  }
  return 1.0f / _mm512_reduce_add_ps(sum);
}

BF16_TARGET
void head_attention(const uint16_t* qkv, int64_t T, int64_t row_stride, int64_t q_off, int64_t k_off, int64_t v_off,
                    int64_t hd, const float* cs, float scale, uint16_t* out, int64_t out_stride,
                    uint32_t* q_pairs, uint32_t* k_pack, uint32_t* v_pack, float* scores, uint32_t* p_pairs) {
  const int64_t half = hd / 2, Tp = (T + 15) / 16 * 16, T2 = Tp / 2;
  pack_head(qkv, T, T, Tp, row_stride, q_off, k_off, v_off, hd, cs, q_pairs, k_pack, v_pack);
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
      // the scores are already scaled (rows_scores)
      inv[r] = softmax_row(scores + r * Tp, T, Tp, 1.0f, reinterpret_cast<uint16_t*>(p_pairs + r * T2));
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

// The same head on AMX tiles (Intel Xeon from Sapphire Rapids): q k^T and p v as 16 x 16 tile
// products with 32 bf16 per row (TDPBF16PS: 16 x 16 x 32 multiply-adds into fp32, the VNNI pair
// layouts of pack_head being AMX's B operand), the softmax as above on 16 rows at a time. Head sizes
// 32 and 64 (one or two K tiles); Tp a multiple of 32 (p v runs over 32 frames a tile).
// Tile registers: 0-3 accumulators, 4-5 q (two K halves) or p, 6-7 k or v (two, so that a load
// need not wait for the product that reads the other).
#define AMX_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")))

struct alignas(64) TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// every tile 16 rows x 64 bytes (16 fp32, or 32 bf16 as 16 pairs)
AMX_TARGET void amx_configure() {
  TileConfig cfg{};
  cfg.palette = 1;
  for (int i = 0; i < 8; ++i) { cfg.colsb[i] = 64; cfg.rows[i] = 16; }
  // not _tile_loadconfig: GCC 12's declares only 8 of the 64 bytes as read, and drops the rest's stores
  asm volatile("ldtilecfg %0" :: "m"(cfg));
}

AMX_TARGET void amx_release() { _tile_release(); }

// the compiler must not move plain stores that a tile load reads past it (the tile intrinsics are
// asm statements that do not declare the memory they read)
#define MEMORY_BARRIER() asm volatile("" ::: "memory")

AMX_TARGET
void head_attention_amx(const uint16_t* qkv, int64_t T, int64_t row_stride, int64_t q_off, int64_t k_off, int64_t v_off,
                        int64_t hd, const float* cs, float scale, uint16_t* out, int64_t out_stride,
                        uint32_t* q_pairs, uint32_t* k_pack, uint32_t* v_pack, float* scores, uint32_t* p_pairs,
                        float* o_tile) {
  const int64_t half = hd / 2, Tq = (T + 15) / 16 * 16, Tp = (T + 31) / 32 * 32, T2 = Tp / 2;
  pack_head(qkv, T, Tq, Tp, row_stride, q_off, k_off, v_off, hd, cs, q_pairs, k_pack, v_pack);
  MEMORY_BARRIER();
  const bool wide = hd == 64;
  const long q_stride = half * 4, k_stride = Tp * 4, s_stride = Tp * 4, p_stride = T2 * 4, v_stride = hd * 4;
  for (int64_t i0 = 0; i0 < Tq; i0 += 16) {
    const int rows = int(std::min<int64_t>(16, T - i0));
    _tile_loadd(4, q_pairs + i0 * half, q_stride);
    if (wide) _tile_loadd(5, q_pairs + i0 * half + 16, q_stride);
    for (int64_t j = 0; j < Tp; j += 32) {  // two blocks of 16 keys
      _tile_zero(0); _tile_zero(1);
      _tile_loadd(6, k_pack + j, k_stride);
      _tile_loadd(7, k_pack + j + 16, k_stride);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      if (wide) {
        _tile_loadd(6, k_pack + 16 * Tp + j, k_stride);
        _tile_loadd(7, k_pack + 16 * Tp + j + 16, k_stride);
        _tile_dpbf16ps(0, 5, 6);
        _tile_dpbf16ps(1, 5, 7);
      }
      _tile_stored(0, scores + j, s_stride);
      _tile_stored(1, scores + j + 16, s_stride);
    }
    float inv[16];
    for (int r = 0; r < 16; ++r)  // rows past T: zero q, finite scores, outputs never written
      inv[r] = softmax_row(scores + r * Tp, T, Tp, scale, reinterpret_cast<uint16_t*>(p_pairs + r * T2));
    MEMORY_BARRIER();
    _tile_zero(0); _tile_zero(1);
    if (wide) { _tile_zero(2); _tile_zero(3); }
    for (int64_t f = 0; f < T2; f += 16) {  // 32 frames: 16 frame pairs
      _tile_loadd(4, p_pairs + f, p_stride);
      _tile_loadd(6, v_pack + f * hd, v_stride);
      _tile_loadd(7, v_pack + f * hd + 16, v_stride);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      if (wide) {
        _tile_loadd(6, v_pack + f * hd + 32, v_stride);
        _tile_loadd(7, v_pack + f * hd + 48, v_stride);
        _tile_dpbf16ps(2, 4, 6);
        _tile_dpbf16ps(3, 4, 7);
      }
    }
    _tile_stored(0, o_tile, v_stride);
    _tile_stored(1, o_tile + 16, v_stride);
    if (wide) { _tile_stored(2, o_tile + 32, v_stride); _tile_stored(3, o_tile + 48, v_stride); }
    for (int r = 0; r < rows; ++r) {
      const __m512 s = _mm512_set1_ps(inv[r]);
      uint16_t* o = out + (i0 + r) * out_stride;
      for (int64_t d = 0; d < hd; d += 16)
        _mm256_storeu_si256((__m256i*)(o + d), (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(o_tile + r * hd + d), s)));
    }
  }
}
#endif

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
#define F32_TARGET __attribute__((target("avx2,fma")))

// 2^x for x <= 0 (-inf included: 0) in 8 lanes: Cephes' exp2f polynomial as above, 2^n built in
// the exponent field; where n < -125 the field is 0 and the result exactly 0, never a subnormal
// (as exp2_nonpositive; x is clamped at -127 first so that -inf, padded keys, stays finite).
F32_TARGET inline __m256 exp2_nonpositive8(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-127.0f));
  const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(x, n);
  __m256 p = _mm256_set1_ps(kExp2Poly[0]);
  for (int c = 1; c < kExp2Terms; ++c) p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2Poly[c]));
  const __m256 low = _mm256_cmp_ps(n, _mm256_set1_ps(-125.0f), _CMP_LT_OQ);
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(_mm256_blendv_ps(n, _mm256_set1_ps(-127.0f), low)),
                                                       _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

F32_TARGET inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}

F32_TARGET inline float hsum8(__m256 v) {
  __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_add_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_add_ss(m, _mm_shuffle_ps(m, m, 1)));
}

// scores of R query rows (rotated, (R, hd)) against NB blocks of 8 keys from j (k_t: (hd, Tp))
template <int R, int NB>
F32_TARGET inline void rows_scores_f32(const float* q, int64_t hd, const float* k_t, int64_t Tp, int64_t j,
                                       float scale, float* scores) {
  __m256 acc[R][NB];
  for (int r = 0; r < R; ++r) for (int n = 0; n < NB; ++n) acc[r][n] = _mm256_setzero_ps();
  for (int64_t m = 0; m < hd; ++m) {
    const float* kr = k_t + m * Tp + j;
    __m256 k[NB];
    for (int n = 0; n < NB; ++n) k[n] = _mm256_loadu_ps(kr + 8 * n);
    for (int r = 0; r < R; ++r) {
      const __m256 qb = _mm256_broadcast_ss(q + r * hd + m);
      for (int n = 0; n < NB; ++n) acc[r][n] = _mm256_fmadd_ps(qb, k[n], acc[r][n]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int n = 0; n < NB; ++n) _mm256_storeu_ps(scores + r * Tp + j + 8 * n, _mm256_mul_ps(acc[r][n], _mm256_set1_ps(scale)));
}

template <int R>
F32_TARGET inline void block_scores_f32(const float* q, int64_t hd, const float* k_t, int64_t Tp, float scale, float* scores) {
  int64_t j = 0;
  for (; j + 16 <= Tp; j += 16) rows_scores_f32<R, 2>(q, hd, k_t, Tp, j, scale, scores);
  if (j < Tp) rows_scores_f32<R, 1>(q, hd, k_t, Tp, j, scale, scores);
}

// out rows = p rows (unnormalised, (R, >= T)) @ v ((T, hd) rows of qkv), times inv, hd in blocks of 16
template <int R>
F32_TARGET inline void rows_pv_f32(const float* p, int64_t Tp, const float* v, int64_t row_stride, int64_t T, int64_t hd,
                                   const float* inv, float* const* out) {
  for (int64_t d = 0; d < hd; d += 16) {
    __m256 a0[R], a1[R];
    for (int r = 0; r < R; ++r) { a0[r] = _mm256_setzero_ps(); a1[r] = _mm256_setzero_ps(); }
    for (int64_t j = 0; j < T; ++j) {
      const float* vr = v + j * row_stride + d;
      const __m256 v0 = _mm256_loadu_ps(vr), v1 = _mm256_loadu_ps(vr + 8);
      for (int r = 0; r < R; ++r) {
        const __m256 pr = _mm256_broadcast_ss(p + r * Tp + j);
        a0[r] = _mm256_fmadd_ps(pr, v0, a0[r]);
        a1[r] = _mm256_fmadd_ps(pr, v1, a1[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      const __m256 s = _mm256_set1_ps(inv[r]);
      _mm256_storeu_ps(out[r] + d, _mm256_mul_ps(a0[r], s));
      _mm256_storeu_ps(out[r] + d + 8, _mm256_mul_ps(a1[r], s));
    }
  }
}

// query rows per block: 6 rows x 2 vectors of accumulators (12 of the 16 ymm registers), so that
// each loaded key or value vector feeds 6 FMAs
constexpr int kRowsF32 = 6;

F32_TARGET
void head_attention_f32(const float* qkv, int64_t T, int64_t row_stride, int64_t q_off, int64_t k_off, int64_t v_off,
                        int64_t hd, const float* cs, float scale, float* out, int64_t out_stride,
                        float* q_rot, float* k_t, float* scores) {
  const int64_t Tp = (T + 7) / 8 * 8;
  // rotary, 4 pairs at a time: x * (c, c) + swap(x) * (-s, s), the reference's products and add
  alignas(32) float kt[8];
  for (int64_t t = 0; t < T; ++t) {
    const float* row = qkv + t * row_stride;
    const float* c = cs + t * 2 * hd;
    for (int64_t d = 0; d < hd; d += 8) {
      const __m256 cc = _mm256_loadu_ps(c + d), ss = _mm256_loadu_ps(c + hd + d);
      for (int which = 0; which < 2; ++which) {
        const __m256 x = _mm256_loadu_ps(row + (which ? k_off : q_off) + d);
        const __m256 xs = _mm256_permute_ps(x, 0xB1);  // (x1, x0, x3, x2, ...)
        const __m256 r = _mm256_add_ps(_mm256_mul_ps(x, cc), _mm256_mul_ps(xs, ss));
        if (!which) {
          _mm256_storeu_ps(q_rot + t * hd + d, r);
        } else {
          _mm256_store_ps(kt, r);
          for (int m = 0; m < 8; ++m) k_t[(d + m) * Tp + t] = kt[m];
        }
      }
    }
  }
  for (int64_t m = 0; m < hd; ++m) for (int64_t t = T; t < Tp; ++t) k_t[m * Tp + t] = 0.0f;
  const float* v = qkv + v_off;
  for (int64_t i0 = 0; i0 < T; i0 += kRowsF32) {
    const int rows = int(std::min<int64_t>(kRowsF32, T - i0));
    const float* qb = q_rot + i0 * hd;
    switch (rows) {
      case 6: block_scores_f32<6>(qb, hd, k_t, Tp, scale, scores); break;
      case 5: block_scores_f32<5>(qb, hd, k_t, Tp, scale, scores); break;
      case 4: block_scores_f32<4>(qb, hd, k_t, Tp, scale, scores); break;
      case 3: block_scores_f32<3>(qb, hd, k_t, Tp, scale, scores); break;
      case 2: block_scores_f32<2>(qb, hd, k_t, Tp, scale, scores); break;
      default: block_scores_f32<1>(qb, hd, k_t, Tp, scale, scores);
    }
    float inv[kRowsF32]; float* orow[kRowsF32];
    for (int r = 0; r < rows; ++r) {
      float* sc = scores + r * Tp;
      for (int64_t t = T; t < Tp; ++t) sc[t] = -std::numeric_limits<float>::infinity();
      __m256 mx = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
      for (int64_t jj = 0; jj < Tp; jj += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(sc + jj));
      const __m256 vmax = _mm256_set1_ps(hmax8(mx));
      __m256 sum = _mm256_setzero_ps();
      for (int64_t jj = 0; jj < Tp; jj += 8) {
        const __m256 e = exp2_nonpositive8(_mm256_sub_ps(_mm256_loadu_ps(sc + jj), vmax));
        sum = _mm256_add_ps(sum, e);
        _mm256_storeu_ps(sc + jj, e);
      }
      inv[r] = 1.0f / hsum8(sum);
      orow[r] = out + (i0 + r) * out_stride;
    }
    switch (rows) {
      case 6: rows_pv_f32<6>(scores, Tp, v, row_stride, T, hd, inv, orow); break;
      case 5: rows_pv_f32<5>(scores, Tp, v, row_stride, T, hd, inv, orow); break;
      case 4: rows_pv_f32<4>(scores, Tp, v, row_stride, T, hd, inv, orow); break;
      case 3: rows_pv_f32<3>(scores, Tp, v, row_stride, T, hd, inv, orow); break;
      case 2: rows_pv_f32<2>(scores, Tp, v, row_stride, T, hd, inv, orow); break;
      default: rows_pv_f32<1>(scores, Tp, v, row_stride, T, hd, inv, orow);
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

// the head sizes whose bf16 products run on AMX tiles (one 16 x 32 bf16 tile row holds 32 or 64 of them
// in one or two k-steps); the one place that says so, read by Python through the binding
bool amx_head_size(int64_t hd) { return hd == 32 || hd == 64; }

// AMX-TILE and AMX-BF16 (CPUID leaf 7: EDX bits 24 and 22), and Linux's permission for this process
// to use the tile data (asked once: arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA)
bool amx_supported() {
#if defined(CPU_CAPABILITY_AVX512)
  static const bool ok = [] {
    unsigned a, b, c, d;
    if (!supported() || !__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 22))) return false;
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
  }();
  return ok;
#else
  return false;
#endif
}

bool supported_float32() {
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

at::Tensor rotary_attention(const at::Tensor& qkv_in, const at::Tensor& cos_in, const at::Tensor& sin_in, int64_t n_heads,
                            bool allow_amx) {
  TORCH_CHECK(qkv_in.dim() == 3 && qkv_in.size(2) % 3 == 0 &&
              (qkv_in.scalar_type() == at::kBFloat16 || qkv_in.scalar_type() == at::kFloat),
              "rotary_attention: qkv must be (B, T, 3D) bfloat16 or float32");
  const bool bf16 = qkv_in.scalar_type() == at::kBFloat16;
  TORCH_CHECK(!bf16 || supported(), "rotary_attention: this CPU lacks AVX512-BF16 (use the reference path)");
  TORCH_CHECK(bf16 || supported_float32(), "rotary_attention: float32 needs AVX2 and FMA (use the reference path)");
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
  // softmax as 2^(s log2(e) - max): the scores carry the factor log2(e) (see exp2_nonpositive)
  const float scale = 1.0f / std::sqrt(float(hd)) * 1.4426950408889634f;
  if (!bf16) {
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
    const float* src = qkv.data_ptr<float>();
    float* dst = out.data_ptr<float>();
    const int64_t Tp = (T + 7) / 8 * 8;
    at::parallel_for(0, B * n_heads, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> qr(T * hd), kt(hd * Tp), sc(kRowsF32 * Tp);
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / n_heads, h = bh % n_heads;
        head_attention_f32(src + b * T * 3 * D, T, 3 * D, h * hd, D + h * hd, 2 * D + h * hd, hd,
                           cs.data(), scale, dst + b * T * D + h * hd, D, qr.data(), kt.data(), sc.data());
      }
    });
#endif
    return out;
  }
  const uint16_t* src = reinterpret_cast<const uint16_t*>(qkv.data_ptr<at::BFloat16>());
  uint16_t* dst = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
#if defined(CPU_CAPABILITY_AVX512)
  if (allow_amx && amx_head_size(hd) && amx_supported()) {
    const int64_t Tq = (T + 15) / 16 * 16, Tp = (T + 31) / 32 * 32;
    at::parallel_for(0, B * n_heads, 1, [&](int64_t begin, int64_t end) {
      std::vector<uint32_t> qp(Tq * hd / 2), kp(Tp * hd / 2), vp(Tp / 2 * hd), pp(16 * Tp / 2);
      std::vector<float> sc(16 * Tp), ot(16 * hd);
      amx_configure();  // tile state is per thread
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / n_heads, h = bh % n_heads;
        head_attention_amx(src + b * T * 3 * D, T, 3 * D, h * hd, D + h * hd, 2 * D + h * hd, hd, cs.data(), scale,
                           dst + b * T * D + h * hd, D, qp.data(), kp.data(), vp.data(), sc.data(), pp.data(), ot.data());
      }
      amx_release();
    });
    return out;
  }
#endif
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
  m.doc() = "stemgen fused rotary self-attention (CPU, bf16 and float32)";
  m.def("supported", &supported, "whether this CPU runs the bf16 kernel (AVX512-BF16, and an AVX512 build)");
  m.def("supported_float32", &supported_float32, "whether this CPU runs the float32 kernel (AVX2 and FMA, and an "
        "AVX2 or AVX512 build)");
  m.def("amx_supported", &amx_supported, "whether this CPU and OS run the bf16 kernel on AMX tiles (head sizes 32 and 64)");
  m.def("amx_head_size", &amx_head_size, "whether the bf16 kernel runs this head size on AMX tiles (where amx_supported)");
  m.def("rotary_attention", &rotary_attention, "rotary + softmax attention of (B, T, 3D) bf16 or float32 qkv -> (B, T, D); "
        "allow_amx: bf16 on AMX tiles where the CPU has them", py::arg("qkv"), py::arg("cos"), py::arg("sin"),
        py::arg("n_heads"), py::arg("allow_amx") = true);
}
