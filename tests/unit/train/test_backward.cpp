// Every backward kernel against central finite differences of a
// double-precision forward written out here (or, for the linear ones, against
// the exact formula), on odd sizes that cross the kernels' block edges.
#include "backend/cpu/backward.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/simd.h"
#include "../kernels/kernel_test_util.h"

#include <slm/random.h>
#include <slm/tensor.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <numbers>
#include <functional>
#include <vector>

namespace {

using slm::DType;
using slm::Tensor;
using Vec = std::vector<double>;

using slm::test::random_vector;

Vec widen(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }

// max |analytic − numeric| / max |numeric|: one figure per gradient, immune
// to the relative noise of entries that are nearly zero.
double relative_error(const std::vector<float>& analytic, const Vec& numeric) {
  double worst = 0.0, scale = 0.0;
  for (size_t i = 0; i < numeric.size(); ++i) {
    worst = std::max(worst, std::fabs(analytic[i] - numeric[i]));
    scale = std::max(scale, std::fabs(numeric[i]));
  }
  return worst / std::max(scale, 1e-30);
}

// Central differences of a scalar function of x.
Vec numeric_gradient(const std::function<double(const Vec&)>& f, Vec x, double h = 1e-6) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double up = f(x);
    x[i] = saved - h;
    const double down = f(x);
    x[i] = saved;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

double weighted_sum(const Vec& y, const std::vector<float>& c) {
  double s = 0;
  for (size_t i = 0; i < y.size(); ++i) s += y[i] * c[i];
  return s;
}

constexpr double kTolerance = 1e-4;

// Holds the kernels to the path just below those with bf16 dot products
// (avx512 below avx512bf16 and amx, neondot below neonbf16) for one scope: the exact
// checks below are for products that widen bf16 weights to f32; the bf16
// kernels have their own test.
struct WideningKernels : slm::test::IsaGuard {
  WideningKernels() {
    using slm::cpu::Isa;
    if (slm::cpu::bf16_gemm_kernels()) slm::cpu::force_isa(slm::cpu::active_isa() >= Isa::Neon ? Isa::NeonDot : Isa::Avx512);
  }
};

TEST(MatmulBackward, InputGradientForEveryWeightDtype) {
  const WideningKernels widening;
  const int64_t M = 5, N = 33;
  for (DType dtype : {DType::F32, DType::BF16, DType::F16, DType::Q8, DType::Q4}) {
    const int64_t K = slm::is_quantized(dtype) ? 160 : 70;  // not a multiple of the 64-column block
    Tensor W32 = Tensor::zeros(DType::F32, {N, K});
    const auto w = random_vector(N * K, 3);
    std::copy(w.begin(), w.end(), W32.data_as<float>());
    const Tensor W = W32.to(dtype);
    const auto dy = random_vector(M * N, 4);
    for (bool accumulate : {false, true}) {
      std::vector<float> dx(static_cast<size_t>(M * K), accumulate ? 0.5f : 1e30f);
      slm::cpu::matmul_backward_input(dy.data(), M, W, dx.data(), accumulate);
      double worst = 0;
      for (int64_t m = 0; m < M; ++m) {
        for (int64_t k = 0; k < K; ++k) {
          double want = accumulate ? 0.5 : 0.0;
          for (int64_t n = 0; n < N; ++n) want += double(dy[size_t(m * N + n)]) * W.at(n * K + k);
          worst = std::max(worst, std::fabs(want - dx[size_t(m * K + k)]));
        }
      }
      EXPECT_LT(worst, 1e-4) << slm::dtype_name(dtype) << " accumulate " << accumulate;
    }
  }
}

// bf16 weights on a CPU with bf16 dot products take the bf16 matrix kernels,
// which read W as the [K][N] operand; held to the widening path on sizes that
// cross their tiles (96 columns, 32..256 rows), packed panels (48 columns) and
// an odd reduction length.
TEST(MatmulBackward, Bf16KernelsGiveTheInputGradientOfTheWideningPath) {
  if (!slm::cpu::bf16_gemm_kernels()) GTEST_SKIP() << "no bf16 dot-product instructions on this CPU";
  for (const auto [M, N, K] : {std::array<int64_t, 3>{7, 45, 70}, {300, 129, 97}, {33, 1, 200}}) {
    Tensor W32 = Tensor::zeros(DType::F32, {N, K});
    const auto w = random_vector(N * K, 50);
    std::copy(w.begin(), w.end(), W32.data_as<float>());
    const Tensor W = W32.to(DType::BF16);
    const auto dy = random_vector(M * N, 51);
    for (bool accumulate : {false, true}) {
      std::vector<float> want(static_cast<size_t>(M * K), 0.5f), got = want;
      {
        const WideningKernels widening;
        slm::cpu::matmul_backward_input(dy.data(), M, W, want.data(), accumulate);
      }
      slm::cpu::matmul_backward_input(dy.data(), M, W, got.data(), accumulate);
      // dy rounded to bf16 (8 bits of mantissa): about 4e-3 relative.
      EXPECT_LT(relative_error(got, widen(want)), 1e-2) << M << "x" << N << "x" << K << " accumulate " << accumulate;
    }
  }
}

TEST(MatmulBackward, WeightGradientAccumulates) {
  const int64_t M = 6, N = 70, K = 19;
  const auto dy = random_vector(M * N, 5), x = random_vector(M * K, 6);
  std::vector<float> dW(static_cast<size_t>(N * K), 0.25f);
  slm::cpu::matmul_backward_weight(dy.data(), x.data(), M, N, K, dW.data(), true);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t k = 0; k < K; ++k) {
      double want = 0.25;
      for (int64_t m = 0; m < M; ++m) want += double(dy[size_t(m * N + n)]) * x[size_t(m * K + k)];
      ASSERT_NEAR(dW[size_t(n * K + k)], want, 1e-4);
    }
  }
}

TEST(RmsNormBackward, MatchesFiniteDifferences) {
  const int64_t rows = 20, dim = 37;  // 20 rows: the parallel path
  const double eps = 1e-5;
  const auto x = random_vector(rows * dim, 7, 2.0), w = random_vector(dim, 8), c = random_vector(rows * dim, 9);
  auto forward = [&](const Vec& xs, const Vec& ws) {
    Vec y(xs.size());
    for (int64_t r = 0; r < rows; ++r) {
      double ms = 0;
      for (int64_t i = 0; i < dim; ++i) ms += xs[size_t(r * dim + i)] * xs[size_t(r * dim + i)];
      const double rstd = 1 / std::sqrt(ms / dim + eps);
      for (int64_t i = 0; i < dim; ++i) y[size_t(r * dim + i)] = xs[size_t(r * dim + i)] * rstd * ws[size_t(i)];
    }
    return weighted_sum(y, c);
  };
  std::vector<float> dx(x.size(), 1.0f), dw(w.size(), 0.0f);
  slm::cpu::rmsnorm_backward(c.data(), x.data(), w.data(), 0.0f, float(eps), rows, dim, dx.data(), dw.data(), true);
  for (float& v : dx) v -= 1.0f;  // accumulated onto ones
  const Vec nx = numeric_gradient([&](const Vec& xs) { return forward(xs, widen(w)); }, widen(x));
  const Vec nw = numeric_gradient([&](const Vec& ws) { return forward(widen(x), ws); }, widen(w));
  EXPECT_LT(relative_error(dx, nx), kTolerance);
  EXPECT_LT(relative_error(dw, nw), kTolerance);
}

TEST(RopeBackward, IsTheTransposeOfRope) {
  const int64_t rows = 5, heads = 3, hd = 8, half = hd / 2;
  const auto x = random_vector(rows * heads * hd, 10), c = random_vector(rows * heads * hd, 11);
  std::vector<float> cos(static_cast<size_t>(rows * half)), sin(static_cast<size_t>(rows * half));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < half; ++i) {
      cos[size_t(r * half + i)] = std::cos(0.3f * float(r) * float(i + 1));
      sin[size_t(r * half + i)] = std::sin(0.3f * float(r) * float(i + 1));
    }
  }
  auto forward = [&](const Vec& xs) {
    std::vector<float> y(xs.begin(), xs.end());
    slm::cpu::rope(y.data(), rows, heads, hd, cos.data(), sin.data());
    return weighted_sum(widen(y), c);
  };
  std::vector<float> dx = c;
  slm::cpu::rope_backward(dx.data(), rows, heads, hd, cos.data(), sin.data());
  EXPECT_LT(relative_error(dx, numeric_gradient(forward, widen(x), 1e-2)), 1e-4);
}

TEST(SiluMulBackward, MatchesFiniteDifferences) {
  const int64_t n = 101;
  const auto gate = random_vector(n, 12, 3.0), up = random_vector(n, 13), c = random_vector(n, 14);
  auto forward = [&](const Vec& g, const Vec& u) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += g[size_t(i)] / (1 + std::exp(-g[size_t(i)])) * u[size_t(i)] * c[size_t(i)];
    return s;
  };
  std::vector<float> dgate(static_cast<size_t>(n)), dup(static_cast<size_t>(n));
  slm::cpu::silu_mul_backward(gate.data(), up.data(), c.data(), dgate.data(), dup.data(), n);
  EXPECT_LT(relative_error(dgate, numeric_gradient([&](const Vec& g) { return forward(g, widen(up)); }, widen(gate))),
            kTolerance);
  EXPECT_LT(relative_error(dup, numeric_gradient([&](const Vec& u) { return forward(widen(gate), u); }, widen(up))),
            kTolerance);
}

double gelu_tanh(double g) { return 0.5 * g * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (g + 0.044715 * g * g * g))); }

TEST(GeluTanhMulBackward, MatchesFiniteDifferences) {
  const int64_t n = 101;
  const auto gate = random_vector(n, 15, 3.0), up = random_vector(n, 16), c = random_vector(n, 17);
  auto forward = [&](const Vec& g, const Vec& u) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += gelu_tanh(g[size_t(i)]) * u[size_t(i)] * c[size_t(i)];
    return s;
  };
  std::vector<float> out(static_cast<size_t>(n)), dgate(static_cast<size_t>(n)), dup(static_cast<size_t>(n));
  slm::cpu::gelu_tanh_mul(gate.data(), up.data(), out.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    const double want = gelu_tanh(gate[size_t(i)]) * up[size_t(i)];
    EXPECT_NEAR(out[size_t(i)], want, 1e-5 * std::fabs(want) + 1e-6) << i;
  }
  slm::cpu::gelu_tanh_mul_backward(gate.data(), up.data(), c.data(), dgate.data(), dup.data(), n);
  EXPECT_LT(relative_error(dgate, numeric_gradient([&](const Vec& g) { return forward(g, widen(up)); }, widen(gate))),
            kTolerance);
  EXPECT_LT(relative_error(dup, numeric_gradient([&](const Vec& u) { return forward(widen(gate), u); }, widen(up))),
            kTolerance);
}

// Gemma's norm, x / rms(x) · (1 + w): the offset in dx, and dw as without it.
TEST(RmsNormBackward, UnitOffsetMatchesFiniteDifferences) {
  const int64_t rows = 3, dim = 9;
  const double eps = 1e-6;
  const auto x = random_vector(rows * dim, 18, 2.0), w = random_vector(dim, 19, 0.1), c = random_vector(rows * dim, 20);
  auto forward = [&](const Vec& xs, const Vec& ws) {
    double total = 0;
    for (int64_t r = 0; r < rows; ++r) {
      double ms = 0;
      for (int64_t i = 0; i < dim; ++i) ms += xs[size_t(r * dim + i)] * xs[size_t(r * dim + i)];
      const double rstd = 1 / std::sqrt(ms / dim + eps);
      for (int64_t i = 0; i < dim; ++i) {
        total += xs[size_t(r * dim + i)] * rstd * (1 + ws[size_t(i)]) * c[size_t(r * dim + i)];
      }
    }
    return total;
  };
  std::vector<float> y(x.size()), dx(x.size()), dw(w.size(), 0.0f);
  slm::cpu::rmsnorm(x.data(), w.data(), 1.0f, float(eps), rows, dim, y.data());
  double sum = 0;
  for (size_t i = 0; i < y.size(); ++i) sum += double(y[i]) * c[i];
  EXPECT_NEAR(sum, forward(widen(x), widen(w)), 1e-4);
  slm::cpu::rmsnorm_backward(c.data(), x.data(), w.data(), 1.0f, float(eps), rows, dim, dx.data(), dw.data(), false);
  EXPECT_LT(relative_error(dx, numeric_gradient([&](const Vec& xs) { return forward(xs, widen(w)); }, widen(x))),
            kTolerance);
  EXPECT_LT(relative_error(dw, numeric_gradient([&](const Vec& ws) { return forward(widen(x), ws); }, widen(w))),
            kTolerance);
}

TEST(EmbeddingBackward, ScatterAddsRepeatedIds) {
  const int64_t dim = 3;
  const int32_t ids[] = {2, 0, 2};
  const std::vector<float> dout = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  std::vector<float> table(4 * dim, 0.0f);
  slm::cpu::embedding_backward(dout.data(), ids, 3, dim, table.data());
  EXPECT_EQ(table, (std::vector<float>{4, 5, 6, 0, 0, 0, 8, 10, 12, 0, 0, 0}));
}

// Double-precision attention with the same layout and masking as the kernel.
Vec attention_reference(const Vec& q, const Vec& k, const Vec& v, const slm::SequenceAttentionShape& s,
                        Vec* lse = nullptr) {
  const int64_t hd = s.head_dim, group = s.heads / s.kv_heads, qs = s.heads * hd, ks = s.kv_heads * hd;
  Vec out(q.size(), 0.0);
  if (lse) lse->assign(size_t(s.batch * s.heads * s.seq), 0.0);
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t h = 0; h < s.heads; ++h) {
      for (int64_t i = 0; i < s.seq; ++i) {
        std::vector<double> score(static_cast<size_t>(s.seq), -INFINITY);
        double m = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          if (s.window > 0 && i - j >= s.window) continue;
          double d = 0;
          for (int64_t e = 0; e < hd; ++e) {
            d += q[size_t((b * s.seq + i) * qs + h * hd + e)] * k[size_t((b * s.seq + j) * ks + (h / group) * hd + e)];
          }
          const double scaled = d * (s.scale > 0 ? double(s.scale) : 1 / std::sqrt(double(hd)));
          score[size_t(j)] = s.softcap > 0 ? s.softcap * std::tanh(scaled / s.softcap) : scaled;
          m = std::max(m, score[size_t(j)]);
        }
        double total = 0;
        for (int64_t j = 0; j <= i; ++j) total += std::exp(score[size_t(j)] - m);
        for (int64_t j = 0; j <= i; ++j) {
          const double p = std::exp(score[size_t(j)] - m) / total;
          for (int64_t e = 0; e < hd; ++e) {
            out[size_t((b * s.seq + i) * qs + h * hd + e)] += p * v[size_t((b * s.seq + j) * ks + (h / group) * hd + e)];
          }
        }
        if (lse) (*lse)[size_t((b * s.heads + h) * s.seq + i)] = m + std::log(total);
      }
    }
  }
  return out;
}

// Windows, and Gemma's scale and soft cap (small enough to bend the scores).
struct AttentionCase {
  int64_t window;
  float scale, softcap;
};

TEST(AttentionBackward, ForwardAndGradientsMatchReference) {
  for (const AttentionCase a : {AttentionCase{0, 0, 0}, {3, 0, 0}, {0, 0.5f, 1.5f}, {3, 0.2f, 0.8f}}) {
    SCOPED_TRACE("window " + std::to_string(a.window) + " scale " + std::to_string(a.scale) + " softcap " +
                 std::to_string(a.softcap));
    const slm::SequenceAttentionShape s{2, 7, 4, 2, 8, a.window, a.scale, a.softcap};
    const int64_t nq = s.batch * s.seq * s.heads * s.head_dim, nk = s.batch * s.seq * s.kv_heads * s.head_dim;
    const auto q = random_vector(nq, 20), k = random_vector(nk, 21), v = random_vector(nk, 22);
    const auto c = random_vector(nq, 23);
    std::vector<float> out(static_cast<size_t>(nq)), lse(static_cast<size_t>(s.batch * s.heads * s.seq));
    slm::cpu::attention_train_forward(q.data(), k.data(), v.data(), s, out.data(), lse.data());
    Vec want_lse;
    const Vec want = attention_reference(widen(q), widen(k), widen(v), s, &want_lse);
    EXPECT_LT(relative_error(out, want), 1e-5);
    EXPECT_LT(relative_error(lse, want_lse), 1e-5);

    std::vector<float> dq(static_cast<size_t>(nq)), dk(static_cast<size_t>(nk)), dv(static_cast<size_t>(nk));
    slm::cpu::attention_train_backward(q.data(), k.data(), v.data(), out.data(), c.data(), lse.data(), s, dq.data(),
                                       dk.data(), dv.data());
    const Vec nq_grad = numeric_gradient(
        [&](const Vec& x) { return weighted_sum(attention_reference(x, widen(k), widen(v), s), c); }, widen(q));
    const Vec nk_grad = numeric_gradient(
        [&](const Vec& x) { return weighted_sum(attention_reference(widen(q), x, widen(v), s), c); }, widen(k));
    const Vec nv_grad = numeric_gradient(
        [&](const Vec& x) { return weighted_sum(attention_reference(widen(q), widen(k), x, s), c); }, widen(v));
    EXPECT_LT(relative_error(dq, nq_grad), kTolerance);
    EXPECT_LT(relative_error(dk, nk_grad), kTolerance);
    EXPECT_LT(relative_error(dv, nv_grad), kTolerance);
  }
}

// The tiled kernels against the one-key-at-a-time loops, over lengths that
// span several 64-row tiles and windows that cut tiles in the middle.
TEST(AttentionBackward, TiledMatchesReferenceAcrossTiles) {
  for (const AttentionCase a : {AttentionCase{0, 0, 0}, {37, 0, 0}, {64, 0, 0}, {37, 0.3f, 2.0f}}) {
    SCOPED_TRACE("window " + std::to_string(a.window) + " softcap " + std::to_string(a.softcap));
    const slm::SequenceAttentionShape s{2, 150, 6, 2, 16, a.window, a.scale, a.softcap};
    const int64_t nq = s.batch * s.seq * s.heads * s.head_dim, nk = s.batch * s.seq * s.kv_heads * s.head_dim;
    const auto q = random_vector(nq, 40), k = random_vector(nk, 41), v = random_vector(nk, 42);
    const auto g = random_vector(nq, 43);
    const size_t rows = static_cast<size_t>(s.batch * s.heads * s.seq);
    std::vector<float> out(static_cast<size_t>(nq)), lse(rows), want_out(out.size()), want_lse(rows);
    slm::cpu::attention_train_forward(q.data(), k.data(), v.data(), s, out.data(), lse.data());
    slm::cpu::attention_train_forward_reference(q.data(), k.data(), v.data(), s, want_out.data(), want_lse.data());
    EXPECT_LT(relative_error(out, widen(want_out)), 1e-5);
    EXPECT_LT(relative_error(lse, widen(want_lse)), 1e-5);
    std::vector<float> dq(static_cast<size_t>(nq)), dk(static_cast<size_t>(nk)), dv(static_cast<size_t>(nk));
    std::vector<float> want_dq(dq.size()), want_dk(dk.size()), want_dv(dv.size());
    slm::cpu::attention_train_backward(q.data(), k.data(), v.data(), out.data(), g.data(), lse.data(), s, dq.data(),
                                       dk.data(), dv.data());
    slm::cpu::attention_train_backward_reference(q.data(), k.data(), v.data(), out.data(), g.data(), lse.data(), s,
                                                 want_dq.data(), want_dk.data(), want_dv.data());
    EXPECT_LT(relative_error(dq, widen(want_dq)), 1e-5);
    EXPECT_LT(relative_error(dk, widen(want_dk)), 1e-5);
    EXPECT_LT(relative_error(dv, widen(want_dv)), 1e-5);
  }
}

TEST(CrossEntropy, LossAndGradientsAcrossChunks) {
  for (const float softcap : {0.0f, 1.5f}) {
    SCOPED_TRACE("softcap " + std::to_string(softcap));
    const int64_t n = 7, H = 6, V = 29;
    const auto hidden = random_vector(n * H, 30), head = random_vector(V * H, 31);
    const std::vector<int32_t> targets = {3, -100, 28, 0, 5, -100, 17};
    Tensor W = Tensor::zeros(DType::F32, {V, H});
    std::copy(head.begin(), head.end(), W.data_as<float>());
    auto loss = [&](const Vec& hs, const Vec& ws) {
      double total = 0;
      for (int64_t r = 0; r < n; ++r) {
        if (targets[size_t(r)] < 0) continue;
        std::vector<double> logit(static_cast<size_t>(V));
        double m = -INFINITY;
        for (int64_t c = 0; c < V; ++c) {
          double d = 0;
          for (int64_t e = 0; e < H; ++e) d += hs[size_t(r * H + e)] * ws[size_t(c * H + e)];
          logit[size_t(c)] = softcap > 0 ? softcap * std::tanh(d / softcap) : d;
          m = std::max(m, logit[size_t(c)]);
        }
        double sum = 0;
        for (double l : logit) sum += std::exp(l - m);
        total += m + std::log(sum) - logit[size_t(targets[size_t(r)])];
      }
      return total / 5.0;  // the mean over the five counted rows
    };
    std::vector<float> dh(static_cast<size_t>(n * H), 1e30f), dW(static_cast<size_t>(V * H), 0.0f);
    const double sum =
        slm::cpu::cross_entropy(hidden.data(), n, W, softcap, targets.data(), 1.0f / 5, dh.data(), dW.data(), 3);
    EXPECT_NEAR(sum / 5.0, loss(widen(hidden), widen(head)), 1e-5);
    EXPECT_LT(relative_error(dh, numeric_gradient([&](const Vec& x) { return loss(x, widen(head)); }, widen(hidden))),
              kTolerance);
    EXPECT_LT(relative_error(dW, numeric_gradient([&](const Vec& x) { return loss(widen(hidden), x); }, widen(head))),
              kTolerance);
    for (int64_t e = 0; e < H; ++e) EXPECT_EQ(dh[size_t(1 * H + e)], 0.0f);  // an ignored row
    // Loss only: no gradient buffers touched.
    EXPECT_NEAR(slm::cpu::cross_entropy(hidden.data(), n, W, softcap, targets.data(), 1.0f, nullptr, nullptr), sum,
                1e-4);
  }
}

}  // namespace
