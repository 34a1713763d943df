// rmsnorm, rope, silu_mul, embedding, add and the raw vector loops of each
// instruction-set path, against direct double-precision formulas.
#include "backend/cpu/kernels.h"
#include "kernel_test_util.h"

#include <gtest/gtest.h>

#include <slm/error.h>

#include <cfloat>
#include <cmath>
#include <limits>

namespace {

using slm::DType;
using slm::Tensor;
using slm::cpu::Isa;
using slm::test::random_vector;
using slm::test::random_weight;

const int64_t kOddSizes[] = {1, 3, 17, 63, 65, 257};

TEST(RmsNorm, MatchesFormula) {
  for (int64_t rows : {1, 3, 20}) {  // above 16 rows the kernel goes parallel
    for (int64_t dim : kOddSizes) {
      const float eps = 1e-5f;
      const auto x = random_vector(rows * dim, static_cast<uint64_t>(rows * 100 + dim), 3.0);
      const auto w = random_vector(dim, 77);
      std::vector<float> out(x.size(), NAN);
      slm::cpu::rmsnorm(x.data(), w.data(), 0.0f, eps, rows, dim, out.data());
      for (int64_t r = 0; r < rows; ++r) {
        double ms = 0;
        for (int64_t i = 0; i < dim; ++i) ms += double(x[size_t(r * dim + i)]) * x[size_t(r * dim + i)];
        ms /= static_cast<double>(dim);
        const double inv = 1.0 / std::sqrt(ms + eps);
        for (int64_t i = 0; i < dim; ++i) {
          const double want = x[size_t(r * dim + i)] * inv * w[size_t(i)];
          ASSERT_NEAR(out[size_t(r * dim + i)], want, 1e-5 * std::fabs(want) + 1e-6)
              << "rows " << rows << " dim " << dim << " r " << r << " i " << i;
        }
      }
    }
  }
}

TEST(RmsNorm, EpsilonMattersForZeroRowsAndInPlaceWorks) {
  // An all-zero row gives zeros (not NaN) thanks to eps.
  std::vector<float> zeros(17, 0.0f), w(17, 1.0f), out(17, NAN);
  slm::cpu::rmsnorm(zeros.data(), w.data(), 0.0f, 1e-6f, 1, 17, out.data());
  for (float v : out) EXPECT_EQ(v, 0.0f);
  // A constant row c normalises to c / sqrt(c² + eps).
  std::vector<float> c(4, 0.01f), o(4);
  std::vector<float> ones(4, 1.0f);
  slm::cpu::rmsnorm(c.data(), ones.data(), 0.0f, 1e-4f, 1, 4, o.data());
  EXPECT_NEAR(o[0], 0.01 / std::sqrt(1e-4 + 1e-4), 1e-6);
  // In place, as the q/k norms of Qwen3 use it.
  auto x = random_vector(3 * 65, 3);
  const auto weight = random_vector(65, 4);
  std::vector<float> separate(x.size());
  slm::cpu::rmsnorm(x.data(), weight.data(), 0.0f, 1e-6f, 3, 65, separate.data());
  slm::cpu::rmsnorm(x.data(), weight.data(), 0.0f, 1e-6f, 3, 65, x.data());
  EXPECT_EQ(x, separate);
}

// Hugging Face: q·cos + rotate_half(q)·sin with cos, sin = cat(freqs, freqs)
// and rotate_half(x) = cat(-x[half:], x[:half]).
TEST(Rope, MatchesHuggingFaceRotateHalf) {
  for (int64_t head_dim : {2, 6, 34, 64, 128}) {
    for (int64_t heads : {1, 3}) {
      const int64_t rows = 5, half = head_dim / 2;
      auto x = random_vector(rows * heads * head_dim, static_cast<uint64_t>(head_dim * 7 + heads));
      const auto original = x;
      std::vector<float> cos(size_t(rows * half)), sin(cos.size());
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t i = 0; i < half; ++i) {
          const double angle = (r + 3) * std::pow(10000.0, -2.0 * i / head_dim);
          cos[size_t(r * half + i)] = static_cast<float>(std::cos(angle));
          sin[size_t(r * half + i)] = static_cast<float>(std::sin(angle));
        }
      }
      slm::cpu::rope(x.data(), rows, heads, head_dim, cos.data(), sin.data());
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t h = 0; h < heads; ++h) {
          const float* q = original.data() + (r * heads + h) * head_dim;
          const float* got = x.data() + (r * heads + h) * head_dim;
          for (int64_t d = 0; d < head_dim; ++d) {
            const double c = cos[size_t(r * half + d % half)], s = sin[size_t(r * half + d % half)];
            const double rotated = d < half ? -double(q[d + half]) : double(q[d - half]);
            const double want = q[d] * c + rotated * s;
            ASSERT_NEAR(got[d], want, 1e-6 * (std::fabs(q[d]) + std::fabs(rotated)) + 1e-7)
                << "head_dim " << head_dim << " r " << r << " h " << h << " d " << d;
          }
        }
      }
    }
  }
}

TEST(Rope, PositionZeroIsIdentityAndRotationPreservesPairNorms) {
  const int64_t head_dim = 64, half = 32, heads = 2;
  auto x = random_vector(heads * head_dim, 1);
  const auto original = x;
  std::vector<float> one(half, 1.0f), zero(half, 0.0f);
  slm::cpu::rope(x.data(), 1, heads, head_dim, one.data(), zero.data());
  EXPECT_EQ(x, original);
  std::vector<float> c(half), s(half);
  for (int64_t i = 0; i < half; ++i) {
    c[size_t(i)] = static_cast<float>(std::cos(0.1 * (i + 1)));
    s[size_t(i)] = static_cast<float>(std::sin(0.1 * (i + 1)));
  }
  slm::cpu::rope(x.data(), 1, heads, head_dim, c.data(), s.data());
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < half; ++i) {
      const size_t a = size_t(h * head_dim + i), b = a + size_t(half);
      EXPECT_NEAR(std::hypot(x[a], x[b]), std::hypot(original[a], original[b]), 1e-5);
    }
  }
  // Rotating back by -angle restores the input.
  for (float& v : s) v = -v;
  slm::cpu::rope(x.data(), 1, heads, head_dim, c.data(), s.data());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(x[i], original[i], 1e-5);
}

TEST(SiluMul, MatchesFormulaOnEveryPath) {
  slm::test::for_each_isa([](Isa) {
    for (int64_t n : {1, 3, 17, 63, 65, 257, 16384 + 17, 40000}) {
      auto gate = random_vector(n, static_cast<uint64_t>(n), 6.0);
      if (n > 10) {  // extremes: exp overflow and underflow must not give NaN or inf
        gate[0] = -100.0f;
        gate[1] = 100.0f;
        gate[2] = -88.5f;
        gate[3] = 89.0f;
        gate[4] = 0.0f;
        gate[5] = -1e-30f;
      }
      const auto up = random_vector(n, static_cast<uint64_t>(n + 1));
      std::vector<float> out(size_t(n), NAN);
      slm::cpu::silu_mul(gate.data(), up.data(), out.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double g = gate[size_t(i)];
        const double want = g / (1.0 + std::exp(-g)) * up[size_t(i)];
        ASSERT_TRUE(std::isfinite(out[size_t(i)])) << "n " << n << " i " << i << " gate " << g;
        ASSERT_NEAR(out[size_t(i)], want, 2e-6 * std::fabs(want) + 1e-7 * std::fabs(up[size_t(i)]))
            << "n " << n << " i " << i << " gate " << g;
      }
      // In place on gate, as the model calls it.
      std::vector<float> in_place = gate;
      slm::cpu::silu_mul(in_place.data(), up.data(), in_place.data(), n);
      ASSERT_EQ(in_place, out) << "n " << n;
    }
  });
}

// Softmax numerators (the cross-entropy's, attention tiles'): e^(x − shift)
// for x up to the shift (the row's maximum), down to where it underflows,
// -inf (a masked score) to exactly 0, and their sum.
TEST(ExpShifted, MatchesExpAndSumsOnEveryPath) {
  slm::test::for_each_isa([](Isa) {
    for (int64_t n : {1, 7, 17, 63, 65, 49152 + 5}) {
      auto x = random_vector(n, static_cast<uint64_t>(n), 8.0);
      if (n > 4) {
        x[0] = -200.0f;  // e^-210: underflows to (near) zero, never NaN
        x[1] = 10.0f;    // the maximum: e^0 = 1
        x[2] = 10.0f - 1e-6f;
        x[3] = -INFINITY;  // a masked attention score: exactly 0
      }
      std::vector<float> out(size_t(n), NAN);
      const double sum = slm::cpu::vector_kernels().exp_shifted(x.data(), 10.0f, out.data(), n);
      double want_sum = 0;
      for (int64_t i = 0; i < n; ++i) {
        // Of the float difference, which every path rounds the same way.
        const double want = std::exp(double(x[size_t(i)] - 10.0f));
        want_sum += want;
        if (std::isinf(x[size_t(i)])) {
          ASSERT_EQ(out[size_t(i)], 0.0f) << "n " << n << ": e^-inf";
        }
        // Flash attention leaves a row unscaled when e^(old max − new max) is
        // exactly 1.
        if (x[size_t(i)] == 10.0f) {
          ASSERT_EQ(out[size_t(i)], 1.0f) << "n " << n << ": e^0";
        }
        ASSERT_TRUE(std::isfinite(out[size_t(i)])) << "n " << n << " i " << i;
        ASSERT_NEAR(out[size_t(i)], want, 2e-6 * want + 1e-37) << "n " << n << " i " << i << " x " << x[size_t(i)];
      }
      EXPECT_NEAR(sum, want_sum, 1e-5 * want_sum) << "n " << n;
      // In place, as the cross-entropy calls it.
      std::vector<float> in_place = x;
      slm::cpu::vector_kernels().exp_shifted(in_place.data(), 10.0f, in_place.data(), n);
      ASSERT_EQ(in_place, out) << "n " << n;
    }
  });
}

TEST(VectorKernels, EveryPathMatchesScalarFormulas) {
  slm::test::for_each_isa([](Isa) {
    const slm::cpu::VectorKernels& k = slm::cpu::vector_kernels();
    for (int64_t n = 0; n <= 70; ++n) {
      for (int64_t extra : {int64_t{0}, int64_t{187}}) {
        const int64_t len = n + extra;
        if (extra && n % 7) continue;
        const auto x = random_vector(len, static_cast<uint64_t>(len) + 1);
        const auto wf = random_vector(len, static_cast<uint64_t>(len) + 2);
        std::vector<uint16_t> wb(static_cast<size_t>(len)), wh(static_cast<size_t>(len));
        for (int64_t i = 0; i < len; ++i) {
          wb[size_t(i)] = slm::f32_to_bf16(wf[size_t(i)]);
          wh[size_t(i)] = slm::f32_to_f16(wf[size_t(i)]);
        }
        double df = 0, db = 0, dh = 0, scale = 0;
        for (int64_t i = 0; i < len; ++i) {
          df += double(x[size_t(i)]) * wf[size_t(i)];
          db += double(x[size_t(i)]) * slm::bf16_to_f32(wb[size_t(i)]);
          dh += double(x[size_t(i)]) * slm::f16_to_f32(wh[size_t(i)]);
          scale += std::fabs(double(x[size_t(i)]) * wf[size_t(i)]) * 1.01;
        }
        const double tol = (double(len) + 2) * FLT_EPSILON * scale + 1e-30;
        ASSERT_NEAR(k.f32(x.data(), wf.data(), len), df, tol) << "f32 k=" << len;
        ASSERT_NEAR(k.bf16(x.data(), wb.data(), len), db, tol) << "bf16 k=" << len;
        ASSERT_NEAR(k.f16(x.data(), wh.data(), len), dh, tol) << "f16 k=" << len;
        std::vector<float> prepared(size_t((len + 31) / 32 * 32 + 1), NAN);
        k.prepare_bf16_x(x.data(), len, prepared.data());
        // The bf16 dot-product path rounds x to bf16, as its GEMM does: exact
        // for the x it saw, within 2^-8 of the true one.
        double db_seen = db;
        if (slm::cpu::bf16_gemm_kernels()) {
          db_seen = 0;
          for (int64_t i = 0; i < len; ++i) {
            db_seen += double(slm::bf16_to_f32(slm::f32_to_bf16(x[size_t(i)]))) * slm::bf16_to_f32(wb[size_t(i)]);
          }
          ASSERT_NEAR(db_seen, db, 0x1p-8 * scale + 1e-30) << "bf16-rounded x, k=" << len;
        }
        ASSERT_NEAR(k.bf16_prepared(prepared.data(), wb.data(), len), db_seen, tol) << "bf16_prepared k=" << len;

        std::vector<float> widened(size_t(len) + 1, -7.0f);
        k.widen_bf16(wb.data(), len, widened.data());
        for (int64_t i = 0; i < len; ++i) ASSERT_EQ(widened[size_t(i)], slm::bf16_to_f32(wb[size_t(i)]));
        ASSERT_EQ(widened[size_t(len)], -7.0f) << "widen_bf16 wrote past n=" << len;
        k.widen_f16(wh.data(), len, widened.data());
        for (int64_t i = 0; i < len; ++i) ASSERT_EQ(widened[size_t(i)], slm::f16_to_f32(wh[size_t(i)]));
        ASSERT_EQ(widened[size_t(len)], -7.0f) << "widen_f16 wrote past n=" << len;

        std::vector<float> y(size_t(len) + 1, 0.5f);
        y[size_t(len)] = -7.0f;
        k.axpy(1.5f, x.data(), y.data(), len);
        for (int64_t i = 0; i < len; ++i) ASSERT_NEAR(y[size_t(i)], 0.5 + 1.5 * x[size_t(i)], 1e-6 * (1 + std::fabs(x[size_t(i)])));
        ASSERT_EQ(y[size_t(len)], -7.0f) << "axpy wrote past n=" << len;
        std::fill(y.begin(), y.end() - 1, 0.5f);
        k.axpy_bf16(-2.0f, wb.data(), y.data(), len);
        for (int64_t i = 0; i < len; ++i) {
          const double w = slm::bf16_to_f32(wb[size_t(i)]);
          ASSERT_NEAR(y[size_t(i)], 0.5 - 2.0 * w, 1e-6 * (1 + std::fabs(w))) << "axpy_bf16 n=" << len;
        }
        ASSERT_EQ(y[size_t(len)], -7.0f) << "axpy_bf16 wrote past n=" << len;
        std::fill(y.begin(), y.end() - 1, 0.5f);
        k.axpy_f16(0.25f, wh.data(), y.data(), len);
        for (int64_t i = 0; i < len; ++i) {
          const double w = slm::f16_to_f32(wh[size_t(i)]);
          ASSERT_NEAR(y[size_t(i)], 0.5 + 0.25 * w, 1e-6 * (1 + std::fabs(w))) << "axpy_f16 n=" << len;
        }
        ASSERT_EQ(y[size_t(len)], -7.0f) << "axpy_f16 wrote past n=" << len;
      }
    }
  });
}

// q8/q4 rows widened to f32 are the dequantized rows, for whole numbers of
// blocks (their dot products are QuantDot's, test_matmul.cpp).
TEST(VectorKernels, QuantizedRowsWidenOnEveryPath) {
  slm::test::for_each_isa([](Isa) {
    const slm::cpu::VectorKernels& k = slm::cpu::vector_kernels();
    for (int64_t len : {32, 64, 96, 288, 1024 + 32}) {
      for (DType dtype : {DType::Q8, DType::Q4}) {
        const Tensor w = random_weight(dtype, 1, len, static_cast<uint64_t>(len) * 5);
        std::vector<float> widened(size_t(len) + 1, -7.0f);
        if (dtype == DType::Q8) {
          k.widen_q8(w.data_as<const slm::BlockQ8>(), len, widened.data());
        } else {
          k.widen_q4(w.data_as<const slm::BlockQ4>(), len, widened.data());
        }
        for (int64_t i = 0; i < len; ++i) ASSERT_EQ(widened[size_t(i)], w.at(i)) << slm::dtype_name(dtype) << " " << i;
        ASSERT_EQ(widened[size_t(len)], -7.0f);
      }
    }
  });
}

TEST(Embedding, PicksRowsAndConvertsEveryDtype) {
  for (DType dtype : {DType::F32, DType::F16, DType::BF16, DType::Q8, DType::Q4}) {
    const int64_t dim = slm::is_quantized(dtype) ? 64 : 17;
    const Tensor table = random_weight(dtype, 11, dim, 3);
    const int32_t ids[] = {10, 0, 10, 4};
    std::vector<float> out(size_t(4 * dim), NAN);
    slm::cpu::embedding(table, ids, 4, out.data());
    for (int r = 0; r < 4; ++r) {
      for (int64_t i = 0; i < dim; ++i) ASSERT_EQ(out[size_t(r * dim + i)], table.at(ids[r] * dim + i));
    }
  }
}

TEST(StoreRow, WritesOneRowInTheTableDtype) {
  const auto x = random_vector(17, 4);
  std::vector<float> f32(3 * 17, -1.0f);
  slm::cpu::store_row(x.data(), 17, DType::F32, f32.data(), 1);
  for (int i = 0; i < 17; ++i) {
    EXPECT_EQ(f32[size_t(17 + i)], x[size_t(i)]);
    EXPECT_EQ(f32[size_t(i)], -1.0f);
    EXPECT_EQ(f32[size_t(34 + i)], -1.0f);
  }
  std::vector<uint16_t> half(3 * 17, 0xffff);
  slm::cpu::store_row(x.data(), 17, DType::BF16, half.data(), 2);
  for (int i = 0; i < 17; ++i) EXPECT_EQ(half[size_t(34 + i)], slm::f32_to_bf16(x[size_t(i)]));
  EXPECT_EQ(half[33], 0xffff);
  slm::cpu::store_row(x.data(), 17, DType::F16, half.data(), 0);
  for (int i = 0; i < 17; ++i) EXPECT_EQ(half[size_t(i)], slm::f32_to_f16(x[size_t(i)]));
  EXPECT_EQ(half[17], 0xffff);
  EXPECT_THROW(slm::cpu::store_row(x.data(), 17, DType::Q8, half.data(), 0), slm::Error);
}

TEST(AddInplace, AddsElementwise) {
  auto x = random_vector(65, 1);
  const auto y = random_vector(65, 2);
  const auto x0 = x;
  slm::cpu::add_inplace(x.data(), y.data(), 65);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(x[i], x0[i] + y[i]);
}

}  // namespace
