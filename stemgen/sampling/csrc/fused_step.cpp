// Fused CPU kernels for one decoding step after the forward pass (stemgen.sampling.fused).
//
// candidates: per masked position (b, t), one walk over the V codes of the G = 1 or 3 guidance
// branches' logits rows, held in a per-thread scratch of (G + 2) x V floats: per-branch
// log-softmax, the eq. 3 combination, renormalisation, temperature (gated by the silence code
// when one is given: steps.silence_gated), Gumbel noise made from the uniform noise passed in,
// argmax and the candidate's probability. No [B, T, V] intermediate is written. Already decoded
// positions are skipped (they never compete).
//
// rank_commit: per example, the causal-bias score rho = w_c c + w_s (1 - t/T) + w_r U of each
// masked position and a selection (nth_element) of the n_masked - remain best, committed.
//
// The arithmetic follows the eager reference (stemgen/sampling/steps.py) operation by operation,
// with the same vectorised exp/log for every per-code value (ATen's Vectorized, SLEEF), except
// for the softmax normalisers: their sums are taken in another order and with ATen's faster
// exp_u20, and the tempered distribution's normaliser is known without a pass when there is no
// division by the temperature (see Tempered); they differ from eager by about 1e-6 relative, a
// constant per row. The tempered values are recomputed where they are needed rather than stored,
// and the Gumbel argmax skips blocks of codes that provably cannot win (see gumbel_argmax), which
// leaves its result unchanged. Built with -ffp-contract=off so no FMA changes the rounding.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;

// The larger of a and b, lane by lane, in one instruction: ATen's clamp_min, not its
// NaN-propagating maximum (four). A NaN in a row still reaches the result through the row's
// normaliser sum, as it does in eager.
inline Vec vmax(const Vec& a, const Vec& b) { return at::vec::clamp_min(a, b); }

// The largest lane of v.
inline float hmax(const Vec& v) {
  return at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return vmax(a, b); }, v);
}

float row_max(const float* x, int64_t n) {
  constexpr int64_t W = Vec::size();
  if (n < 4 * W) return at::vec::reduce_all<float>([](Vec& a, Vec& b) { return vmax(a, b); }, x, n);
  // four independent accumulators: one would make every max wait for the one before
  Vec m0 = Vec::loadu(x), m1 = Vec::loadu(x + W), m2 = Vec::loadu(x + 2 * W), m3 = Vec::loadu(x + 3 * W);
  int64_t v = 4 * W;
  for (; v + 4 * W <= n; v += 4 * W) {
    m0 = vmax(m0, Vec::loadu(x + v));
    m1 = vmax(m1, Vec::loadu(x + v + W));
    m2 = vmax(m2, Vec::loadu(x + v + 2 * W));
    m3 = vmax(m3, Vec::loadu(x + v + 3 * W));
  }
  float m = hmax(vmax(vmax(m0, m1), vmax(m2, m3)));
  for (; v < n; ++v) m = std::max(m, x[v]);
  return m;
}

// log(sum exp(x - m)): ATen's log_softmax normaliser, log_softmax(x) = (x - m) - that. exp_u20
// (about 1e-6 relative) instead of the 1-ulp exp: the sum only shifts a whole row by a constant.
float log_sum_exp_shifted(const float* x, int64_t n, float m) {
  const float s = at::vec::map_reduce_all<float>(
      [m](Vec v) { return (v - Vec(m)).exp_u20(); }, [](Vec a, Vec b) { return a + b; }, x, n);
  return std::log(s);
}

// Vectorised first-occurrence argmax over f(v) for v in [0, n); f(base) gives the Vec at base.
template <typename F>
int64_t argmax_of(F f, int64_t n) {
  constexpr int64_t W = Vec::size();
  float best = -std::numeric_limits<float>::infinity();
  int64_t best_idx = -1;
  int64_t v = 0;
  if (n >= W) {
    Vec top(-std::numeric_limits<float>::infinity());
    Vec vidx(0.f);
    float lane[W];
    for (int64_t k = 0; k < W; ++k) lane[k] = static_cast<float>(k);
    Vec idx = Vec::loadu(lane);
    const Vec step(static_cast<float>(W));
    for (; v + W <= n; v += W) {
      const Vec z = f(v);
      const Vec gt = z > top;  // strict: an earlier index keeps a tie within a lane
      top = Vec::blendv(top, z, gt);
      vidx = Vec::blendv(vidx, idx, gt);
      idx = idx + step;
    }
    float mx[W], ix[W];
    top.store(mx);
    vidx.store(ix);
    for (int64_t k = 0; k < W; ++k) {
      const int64_t i = static_cast<int64_t>(ix[k]);
      if (mx[k] > best || (mx[k] == best && i < best_idx) || best_idx < 0) { best = mx[k]; best_idx = i; }
    }
  }
  if (v < n) {  // the tail, through a padded vector
    float z[Vec::size()];
    f(v).store(z);
    for (int64_t k = 0; v + k < n; ++k)
      if (z[k] > best || best_idx < 0) { best = z[k]; best_idx = v + k; }
  }
  return best_idx;
}

// Loads up to Vec::size() floats at x + v; past n the lanes are padding (never selected).
inline Vec load(const float* x, int64_t v, int64_t n) {
  return v + Vec::size() <= n ? Vec::loadu(x + v) : Vec::loadu(x + v, n - v);
}

// Block maxima bm[k] of x over the whole blocks of K codes (k < n / K); returns the row's max.
constexpr int64_t kBlockVecs = 4;  // block size K = kBlockVecs vectors of codes

float block_maxima(const float* x, int64_t n, float* bm) {
  constexpr int64_t W = Vec::size(), K = kBlockVecs * W;
  const int64_t nb = n / K;
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t k = 0; k < nb; ++k) {
    Vec mx = Vec::loadu(x + k * K);
    for (int64_t j = W; j < K; j += W) mx = vmax(mx, Vec::loadu(x + k * K + j));
    bm[k] = hmax(mx);
    m = std::max(m, bm[k]);
  }
  for (int64_t v = nb * K; v < n; ++v) m = std::max(m, x[v]);
  return m;
}

// The tempered log-probabilities of one position, from the combined row c:
//   lp(v) = (c(v) - mc) - lsc                      the guided log-probabilities (eager's log_softmax)
//   pre(v) = lp(v) / temp   (lp(v) when temp is 1 or the argmax is taken: dividing by 1 is exact)
//   tempered(v) = (pre(v) - mp) - lsp              eager's log_softmax of pre
// computed at each use instead of stored. Two normalisers are known without a pass: mp, because
// every step is monotone, so max pre = pre(mc) = (0 - lsc) / temp exactly; and, without the
// division, lsp: then pre - mp = lp + lsc, which is c - mc up to rounding, so lsp is lsc up to the
// same ~1e-6 by which every normaliser sum here differs from eager's (a constant per row).
struct Tempered {
  const float* c;
  int64_t V;
  float mc, lsc, temp, mp, lsp;
  bool divide;

  Vec pre(int64_t v) const {
    const Vec lp = (load(c, v, V) - Vec(mc)) - Vec(lsc);
    return divide ? lp / Vec(temp) : lp;
  }
  float pre_of(float cv) const {
    const float lp = (cv - mc) - lsc;
    return divide ? lp / temp : lp;
  }
  Vec at(int64_t v) const { return (pre(v) - Vec(mp)) - Vec(lsp); }
  float at_scalar(int64_t v) const { return (pre_of(c[v]) - mp) - lsp; }
};

// top: the row's largest value (mc, unless the row is the guided row with the silence code
// removed, whose largest value may be below mc).
// renormalise: take the normaliser's pass even without a division (a row that is not the one
// lsc normalises: the guided row without the silence code).
Tempered tempered_of(const float* c, int64_t V, float mc, float lsc, double temperature, float top,
                     bool renormalise = false) {
  Tempered t{c, V, mc, lsc, static_cast<float>(temperature), 0.f, 0.f, temperature > 0 && temperature != 1.0};
  t.mp = t.pre_of(top);
  if (t.divide || renormalise) {
    const float s = at::vec::map_reduce_all<float>(
        [&t](Vec x) { return ((((x - Vec(t.mc)) - Vec(t.lsc)) / Vec(t.temp)) - Vec(t.mp)).exp_u20(); },
        [](Vec a, Vec b) { return a + b; }, c, V);
    t.lsp = std::log(s);
  } else {
    t.lsp = lsc;
  }
  return t;
}

// The Gumbel-max candidate: first-occurrence argmax over v of
//   z(v) = tempered(v) + g(u(v)),   g(x) = -log(-log(clamp(x, lo, hi))),
// z computed exactly as the eager reference computes it, but only in the blocks that can hold
// the winner. Both terms are monotone, so z in a block is at most the same formula applied to
// the block's largest c (bc, from block_maxima) and largest u; a block whose bound is below an
// exact z already seen is skipped without evaluating its logarithms. The bound carries a margin
// for rounding. On a peaked distribution almost every block is skipped; on a flat one, most
// after the first.
int64_t gumbel_argmax(const Tempered& tp, const float* bc, const float* u, float lo, float hi,
                      std::vector<float>& scratch) {
  constexpr int64_t W = Vec::size();
  constexpr int64_t K = kBlockVecs * W;
  const int64_t V = tp.V;
  auto z_at = [&](int64_t v) {
    const Vec x = at::vec::clamp(load(u, v, V), Vec(lo), Vec(hi));
    return tp.at(v) + (-((-(x.log())).log()));
  };
  const int64_t nb = V / K;  // whole blocks; the tail is always evaluated
  if (nb < 2) return argmax_of(z_at, V);
  scratch.resize(3 * nb);
  float *bt = scratch.data(), *bu = scratch.data() + nb, *bound = scratch.data() + 2 * nb;
  for (int64_t k = 0; k < nb; ++k) {
    Vec mu = Vec::loadu(u + k * K);
    for (int64_t j = W; j < K; j += W) mu = vmax(mu, Vec::loadu(u + k * K + j));
    bu[k] = hmax(mu);
    bt[k] = (tp.pre_of(bc[k]) - tp.mp) - tp.lsp;  // the block's largest tempered value, exactly
  }
  at::vec::map2(
      [lo, hi](Vec a, Vec x) {
        const Vec c = at::vec::clamp(x, Vec(lo), Vec(hi));
        return a + (-((-(c.log())).log()));
      },
      bound, bt, bu, nb);
  float best = -std::numeric_limits<float>::infinity();
  int64_t best_idx = -1;
  // A second, per-vector test: no tempered value exceeds tmax = (mp - mp) - lsp = -lsp, so a
  // lane can only beat `best` if g(u) >= best - tmax, i.e. u >= ustar = g^-1(best - tmax),
  // computed in double with a margin and rounded down.
  const double tmax = -static_cast<double>(tp.lsp);
  float ustar = 0.f, reach = -std::numeric_limits<float>::infinity();
  const float slack = 1e-5f;
  const int full = (1 << W) - 1;
  auto visit = [&](int64_t start, int64_t stop) {  // exact z on [start, stop), stop - start <= K
    float z[W];
    for (int64_t j = start; j < stop; j += W) {
      const int64_t n = std::min<int64_t>(W, stop - j);
      if (n == W) {
        // no lane can win (compared after the clamp, as g sees it): first against ustar, then
        // lane by lane, without logarithms: z(v) >= best - margin needs g(x) >= best - margin -
        // tempered(v), i.e. x >= exp(-exp(tempered(v) - (best - margin))). exp_u20 is within
        // 2e-6 of exp, which the margin covers inside and `slack` outside; a NaN never skips.
        const Vec x = at::vec::clamp(Vec::loadu(u + j), Vec(lo), Vec(hi));
        if ((x >= Vec(ustar)).zero_mask() == full) continue;
        if (best_idx >= 0) {
          const Vec need = (tp.at(j) - Vec(reach)).exp_u20().neg().exp_u20() - Vec(slack);
          if ((x < need).zero_mask() == 0) continue;
        }
      }
      z_at(j).store(z, n);
      bool improved = false;
      for (int64_t i = 0; i < n; ++i)
        if (z[i] > best || (z[i] == best && j + i < best_idx) || best_idx < 0) {
          best = z[i];
          best_idx = j + i;
          improved = true;
        }
      if (improved) {
        const double margin = 1e-3 + 1e-5 * std::abs(static_cast<double>(best));
        reach = static_cast<float>(static_cast<double>(best) - margin);
        const double g = static_cast<double>(best) - tmax - margin;
        ustar = std::nextafter(static_cast<float>(std::exp(-std::exp(-g))), 0.f);
      }
    }
  };
  int64_t pivot = 0;  // the most promising block first, so that the bound prunes from the start
  for (int64_t k = 1; k < nb; ++k)
    if (bound[k] > bound[pivot]) pivot = k;
  visit(pivot * K, pivot * K + K);
  for (int64_t k = 0; k < nb; ++k) {
    if (k == pivot) continue;
    const float margin = 1e-3f + 1e-5f * std::abs(bound[k]);
    if (bound[k] + margin < best) continue;
    visit(k * K, k * K + K);
  }
  for (int64_t v = nb * K; v < V; v += K) visit(v, std::min(V, v + K));
  return best_idx;
}

template <typename scalar_t>
const float* as_float_row(const scalar_t* src, float* scratch, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return src;
  } else {
    at::vec::convert(src, scratch, n);
    return scratch;
  }
}

// Standard Gumbel noise from one uniform number, computed as the vectorised loops compute it.
inline float gumbel_of(float u, float lo, float hi) {
  const Vec x = at::vec::clamp(Vec(u), Vec(lo), Vec(hi));
  float g[Vec::size()];
  (-((-(x.log())).log())).store(g);
  return g[0];
}

// log(1 - exp(x)) for x <= 0, with both of steps._log1mexp's branches.
inline float log1mexp(float x) {
  return x > -0.6931471805599453f ? std::log(-std::expm1(x)) : std::log1p(-std::exp(x));
}

template <typename scalar_t>
void candidates_kernel(const scalar_t* logits, const int64_t* current, const float* noise, int64_t G, int64_t B,
                       int64_t T, int64_t V, float la, float li, float lu, double temperature, int64_t mask_id,
                       int64_t silence, double silence_temperature, int64_t* tokens, float* confidence) {
  const float lo = 1e-20f, hi = static_cast<float>(1.0 - 1e-7);
  constexpr int64_t W = Vec::size();
  // the silence gate (steps.silence_gated) changes nothing when both temperatures are 1
  const double gate_t = silence_temperature >= 0 ? silence_temperature : temperature;
  const bool gated = silence >= 0 && silence < V && (temperature != 1.0 || gate_t != 1.0);
  // the masked positions, listed first so that the threads share them evenly (decoded positions
  // cost nothing, and late in a level the masked ones gather at the end)
  std::vector<int64_t> masked;
  masked.reserve(B * T);
  for (int64_t p = 0; p < B * T; ++p) {
    if (current[p] == mask_id) {
      masked.push_back(p);
    } else {
      tokens[p] = current[p];
      confidence[p] = 0.f;
    }
  }
  at::parallel_for(0, static_cast<int64_t>(masked.size()), 1, [&](int64_t begin, int64_t end) {
    // rows: G branch rows (when converted), the combined row and the combined row without the
    // silence code, padded to whole vectors
    const int64_t stride = (V + W - 1) / W * W;
    std::vector<float> buf((G + 2) * stride, 0.f);
    std::vector<float> bc(V / (kBlockVecs * W) + 1), blocks;
    const float* row[3];
    float m[3], ls[3];
    float* sounding = buf.data() + (G + 1) * stride;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t p = masked[i], b = p / T, t = p % T;
      for (int64_t g = 0; g < G; ++g)
        row[g] = as_float_row(logits + ((g * B + b) * T + t) * V, buf.data() + g * stride, V);
      // c, the row whose log_softmax gives the guided log-probabilities, and its normaliser
      const float* c = row[0];
      if (G == 3) {  // eq. 3 over the branches' log-softmax, each formed as ATen forms it
        for (int64_t g = 0; g < G; ++g) {
          m[g] = row_max(row[g], V);
          ls[g] = log_sum_exp_shifted(row[g], V, m[g]);
        }
        float* combined = buf.data() + G * stride;
        for (int64_t v = 0; v < V; v += W) {
          const Vec a = (load(row[0], v, V) - Vec(m[0])) - Vec(ls[0]);
          const Vec i = (load(row[1], v, V) - Vec(m[1])) - Vec(ls[1]);
          const Vec u = (load(row[2], v, V) - Vec(m[2])) - Vec(ls[2]);
          ((Vec(la) * a + Vec(li) * i) + Vec(lu) * u).store(combined + v, std::min<int64_t>(W, V - v));
        }
        c = combined;
      }
      const float mc = block_maxima(c, V, bc.data());
      const float lsc = log_sum_exp_shifted(c, V, mc);
      const float* u = noise + p * V;
      int64_t best;
      float log_conf;
      if (!gated) {
        const Tempered tp = tempered_of(c, V, mc, lsc, temperature, mc);
        best = temperature > 0 ? gumbel_argmax(tp, bc.data(), u, lo, hi, blocks)
                               : argmax_of([&tp](int64_t v) { return tp.at(v); }, V);
        log_conf = tp.at_scalar(best);
      } else {
        // the guided row without the silence code: what the stem plays if it sounds
        std::copy(c, c + V, sounding);
        sounding[silence] = -std::numeric_limits<float>::infinity();
        const float top = block_maxima(sounding, V, bc.data());
        const float l_silent = ((c[silence] - mc) - lsc);  // log p_s, the guided log-probability
        const float l_sound = log1mexp(l_silent);
        Tempered ts = tempered_of(sounding, V, mc, lsc, temperature, top, /*renormalise=*/temperature > 0);
        if (temperature > 0) {
          // whether it sounds: log_softmax([l_silent, l_sound] / g), a two-way choice
          const float tf = static_cast<float>(gate_t);
          const float a = l_silent / tf, s = l_sound / tf;
          const float mx = std::max(a, s);
          const float lse = std::log(std::exp(a - mx) + std::exp(s - mx));
          const float g_silent = (a - mx) - lse, g_sound = (s - mx) - lse;
          ts.lsp -= g_sound;  // every sounding code carries the gate's log-probability of sound
          const int64_t v = gumbel_argmax(ts, bc.data(), u, lo, hi, blocks);
          const float z_sound = ts.at_scalar(v) + gumbel_of(u[v], lo, hi);
          const float z_silent = g_silent + gumbel_of(u[silence], lo, hi);
          const bool silent = z_silent > z_sound || (z_silent == z_sound && silence < v);
          best = silent ? silence : v;
          log_conf = silent ? g_silent : ts.at_scalar(v);
        } else {
          best = l_silent > l_sound ? silence : argmax_of([&ts](int64_t v) { return ts.at(v); }, V);
          log_conf = tempered_of(c, V, mc, lsc, temperature, mc).at_scalar(best);  // untempered, as ungated
        }
      }
      tokens[p] = best;
      confidence[p] = std::exp(log_conf);
    }
  });
}

void check_candidates(const at::Tensor& logits, const at::Tensor& current, const at::Tensor& noise) {
  TORCH_CHECK(logits.dim() == 3 && current.dim() == 2, "candidates: logits (G*B, T, V) and current (B, T)");
  const int64_t B = current.size(0);
  TORCH_CHECK(logits.size(0) == B || logits.size(0) == 3 * B,
              "candidates: logits must hold 1 or 3 guidance branches of the batch, got ", logits.size(0), " rows for B=", B);
  TORCH_CHECK(logits.size(1) == current.size(1), "candidates: logits and current disagree on T");
  TORCH_CHECK(noise.sizes() == at::IntArrayRef({B, current.size(1), logits.size(2)}), "candidates: noise must be (B, T, V)");
  TORCH_CHECK(noise.scalar_type() == at::kFloat, "candidates: noise must be float32");
  TORCH_CHECK(current.scalar_type() == at::kLong, "candidates: current must be int64");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> candidates(const at::Tensor& logits_in, const at::Tensor& current_in,
                                              const at::Tensor& noise_in, double lambda_context,
                                              double lambda_instrument, double temperature, int64_t mask_id,
                                              int64_t silence_code, double silence_temperature) {
  check_candidates(logits_in, current_in, noise_in);
  const auto logits = logits_in.contiguous();
  const auto current = current_in.contiguous();
  const auto noise = noise_in.contiguous();
  const int64_t B = current.size(0), T = current.size(1), V = logits.size(2), G = logits.size(0) / B;
  auto tokens = at::empty({B, T}, current.options());
  auto confidence = at::empty({B, T}, noise.options());
  // the scales as the eager reference uses them: python floats applied to a float32 tensor
  const float la = static_cast<float>(lambda_context), li = static_cast<float>(lambda_instrument);
  const float lu = static_cast<float>(1.0 - lambda_context - lambda_instrument);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "stemgen_candidates", [&] {
    candidates_kernel<scalar_t>(logits.data_ptr<scalar_t>(), current.data_ptr<int64_t>(), noise.data_ptr<float>(), G, B,
                                T, V, la, li, lu, temperature, mask_id, silence_code, silence_temperature,
                                tokens.data_ptr<int64_t>(),
                                confidence.data_ptr<float>());
  });
  return {tokens, confidence};
}

at::Tensor rank_commit(const at::Tensor& current_in, const at::Tensor& candidates_in, const at::Tensor& confidence_in,
                       const at::Tensor& uniform_in, const at::Tensor& remain_in, double w_confidence,
                       double w_position, double w_random, int64_t mask_id) {
  TORCH_CHECK(current_in.dim() == 2, "rank_commit: current must be (B, T)");
  TORCH_CHECK(candidates_in.sizes() == current_in.sizes() && confidence_in.sizes() == current_in.sizes() &&
                  uniform_in.sizes() == current_in.sizes(),
              "rank_commit: current, candidates, confidence and uniform must all be (B, T)");
  TORCH_CHECK(remain_in.dim() == 1 && remain_in.size(0) == current_in.size(0), "rank_commit: remain must be (B,)");
  const auto current = current_in.contiguous();
  const auto cand = candidates_in.contiguous();
  const auto conf = confidence_in.to(at::kFloat).contiguous();
  const auto uni = uniform_in.to(at::kFloat).contiguous();
  const auto remain = remain_in.to(at::kLong).contiguous();
  const int64_t B = current.size(0), T = current.size(1);
  auto out = current.clone();
  const int64_t* cur = current.data_ptr<int64_t>();
  const int64_t* cd = cand.data_ptr<int64_t>();
  const float* c = conf.data_ptr<float>();
  const float* u = uni.data_ptr<float>();
  const int64_t* r = remain.data_ptr<int64_t>();
  int64_t* o = out.data_ptr<int64_t>();
  const float wc = static_cast<float>(w_confidence), ws = static_cast<float>(w_position), wr = static_cast<float>(w_random);
  const float tf = static_cast<float>(T);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<std::pair<float, int64_t>> ranked;
    ranked.reserve(T);
    for (int64_t b = begin; b < end; ++b) {
      ranked.clear();
      for (int64_t t = 0; t < T; ++t) {
        const int64_t p = b * T + t;
        if (cur[p] != mask_id) continue;
        const float position = 1.0f - static_cast<float>(t) / tf;
        const float score = (wc * c[p] + ws * position) + wr * u[p];
        ranked.emplace_back(score, t);
      }
      const int64_t n_masked = static_cast<int64_t>(ranked.size());
      const int64_t n_commit = std::max<int64_t>(n_masked - r[b], 0);
      if (n_commit == 0) continue;
      if (n_commit < n_masked) {
        // higher score first; an exact tie goes to the earlier frame
        std::nth_element(ranked.begin(), ranked.begin() + n_commit, ranked.end(),
                         [](const auto& x, const auto& y) { return x.first > y.first || (x.first == y.first && x.second < y.second); });
      }
      for (int64_t k = 0; k < n_commit; ++k) o[b * T + ranked[k].second] = cd[b * T + ranked[k].second];
    }
  });
  return out;
}

// MurmurHash3's 32-bit finaliser: a bijection with full avalanche.
inline uint32_t fmix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x85EBCA6Bu;
  x ^= x >> 13;
  x *= 0xC2B2AE35u;
  x ^= x >> 16;
  return x;
}

// steps.hashed_uniform: u = (h >> 8) / 2^24, h = fmix32(fmix32(t V + v) ^ seed[b]). Integer
// arithmetic and an exact conversion: the same bits as the torch reference on every machine. The
// inner loop is plain uint32 arithmetic, which the compiler vectorises.
at::Tensor hashed_uniform(const at::Tensor& seeds_in, int64_t T, int64_t V) {
  TORCH_CHECK(seeds_in.dim() == 1 && seeds_in.scalar_type() == at::kLong, "hashed_uniform: seeds must be (B,) int64");
  TORCH_CHECK(T >= 0 && V >= 0 && T * V <= (int64_t(1) << 32), "hashed_uniform: T x V must fit the 32-bit counter");
  const auto seeds = seeds_in.contiguous();
  const int64_t B = seeds.size(0);
  auto out = at::empty({B, T, V}, seeds.options().dtype(at::kFloat));
  const int64_t* s = seeds.data_ptr<int64_t>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, B * T, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const uint32_t seed = static_cast<uint32_t>(s[r / T]);
      const uint32_t base = static_cast<uint32_t>((r % T) * V);
      float* row = o + r * V;
      for (int64_t v = 0; v < V; ++v) {
        const uint32_t h = fmix32(fmix32(base + static_cast<uint32_t>(v)) ^ seed);
        row[v] = static_cast<float>(h >> 8) * (1.0f / 16777216.0f);
      }
    }
  });
  return out;
}

int64_t vector_width() { return Vec::size(); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "stemgen fused sampling step (CPU)";
  m.def("vector_width", &vector_width, "floats per SIMD vector the kernels were built for");
  m.def("candidates", &candidates, "guided, tempered Gumbel-max candidates and their probability at masked positions");
  m.def("hashed_uniform", &hashed_uniform, "counter-based uniform noise (B, T, V) from one 32-bit seed per example");
  m.def("rank_commit", &rank_commit, "causal-bias ranking and commit of the top-ranked masked positions");
}
