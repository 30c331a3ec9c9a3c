// Fused CPU kernels for one decoding step after the forward pass (stemgen.sampling.fused).
//
// candidates: per masked position (b, t), one walk over the V codes of the G = 1 or 3 guidance
// branches' logits rows, held in a per-thread scratch of (G + 2) x V floats: per-branch
// log-softmax, the eq. 3 combination, renormalisation, temperature, and the candidate drawn by
// inverse transform sampling from the one uniform number of that position, with its
// probability. No [B, T, V] intermediate is written. Already decoded positions are skipped (they
// never compete).
//
// rank_commit: per example, the causal-bias score rho = w_c c + w_s (1 - t/T) + w_r U of each
// masked position and a selection (nth_element) of the n_masked - remain best, committed.
//
// The arithmetic follows the eager reference (stemgen/sampling/steps.py) operation by operation,
// with the same vectorised exp/log for every per-code value (ATen's Vectorized, SLEEF), and the
// cumulative sum taken as ATen's CPU cumsum takes it (in order, in double, each partial sum
// rounded to float), except for the softmax normalisers: their sums are taken in another order and
// with ATen's faster exp_u20, and the tempered distribution's normaliser is known without a pass
// when there is no division by the temperature (see Tempered); they differ from eager by about
// 1e-6 relative, a constant per row, which moves a drawn code only where the uniform number falls
// within about that much of the boundary between two codes. The tempered values are recomputed
// where they are needed rather than stored. Built with -ffp-contract=off so no FMA changes the
// rounding.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
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

Tempered tempered_of(const float* c, int64_t V, float mc, float lsc, double temperature) {
  Tempered t{c, V, mc, lsc, static_cast<float>(temperature), 0.f, 0.f, temperature > 0 && temperature != 1.0};
  t.mp = t.pre_of(mc);
  if (t.divide) {
    const float s = at::vec::map_reduce_all<float>(
        [&t](Vec x) { return ((((x - Vec(t.mc)) - Vec(t.lsc)) / Vec(t.temp)) - Vec(t.mp)).exp_u20(); },
        [](Vec a, Vec b) { return a + b; }, c, V);
    t.lsp = std::log(s);
  } else {
    t.lsp = lsc;
  }
  return t;
}

// The inverse-transform candidate, as steps.inverse_cdf computes it: p(v) = exp(tempered(v)) with
// the same vectorised exp, partial sums in order in double rounded to float (ATen's CPU cumsum of
// float32), total the last of them; the first code whose partial sum exceeds u * total (a float
// product, as in eager), and never past the first code whose partial sum reaches total (so a code
// of probability 0 is never drawn).
int64_t inverse_cdf_sample(const Tempered& tp, float u, std::vector<float>& p) {
  constexpr int64_t W = Vec::size();
  const int64_t V = tp.V;
  p.resize((V + W - 1) / W * W);
  for (int64_t v = 0; v < V; v += W) tp.at(v).exp().store(p.data() + v, std::min<int64_t>(W, V - v));
  double acc = 0.0;
  for (int64_t v = 0; v < V; ++v) acc += p[v];
  const float total = static_cast<float>(acc);
  const float threshold = u * total;
  acc = 0.0;
  for (int64_t v = 0; v < V; ++v) {
    acc += p[v];
    const float cdf = static_cast<float>(acc);
    if (cdf > threshold || cdf >= total) return v;
  }
  return V - 1;  // not reached: the last partial sum is total
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

template <typename scalar_t>
void candidates_kernel(const scalar_t* logits, const int64_t* current, const float* noise, int64_t G, int64_t B,
                       int64_t T, int64_t V, float la, float li, float lu, double temperature, int64_t mask_id,
                       int64_t* tokens, float* confidence) {
  constexpr int64_t W = Vec::size();
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
    // rows: G branch rows (when converted) and the combined row, padded to whole vectors
    const int64_t stride = (V + W - 1) / W * W;
    std::vector<float> buf((G + 1) * stride, 0.f);
    std::vector<float> probs;
    const float* row[3];
    float m[3], ls[3];
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
      const float mc = row_max(c, V);
      const Tempered tp = tempered_of(c, V, mc, log_sum_exp_shifted(c, V, mc), temperature);
      int64_t best;
      if (temperature > 0) {
        best = inverse_cdf_sample(tp, noise[p], probs);
      } else {
        best = argmax_of([&tp](int64_t v) { return tp.at(v); }, V);
      }
      tokens[p] = best;
      confidence[p] = std::exp(tp.at_scalar(best));
    }
  });
}

void check_candidates(const at::Tensor& logits, const at::Tensor& current, const at::Tensor& noise) {
  TORCH_CHECK(logits.dim() == 3 && current.dim() == 2, "candidates: logits (G*B, T, V) and current (B, T)");
  const int64_t B = current.size(0);
  TORCH_CHECK(logits.size(0) == B || logits.size(0) == 3 * B,
              "candidates: logits must hold 1 or 3 guidance branches of the batch, got ", logits.size(0), " rows for B=", B);
  TORCH_CHECK(logits.size(1) == current.size(1), "candidates: logits and current disagree on T");
  TORCH_CHECK(noise.sizes() == current.sizes(), "candidates: noise must be (B, T), one uniform number per position");
  TORCH_CHECK(noise.scalar_type() == at::kFloat, "candidates: noise must be float32");
  TORCH_CHECK(current.scalar_type() == at::kLong, "candidates: current must be int64");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> candidates(const at::Tensor& logits_in, const at::Tensor& current_in,
                                              const at::Tensor& noise_in, double lambda_context,
                                              double lambda_instrument, double temperature, int64_t mask_id) {
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
                                T, V, la, li, lu, temperature, mask_id, tokens.data_ptr<int64_t>(),
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

int64_t vector_width() { return Vec::size(); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "stemgen fused sampling step (CPU)";
  m.def("vector_width", &vector_width, "floats per SIMD vector the kernels were built for");
  m.def("candidates", &candidates, "guided, tempered candidates (inverse transform sampling) and their probability at masked positions");
  m.def("rank_commit", &rank_commit, "causal-bias ranking and commit of the top-ranked masked positions");
}
