// matmul (dot-product path for M < 4, GEMM path for M >= 4) and matmul_group
// against matmul_reference, on sizes that are not multiples of any vector
// width, for every weight dtype and every instruction-set path of this CPU.
//
// q8/q4 weights are compared with the reference on their dequantized values
// (Tensor::at), so quantization error is not part of the tolerance.
//
// Tolerance: a sum of K f32 products has a rounding error below
// (K + 2)·ε·Σ|x_k·w_k| (ε = 2^-23), whatever the order of summation; bias is
// counted in the scale. Two paths read the activations at lower precision,
// as bf16 and quantized engines do: bf16 weights on paths with bf16
// instructions (avx512bf16, amx, neonbf16) round them to bf16, and q8/q4 weights quantize them to q8 blocks (integer
// dot products for M < 4 on every path, the integer GEMM where a path has
// one). Each is held to the same bound
// against the reference run on the activations it saw, and against the true
// activations to that rounding's own bound: 2^-8·Σ|x·w| for bf16, each q8
// block's largest rounding step times its Σ|w| for q8/q4.
#include "core/quant.h"
#include "backend/cpu/kernels.h"
#include "kernel_test_util.h"

#include <slm/error.h>

#include <gtest/gtest.h>

#include <array>
#include <cfloat>
#include <cmath>
#include <limits>
#include <tuple>

namespace {

using slm::DType;
using slm::Tensor;
using slm::cpu::Isa;
using slm::test::random_vector;
using slm::test::random_weight;

const int64_t kOddSizes[] = {1, 3, 17, 63, 65, 257};
// Quantized rows are whole blocks of 32: odd numbers of blocks.
const int64_t kBlockSizes[] = {32, 96, 288};

std::vector<int64_t> widths(DType dtype) {
  if (slm::is_quantized(dtype)) return {std::begin(kBlockSizes), std::end(kBlockSizes)};
  return {std::begin(kOddSizes), std::end(kOddSizes)};
}

// Σ|x_k w_k| + |bias| per output: the scale of the rounding error.
std::vector<double> magnitudes(const std::vector<float>& x, int64_t M, int64_t K, const Tensor& W, const float* bias) {
  const int64_t N = W.dim(0);
  std::vector<double> out(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double s = bias ? std::fabs(bias[n]) : 0.0;
      for (int64_t k = 0; k < K; ++k) s += std::fabs(static_cast<double>(x[size_t(m * K + k)]) * W.at(n * K + k));
      out[size_t(m * N + n)] = s;
    }
  }
  return out;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, const std::vector<double>& scale,
                  double relative, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = relative * scale[i] + 1e-30;
    ASSERT_TRUE(std::isfinite(got[i])) << what << " element " << i;
    ASSERT_LE(std::fabs(static_cast<double>(got[i]) - want[i]), tol)
        << what << " element " << i << ": got " << got[i] << ", want " << want[i];
  }
}

// Activations are read at lower precision in two places: the bf16 products
// of paths with bf16 instructions (GEMM and dot products alike) round them to bf16, and the integer products of q8/q4
// weights (dot products for M < 4, and the GEMM of paths that have one)
// quantize them to q8 blocks. Such a product is exact for
// the activations it saw, and within that rounding of the true ones.
bool rounds_activations(DType dtype) { return slm::cpu::bf16_gemm_kernels() != nullptr && dtype == DType::BF16; }
bool quantizes_activations(DType dtype, int64_t M) {
  return slm::is_quantized(dtype) && (M < 4 || slm::cpu::quant_gemm_kernels() != nullptr);
}

// x as the kernel for (isa, dtype, M) sees it, rows of K.
std::vector<float> seen_activations(DType dtype, int64_t M, int64_t K, const std::vector<float>& x) {
  std::vector<float> seen(x.size());
  if (rounds_activations(dtype)) {
    for (size_t i = 0; i < x.size(); ++i) seen[i] = slm::bf16_to_f32(slm::f32_to_bf16(x[i]));
  } else if (quantizes_activations(dtype, M)) {
    std::vector<slm::BlockQ8> blocks(static_cast<size_t>(K / slm::kQuantBlock));
    for (int64_t m = 0; m < M; ++m) {
      slm::quantize_q8(x.data() + m * K, K, blocks.data());
      slm::dequantize_q8(blocks.data(), K, seen.data() + m * K);
    }
  } else {
    seen = x;
  }
  return seen;
}

void check_matmul(DType dtype, int64_t M, int64_t K, int64_t N, bool with_bias) {
  const uint64_t seed = static_cast<uint64_t>(M * 1000003 + K * 1009 + N * 17 + static_cast<int>(dtype));
  const std::vector<float> x = random_vector(M * K, seed);
  const Tensor W = random_weight(dtype, N, K, seed + 1);
  const std::vector<float> bias_values = random_vector(N, seed + 2);
  const float* bias = with_bias ? bias_values.data() : nullptr;
  const std::string what = "M=" + std::to_string(M) + " K=" + std::to_string(K) + " N=" + std::to_string(N) +
                           " dtype=" + std::string(slm::dtype_name(dtype)) + (with_bias ? " bias" : "");

  // Poisoned output: every element must be written.
  std::vector<float> got(static_cast<size_t>(M * N), std::numeric_limits<float>::quiet_NaN());
  slm::cpu::matmul(x.data(), M, K, W, bias, got.data());

  std::vector<float> want(got.size());
  const double bound = (static_cast<double>(K) + 2) * FLT_EPSILON;
  const std::vector<float> seen = seen_activations(dtype, M, K, x);
  slm::cpu::matmul_reference(seen.data(), M, K, W, bias, want.data());
  expect_close(got, want, magnitudes(seen, M, K, W, bias), bound, what + " (vs the activations the kernel saw)");
  if (rounds_activations(dtype)) {
    slm::cpu::matmul_reference(x.data(), M, K, W, bias, want.data());
    expect_close(got, want, magnitudes(x, M, K, W, bias), 0x1p-8 + bound, what);
  }
  if (quantizes_activations(dtype, M)) {
    // Against the true activations: a q8 block moves each value by at most
    // half its f16 scale (amax/127, rounded) or, where the rounded scale
    // clips the largest, by amax·2^-11; so output n moves by at most
    // Σ_blocks e_b·Σ_{k in b}|w_nk| beyond the f32 rounding.
    slm::cpu::matmul_reference(x.data(), M, K, W, bias, want.data());
    const std::vector<double> scale = magnitudes(x, M, K, W, bias);
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t n = 0; n < N; ++n) {
        double allowed = bound * scale[size_t(m * N + n)] + 1e-30;
        for (int64_t b = 0; b < K / slm::kQuantBlock; ++b) {
          double amax = 0, weight = 0;
          for (int64_t k = b * slm::kQuantBlock; k < (b + 1) * slm::kQuantBlock; ++k) {
            amax = std::max(amax, std::fabs(static_cast<double>(x[size_t(m * K + k)])));
            weight += std::fabs(static_cast<double>(W.at(n * K + k)));
          }
          allowed += amax * (0.5 / 127 * (1 + 0x1p-11) + 0x1p-11) * weight;
        }
        ASSERT_LE(std::fabs(static_cast<double>(got[size_t(m * N + n)]) - want[size_t(m * N + n)]), allowed)
            << what << " row " << m << " output " << n << " (vs the true activations)";
      }
    }
  }
}

class MatmulTest : public ::testing::TestWithParam<DType> {};

TEST_P(MatmulTest, DotProductPathMatchesReference) {
  const auto ran = slm::test::for_each_isa([&](Isa) {
    for (int64_t M : {1, 2, 3}) {
      for (int64_t K : widths(GetParam())) {
        for (int64_t N : {1, 3, 17, 65, 257}) {
          for (bool bias : {false, true}) {
            check_matmul(GetParam(), M, K, N, bias);
            if (HasFatalFailure()) return;
          }
        }
      }
    }
  });
  EXPECT_GE(ran.size(), 1u);
}

TEST_P(MatmulTest, GemmPathMatchesReference) {
  slm::test::for_each_isa([&](Isa) {
    for (int64_t M : {4, 5, 9, 37}) {
      for (int64_t K : widths(GetParam())) {
        for (int64_t N : {1, 3, 17, 65, 257}) {
          for (bool bias : {false, true}) {
            check_matmul(GetParam(), M, K, N, bias);
            if (HasFatalFailure()) return;
          }
        }
      }
    }
  });
}

// Sizes just past the multiples the fast paths cut along: panels of 64
// weight rows (dot products, f32 GEMM), and for bf16 GEMM tiles of 96
// columns × 32..256 rows shared among threads, packed panels of 48 columns,
// blocks of 8 rows, and 16 × 16 word transposes along K (K 67: one full
// transpose block and a ragged edge; 97: three and an odd last element).
TEST_P(MatmulTest, PanelAndBlockBoundaries) {
  slm::test::for_each_isa([&](Isa) {
    for (int64_t K : slm::is_quantized(GetParam()) ? std::vector<int64_t>{96} : std::vector<int64_t>{67, 97}) {
      for (int64_t M : {1, 3, 8, 17, 300}) {
        for (int64_t N : {31, 32, 33, 47, 48, 49, 63, 64, 95, 96, 97, 129}) {
          check_matmul(GetParam(), M, K, N, true);
          if (HasFatalFailure()) return;
        }
      }
    }
  });
}

// Wide rows cut into the GEMM's blocks along K (256) with a ragged last
// one, and panels narrower than 64 rows (the L2 bound on a widened panel).
TEST_P(MatmulTest, WideRowsAcrossKBlocksAndNarrowPanels) {
  slm::test::for_each_isa([&](Isa) {
    const int64_t K = slm::is_quantized(GetParam()) ? 1056 : 1029;
    for (int64_t M : {4, 11}) {
      check_matmul(GetParam(), M, K, 97, true);
      if (HasFatalFailure()) return;
    }
  });
}

INSTANTIATE_TEST_SUITE_P(Dtypes, MatmulTest, ::testing::Values(DType::F32, DType::F16, DType::BF16, DType::Q8, DType::Q4),
                         [](const auto& param_info) { return std::string(slm::dtype_name(param_info.param)); });

TEST(MatmulGroup, EqualsSeparateReferenceProducts) {
  slm::test::for_each_isa([&](Isa) {
    for (DType dtype : {DType::F32, DType::F16, DType::BF16, DType::Q8, DType::Q4}) {
      for (int64_t M : {1, 2, 3, 4, 6}) {
        const int64_t K = slm::is_quantized(dtype) ? 64 : 65;
        const std::vector<float> x = random_vector(M * K, 5);
        const Tensor Wq = random_weight(dtype, 17, K, 6), Wk = random_weight(dtype, 3, K, 7),
                     Wv = random_weight(dtype, 63, K, 8);
        const std::vector<float> bq = random_vector(17, 9), bv = random_vector(63, 10);
        std::vector<float> q(size_t(M * 17), NAN), k(size_t(M * 3), NAN), v(size_t(M * 63), NAN);
        const slm::Projection projections[] = {{&Wq, bq.data(), q.data()}, {&Wk, nullptr, k.data()}, {&Wv, bv.data(), v.data()}};
        slm::cpu::matmul_group(x.data(), M, K, projections);
        const std::vector<float> seen = seen_activations(dtype, M, K, x);
        for (const auto& [W, b, out] : {std::tuple{&Wq, bq.data(), &q}, std::tuple{&Wk, (const float*)nullptr, &k},
                                        std::tuple{&Wv, bv.data(), &v}}) {
          std::vector<float> want(out->size());
          slm::cpu::matmul_reference(seen.data(), M, K, *W, b, want.data());
          expect_close(*out, want, magnitudes(seen, M, K, *W, b), 70 * FLT_EPSILON,
                       "group M=" + std::to_string(M) + " N=" + std::to_string(W->dim(0)) + " " +
                           std::string(slm::dtype_name(dtype)));
          if (::testing::Test::HasFatalFailure()) return;
        }
      }
    }
  });
}

// gemm_nt of every path that has one against the reference, for every weight dtype,
// on strided A and C (each row stride past its row; C poisoned between) and
// every tile shape: m and n not multiples of the 6×16 tile, k around the
// vector width and the K block of 256.
TEST(GemmNt, EveryPathMatchesTheReference) {
  int paths = 0;
  slm::test::for_each_isa([&](Isa) {
    const slm::cpu::VectorKernels& k = slm::cpu::vector_kernels();
    if (!k.gemm_nt) return;
    ++paths;
    for (DType dtype : {DType::F32, DType::BF16, DType::F16, DType::Q8, DType::Q4}) {
      const std::vector<int64_t> depths = slm::is_quantized(dtype) ? std::vector<int64_t>{32, 256, 288, 608}
                                                                  : std::vector<int64_t>{1, 7, 8, 9, 255, 256, 257, 600};
      for (int64_t m : {1, 5, 6, 7, 13}) {
        for (int64_t n : {1, 8, 15, 16, 17, 33}) {
          for (int64_t K : depths) {
            const int64_t lda = K + 3, ldc = n + 2;
            const auto a = random_vector(m * lda, uint64_t(m * 131 + K));
            const Tensor W = random_weight(dtype, n, K, uint64_t(n * 7 + K));
            std::vector<float> got(size_t(m * ldc), -7.0f), want(got.size(), -7.0f);
            k.gemm_nt(a.data(), m, lda, dtype, W.data(), n, K, got.data(), ldc);
            slm::cpu::gemm_nt_reference(a.data(), m, lda, dtype, W.data(), n, K, want.data(), ldc);
            const std::string what = "dtype=" + std::string(slm::dtype_name(dtype)) + " m=" + std::to_string(m) +
                                     " n=" + std::to_string(n) + " k=" + std::to_string(K);
            for (int64_t i = 0; i < m; ++i) {
              for (int64_t j = 0; j < ldc; ++j) {
                const size_t at = size_t(i * ldc + j);
                if (j >= n) {
                  ASSERT_EQ(got[at], -7.0f) << "wrote past n: " << what;
                  continue;
                }
                double scale = 0;
                for (int64_t p = 0; p < K; ++p) scale += std::fabs(double(a[size_t(i * lda + p)]) * W.at(j * K + p));
                ASSERT_NEAR(got[at], want[at], 2 * (double(K) + 2) * FLT_EPSILON * scale + 1e-30)
                    << what << " at " << i << "," << j;
              }
            }
          }
        }
      }
    }
  });
  if (paths == 0) GTEST_SKIP() << "no path of this CPU has a GEMM of its own (AVX2 has one)";
}

TEST(Matmul, WrongWeightShapeIsAnError) {
  const Tensor W = random_weight(DType::F32, 4, 8, 1);
  std::vector<float> x(16), y(16);
  EXPECT_THROW(slm::cpu::matmul(x.data(), 2, 7, W, nullptr, y.data()), slm::Error);
  EXPECT_THROW(slm::cpu::matmul(x.data(), 5, 7, W, nullptr, y.data()), slm::Error);
  EXPECT_THROW(slm::cpu::matmul_reference(x.data(), 2, 7, W, nullptr, y.data()), slm::Error);
  const Tensor vector_weight = Tensor::zeros(DType::F32, {8});
  EXPECT_THROW(slm::cpu::matmul(x.data(), 1, 8, vector_weight, nullptr, y.data()), slm::Error);
}

// Exact small case, so a transposed or misindexed reference cannot hide behind its twin.
TEST(Matmul, ReferenceIsXTimesWTransposed) {
  Tensor W = Tensor::zeros(DType::F32, {2, 3});
  const float w[] = {1, 2, 3, 4, 5, 6};
  std::copy(w, w + 6, W.data_as<float>());
  const float x[] = {1, 0, -1, 2, 1, 0};
  const float bias[] = {10, 20};
  float y[4];
  slm::cpu::matmul_reference(x, 2, 3, W, bias, y);
  EXPECT_EQ(y[0], 10 + 1 - 3);
  EXPECT_EQ(y[1], 20 + 4 - 6);
  EXPECT_EQ(y[2], 10 + 2 + 2);
  EXPECT_EQ(y[3], 20 + 8 + 5);
  slm::cpu::matmul(x, 2, 3, W, bias, y);
  EXPECT_EQ(y[0], 8);
  EXPECT_EQ(y[3], 33);
}

}  // namespace

// The threaded BLAS wrapper of the LoRA products, against the formula in
// double, for every transpose and both ways of cutting C (tall: row blocks;
// wide: column blocks), on sizes that leave ragged last blocks.
TEST(SgemmParallel, EqualsTheFormulaForEveryTransposeAndCut) {
  for (const auto [M, N, K] : {std::array<int64_t, 3>{300, 8, 37}, {8, 300, 37}, {1, 1, 5}, {33, 70, 1}, {17, 17, 9}}) {
    for (bool trans_a : {false, true}) {
      for (bool trans_b : {false, true}) {
        const int64_t lda = (trans_a ? M : K) + 3, ldb = (trans_b ? K : N) + 2, ldc = N + 1;
        const std::vector<float> A = random_vector((trans_a ? K : M) * lda, 7), B = random_vector((trans_b ? N : K) * ldb, 8);
        std::vector<float> C = random_vector(M * ldc, 9);
        const std::vector<float> C0 = C;
        slm::cpu::sgemm_parallel(trans_a, trans_b, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, 2.0f, C.data(), ldc);
        for (int64_t m = 0; m < M; ++m) {
          for (int64_t n = 0; n < N; ++n) {
            double want = 2.0 * C0[size_t(m * ldc + n)];
            double scale = std::fabs(want);
            for (int64_t k = 0; k < K; ++k) {
              const double a = A[size_t(trans_a ? k * lda + m : m * lda + k)];
              const double b = B[size_t(trans_b ? n * ldb + k : k * ldb + n)];
              want += 0.5 * a * b;
              scale += std::fabs(0.5 * a * b);
            }
            ASSERT_NEAR(C[size_t(m * ldc + n)], want, 1e-6 * scale + 1e-30)
                << M << "x" << N << "x" << K << " trans_a " << trans_a << " trans_b " << trans_b << " at " << m << "," << n;
          }
        }
        // Padding past N in each row of C is never written.
        for (int64_t m = 0; m < M; ++m) ASSERT_EQ(C[size_t(m * ldc + N)], C0[size_t(m * ldc + N)]);
      }
    }
  }
}

// The integer dot products' activations are exactly quantize_q8's blocks:
// random rows, an all-zero block, exact halves between levels (ties round to
// even) and values too small for an f16 scale. On every path.
TEST(QuantDot, QuantizedActivationsAreQuantizeQ8Blocks) {
  slm::test::for_each_isa([&](Isa isa) {
    const slm::cpu::QuantDotKernels& quant = slm::cpu::quant_dot_kernels();
    std::vector<float> x = random_vector(8 * slm::kQuantBlock, 3, 5.0);
    std::fill_n(x.begin() + 32, 32, 0.0f);
    for (int i = 0; i < 32; ++i) x[size_t(64 + i)] = (i == 0 ? 127.0f : static_cast<float>(i) + 0.5f);
    for (int i = 0; i < 32; ++i) x[size_t(96 + i)] = 1e-9f * static_cast<float>(i - 16);
    std::vector<slm::BlockQ8> want(8), got(8);
    slm::quantize_q8(x.data(), static_cast<int64_t>(x.size()), want.data());
    quant.quantize_x(x.data(), static_cast<int64_t>(x.size()), got.data());
    for (size_t b = 0; b < want.size(); ++b) {
      EXPECT_EQ(got[b].scale, want[b].scale) << slm::cpu::isa_name(isa) << " block " << b;
      for (int i = 0; i < slm::kQuantBlock; ++i) {
        ASSERT_EQ(got[b].q[i], want[b].q[i]) << slm::cpu::isa_name(isa) << " block " << b << " element " << i;
      }
    }
  });
}

// Each block's integer sum is exact, so a row's dot product is Σ over blocks
// of (integer sum) · scale_x · scale_w up to the f32 rounding of that sum.
// Extreme levels (±127 and -128 for q8, 0 and 15 for q4) in every lane reach
// the int16 limits of vpmaddubsw's pairs. Three weight rows a call: each
// output is its own row's.
TEST(QuantDot, DotProductsAreTheScaledIntegerSums) {
  constexpr int64_t kRows = 3;
  slm::test::for_each_isa([&](Isa isa) {
    const slm::cpu::QuantDotKernels& quant = slm::cpu::quant_dot_kernels();
    for (int64_t blocks : {1, 2, 3, 4, 5, 6, 7, 8, 9, 13}) {
      for (int pattern = 0; pattern < 3; ++pattern) {
        const auto count = static_cast<size_t>(blocks);
        std::vector<slm::BlockQ8> x(count), w8(count * kRows);
        std::vector<slm::BlockQ4> w4(count * kRows);
        uint64_t state = 7 + uint64_t(blocks) * 31 + uint64_t(pattern);
        auto next = [&] { return state = state * 6364136223846793005ull + 1442695040888963407ull, int(state >> 33); };
        for (int64_t b = 0; b < blocks; ++b) {
          x[size_t(b)].scale = slm::f32_to_f16(0.01f * float(1 + next() % 50));
          // pattern 0: random; 1: x at +127, weights at their extremes; 2: x at -127.
          for (int i = 0; i < slm::kQuantBlock; ++i) {
            x[size_t(b)].q[i] = static_cast<int8_t>(pattern == 0 ? next() % 255 - 127 : (pattern == 1 ? 127 : -127));
          }
        }
        for (size_t b = 0; b < w8.size(); ++b) {
          w8[b].scale = slm::f32_to_f16(0.02f * float(1 + next() % 50));
          w4[b].scale = w8[b].scale;
          for (int i = 0; i < slm::kQuantBlock; ++i) {
            w8[b].q[i] = static_cast<int8_t>(pattern == 0 ? (next() >> 8) % 256 - 128 : (i % 2 ? -128 : 127));
          }
          for (int i = 0; i < slm::kQuantBlock / 2; ++i) {
            w4[b].q[i] = static_cast<uint8_t>(pattern == 0 ? next() & 0xff : (i % 2 ? 0xff : 0x00));
          }
        }
        const int64_t k = blocks * slm::kQuantBlock;
        // x as the path's dot products read it.
        std::vector<char> arranged;
        const void* xs = x.data();
        if (quant.arrange_x) {
          arranged.resize(static_cast<size_t>(quant.arranged_bytes(k)));
          quant.arrange_x(x.data(), k, arranged.data());
          xs = arranged.data();
        }
        float got8[kRows], got4[kRows];
        quant.q8(xs, w8.data(), k, kRows, got8);
        quant.q4(xs, w4.data(), k, kRows, got4);
        for (int64_t row = 0; row < kRows; ++row) {
          double want8 = 0.0, want4 = 0.0, scale8 = 0.0, scale4 = 0.0;
          for (int64_t b = 0; b < blocks; ++b) {
            const slm::BlockQ8& xb = x[size_t(b)];
            const slm::BlockQ8& b8 = w8[size_t(row * blocks + b)];
            const slm::BlockQ4& b4 = w4[size_t(row * blocks + b)];
            int64_t sum8 = 0, sum4 = 0, abs8 = 0, abs4 = 0;
            for (int i = 0; i < slm::kQuantBlock; ++i) {
              const int level4 = (i < 16 ? b4.q[i] & 0x0f : b4.q[i - 16] >> 4) - 8;
              const int64_t p8 = int64_t(xb.q[i]) * b8.q[i], p4 = int64_t(xb.q[i]) * level4;
              sum8 += p8;
              sum4 += p4;
              abs8 += p8 < 0 ? -p8 : p8;
              abs4 += p4 < 0 ? -p4 : p4;
            }
            const double sx = slm::f16_to_f32(xb.scale), sw = slm::f16_to_f32(b8.scale);
            want8 += double(sum8) * sx * sw;
            want4 += double(sum4) * sx * sw;
            scale8 += double(abs8) * sx * sw;
            scale4 += double(abs4) * sx * sw;
          }
          const std::string what = std::string(slm::cpu::isa_name(isa)) + " blocks " + std::to_string(blocks) +
                                   " pattern " + std::to_string(pattern) + " row " + std::to_string(row);
          // The integer sums (per block, in each of 8 lanes) convert to f32
          // exactly; what rounds is the scale product and the f32 sum of
          // those 8·blocks lane terms: (8·blocks + 2)·ε·Σ|x·w| bounds it.
          const double bound = double(8 * blocks + 2) * FLT_EPSILON;
          EXPECT_NEAR(got8[row], want8, bound * scale8 + 1e-30) << what << " q8";
          EXPECT_NEAR(got4[row], want4, bound * scale4 + 1e-30) << what << " q4";
        }
      }
    }
  });
}

// The integer GEMM of prompts (paths that have one): prepare_x is
// quantize_q8's blocks (values + 128, scales widened), and each output is
// Σ_b (exact integer sum)·scale_x·scale_w, up to the f32 rounding of the
// scale products and of the sum over blocks: (blocks + 2)·ε·Σ|x·w|. Odd
// row and column counts cross every tile and panel edge; weights take
// their extreme levels (q8 -128 and 127, q4 0 and 15) and x has an all-zero
// block.
void check_quant_gemm(const slm::cpu::QuantGemmKernels* gemm, const std::string& path) {
  for (int64_t blocks : {1, 2, 3, 9}) {
    const int64_t K = blocks * slm::kQuantBlock;
    for (int64_t M : {1, 3, 4, 5, 9, 20, 40}) {
      for (int64_t N : {1, 17, 48, 50, 97}) {
        const std::string what = path + " M=" + std::to_string(M) +
                                 " N=" + std::to_string(N) + " K=" + std::to_string(K);
        std::vector<float> x = random_vector(M * K, uint64_t(M * 131 + N * 7 + K), 3.0);
        std::fill_n(x.begin(), slm::kQuantBlock, 0.0f);
        std::vector<slm::BlockQ8> xb(size_t(M * blocks)), w8(size_t(N * blocks));
        std::vector<slm::BlockQ4> w4(size_t(N * blocks));
        std::vector<uint8_t> xq(size_t(M * K));
        std::vector<float> xs(size_t(M * blocks));
        for (int64_t m = 0; m < M; ++m) {
          slm::quantize_q8(x.data() + m * K, K, xb.data() + m * blocks);
          gemm->prepare_x(x.data() + m * K, K, xq.data() + m * K, xs.data() + m * blocks);
          for (int64_t b = 0; b < blocks; ++b) {
            const slm::BlockQ8& want = xb[size_t(m * blocks + b)];
            ASSERT_EQ(xs[size_t(m * blocks + b)], slm::f16_to_f32(want.scale)) << what << " row " << m;
            for (int i = 0; i < slm::kQuantBlock; ++i) {
              ASSERT_EQ(int(xq[size_t(m * K + b * slm::kQuantBlock + i)]), want.q[i] + 128) << what << " row " << m;
            }
          }
        }
        uint64_t state = uint64_t(N * 977 + K);
        auto next = [&] { return state = state * 6364136223846793005ull + 1442695040888963407ull, int(state >> 33); };
        for (size_t i = 0; i < w8.size(); ++i) {
          const bool extreme = i % 5 == 1;
          w8[i].scale = w4[i].scale = slm::f32_to_f16(0.001f * float(1 + next() % 100));
          for (int j = 0; j < slm::kQuantBlock; ++j) {
            w8[i].q[j] = static_cast<int8_t>(extreme ? (j % 2 ? -128 : 127) : next() % 256 - 128);
          }
          for (int j = 0; j < slm::kQuantBlock / 2; ++j) {
            w4[i].q[j] = static_cast<uint8_t>(extreme ? (j % 2 ? 0xff : 0x00) : next() & 0xff);
          }
        }
        for (DType dtype : {DType::Q8, DType::Q4}) {
          const void* w = dtype == DType::Q8 ? static_cast<const void*>(w8.data()) : w4.data();
          const int64_t ldc = N + 3;
          std::vector<float> got(size_t(M * ldc), std::numeric_limits<float>::quiet_NaN());
          gemm->gemm(xq.data(), xs.data(), M, dtype, w, N, K, got.data(), ldc);
          for (int64_t m = 0; m < M; ++m) {
            for (int64_t n = 0; n < N; ++n) {
              double want = 0.0, scale = 0.0;
              for (int64_t b = 0; b < blocks; ++b) {
                const slm::BlockQ8& xblock = xb[size_t(m * blocks + b)];
                int64_t sum = 0, magnitude = 0;
                for (int i = 0; i < slm::kQuantBlock; ++i) {
                  const slm::BlockQ4& b4 = w4[size_t(n * blocks + b)];
                  const int level = dtype == DType::Q8 ? w8[size_t(n * blocks + b)].q[i]
                                                       : (i < 16 ? b4.q[i] & 0x0f : b4.q[i - 16] >> 4) - 8;
                  sum += int64_t(xblock.q[i]) * level;
                  magnitude += std::abs(int64_t(xblock.q[i]) * level);
                }
                const double s = double(slm::f16_to_f32(xblock.scale)) * slm::f16_to_f32(w8[size_t(n * blocks + b)].scale);
                want += double(sum) * s;
                scale += double(magnitude) * s;
              }
              const double bound = double(blocks + 2) * FLT_EPSILON * scale + 1e-30;
              ASSERT_NEAR(got[size_t(m * ldc + n)], want, bound) << what << " " << slm::dtype_name(dtype) << " row " << m << " col " << n;
            }
            for (int64_t n = N; n < ldc; ++n) {
              ASSERT_TRUE(std::isnan(got[size_t(m * ldc + n)])) << what << ": wrote past column N";
            }
          }
        }
      }
    }
  }
}

TEST(QuantGemm, EqualsTheScaledIntegerSums) {
  slm::test::for_each_isa([&](Isa isa) {
    if (const slm::cpu::QuantGemmKernels* gemm = slm::cpu::quant_gemm_kernels()) {
      check_quant_gemm(gemm, std::string(slm::cpu::isa_name(isa)));
    }
  });
  if (!slm::cpu::quant_gemm_kernels()) GTEST_SKIP() << "no path of this CPU has an integer GEMM (AVX2, AVX-VNNI, AVX512-VNNI and ARM I8MM have one)";
}


// The bf16 GEMM of paths with bf16 instructions (avx512bf16, amx, neonbf16):
// narrow() is f32_to_bf16 (ties to even, NaN kept), and C (+)= A·op(B) is
// the sum of the bf16 products within (K + 2)·ε·Σ|a·b|, for both layouts
// of B, with and without accumulation, on sizes that cross every tile and
// panel edge and an odd K; nothing past N in a row of C is written.
void check_bf16_gemm(const slm::cpu::Bf16GemmKernels* kernels, const std::string& path) {
  const std::vector<float> ties = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -0x1p-130f, 3.0e38f,
                                   std::numeric_limits<float>::quiet_NaN(), -0.0f, 1.5f, 0x1.fffffep127f, 7.0f};
  std::vector<uint16_t> narrowed(ties.size());
  kernels->narrow(ties.data(), int64_t(ties.size()), narrowed.data());
  for (size_t i = 0; i < ties.size(); ++i) {
    ASSERT_EQ(narrowed[i], slm::f32_to_bf16(ties[i])) << path << " narrow of " << ties[i];
  }
  for (const auto [M, N, K] : {std::array<int64_t, 3>{1, 1, 1}, {3, 9, 5}, {9, 17, 37}, {17, 50, 70}, {2, 97, 8}, {64, 33, 96}, {40, 20, 64}}) {
    const int64_t lda = (K + 1) / 2 * 2;
    std::vector<uint16_t> A(size_t(M * lda), 0);
    const std::vector<float> a32 = random_vector(M * K, uint64_t(M * 7 + K));
    for (int64_t m = 0; m < M; ++m) kernels->narrow(a32.data() + m * K, K, A.data() + m * lda);
    for (const slm::cpu::Bf16Layout layout : {slm::cpu::Bf16Layout::NK, slm::cpu::Bf16Layout::KN}) {
      const bool nk = layout == slm::cpu::Bf16Layout::NK;
      const int64_t ldb = (nk ? K : N) + 3;
      std::vector<uint16_t> B(size_t((nk ? N : K) * ldb));
      const std::vector<float> b32 = random_vector(int64_t(B.size()), uint64_t(N * 5 + K));
      for (size_t i = 0; i < B.size(); ++i) B[i] = slm::f32_to_bf16(b32[i]);
      const auto b_at = [&](int64_t n, int64_t k) { return slm::bf16_to_f32(B[size_t(nk ? n * ldb + k : k * ldb + n)]); };
      for (const bool accumulate : {false, true}) {
        const int64_t ldc = N + 2;
        std::vector<float> C = random_vector(M * ldc, 3);
        const std::vector<float> C0 = C;
        kernels->gemm(A.data(), M, lda, B.data(), ldb, layout, N, K, C.data(), ldc, accumulate);
        const std::string what = path + " " + std::to_string(M) + "x" +
                                 std::to_string(N) + "x" + std::to_string(K) + (nk ? " NK" : " KN") +
                                 (accumulate ? " accumulate" : "");
        for (int64_t m = 0; m < M; ++m) {
          for (int64_t n = 0; n < N; ++n) {
            double want = accumulate ? C0[size_t(m * ldc + n)] : 0.0, scale = std::fabs(want);
            for (int64_t k = 0; k < K; ++k) {
              const double p = double(slm::bf16_to_f32(A[size_t(m * lda + k)])) * b_at(n, k);
              want += p;
              scale += std::fabs(p);
            }
            ASSERT_NEAR(C[size_t(m * ldc + n)], want, double(K + 2) * FLT_EPSILON * scale + 1e-30)
                << what << " at " << m << "," << n;
          }
          for (int64_t n = N; n < ldc; ++n) ASSERT_EQ(C[size_t(m * ldc + n)], C0[size_t(m * ldc + n)]) << what;
        }
      }
    }
  }
}

TEST(Bf16Gemm, EqualsTheSumsOfTheBf16Products) {
  slm::test::for_each_isa([&](Isa isa) {
    if (const slm::cpu::Bf16GemmKernels* kernels = slm::cpu::bf16_gemm_kernels()) {
      check_bf16_gemm(kernels, std::string(slm::cpu::isa_name(isa)));
    }
  });
  if (!slm::cpu::bf16_gemm_kernels()) GTEST_SKIP() << "no path of this CPU has bf16 instructions (AVX512-BF16, ARM BF16)";
}

#if defined(__x86_64__)
// The AMX GEMMs' blocking, packing, edges and scaling, with the tile
// instructions computed by their software model (amx_tiles.h): on every CPU
// with AVX512-BF16, where the amx path itself (run above, where the CPU has
// AMX) cannot be.
TEST(AmxGemm, KernelsOnTheTileModelEqualTheSums) {
  slm::test::IsaGuard guard;
  slm::cpu::force_isa(Isa::Avx512Bf16);
  if (slm::cpu::active_isa() < Isa::Avx512Bf16) GTEST_SKIP() << "the AMX kernels' vector code needs AVX512-BF16";
  const slm::cpu::Bf16GemmKernels bf16 = slm::cpu::amx_model_bf16_kernels();
  check_bf16_gemm(&bf16, "amx model");
  const slm::cpu::QuantGemmKernels quantized = slm::cpu::amx_model_quant_kernels();
  check_quant_gemm(&quantized, "amx model");
}

// bf16_gemm_parallel over the amx kernels (on the tile model): the
// activations packed once per product, each tile of C computed from its row
// offset in the packed rows, two operands at once (one with a bias), on
// rows that cross several row tiles and K both whole and ragged chunks.
TEST(AmxGemm, ParallelProductsFromPackedActivationsOnTheTileModel) {
  slm::test::IsaGuard guard;
  slm::cpu::force_isa(Isa::Avx512Bf16);
  if (slm::cpu::active_isa() < Isa::Avx512Bf16) GTEST_SKIP() << "the AMX kernels' vector code needs AVX512-BF16";
  const slm::cpu::Bf16GemmKernels kernels = slm::cpu::amx_model_bf16_kernels();
  for (const int64_t K : {64, 70}) {
    const int64_t M = 200;
    const std::vector<float> x = random_vector(M * K, uint64_t(K));
    const int64_t widths[2] = {50, 33};
    std::vector<std::vector<uint16_t>> weights(2);
    std::vector<std::vector<float>> outputs(2);
    const std::vector<float> bias = random_vector(widths[1], 9);
    std::vector<slm::cpu::Bf16Operand> operands;
    for (int o = 0; o < 2; ++o) {
      const std::vector<float> w = random_vector(widths[o] * K, uint64_t(10 + o));
      for (float v : w) weights[size_t(o)].push_back(slm::f32_to_bf16(v));
      outputs[size_t(o)].assign(size_t(M * widths[o]), std::numeric_limits<float>::quiet_NaN());
      operands.push_back({weights[size_t(o)].data(), K, slm::cpu::Bf16Layout::NK, widths[o], o == 1 ? bias.data() : nullptr,
                          outputs[size_t(o)].data()});
    }
    slm::cpu::bf16_gemm_parallel(kernels, x.data(), M, K, operands, false);
    for (int o = 0; o < 2; ++o) {
      for (int64_t m = 0; m < M; ++m) {
        for (int64_t n = 0; n < widths[o]; ++n) {
          double want = o == 1 ? bias[size_t(n)] : 0.0, scale = std::fabs(want);
          for (int64_t k = 0; k < K; ++k) {
            const double p = double(slm::bf16_to_f32(slm::f32_to_bf16(x[size_t(m * K + k)]))) *
                             slm::bf16_to_f32(weights[size_t(o)][size_t(n * K + k)]);
            want += p;
            scale += std::fabs(p);
          }
          ASSERT_NEAR(outputs[size_t(o)][size_t(m * widths[o] + n)], want, double(K + 2) * FLT_EPSILON * scale + 1e-30)
              << "K=" << K << " operand " << o << " at " << m << "," << n;
        }
      }
    }
  }
}

// quant_gemm_parallel over the amx kernels (on the tile model): the prepared
// rows packed once, each task computed from its row offset in them, a q8
// and a q4 projection at once (one with a bias), rows crossing several
// row blocks; held to the reference on the activations as quantized.
TEST(AmxGemm, ParallelQuantizedProductsFromPackedRowsOnTheTileModel) {
  slm::test::IsaGuard guard;
  slm::cpu::force_isa(Isa::Avx512Bf16);
  if (slm::cpu::active_isa() < Isa::Avx512Bf16) GTEST_SKIP() << "the AMX kernels' vector code needs AVX512-BF16";
  const slm::cpu::QuantGemmKernels kernels = slm::cpu::amx_model_quant_kernels();
  const int64_t M = 200, K = 96;
  const std::vector<float> x = random_vector(M * K, 21);
  const Tensor W8 = random_weight(DType::Q8, 50, K, 22), W4 = random_weight(DType::Q4, 120, K, 23);
  const std::vector<float> bias = random_vector(120, 24);
  std::vector<float> y8(size_t(M * 50), std::numeric_limits<float>::quiet_NaN()), y4(size_t(M * 120), y8[0]);
  const slm::Projection projections[2] = {{&W8, nullptr, y8.data()}, {&W4, bias.data(), y4.data()}};
  slm::cpu::quant_gemm_parallel(kernels, x.data(), M, K, projections);
  const std::vector<float> quantized = seen_activations(DType::Q8, M, K, x);
  for (const auto& [W, b, y] : {std::tuple{&W8, (const float*)nullptr, &y8}, std::tuple{&W4, bias.data(), &y4}}) {
    std::vector<float> want(y->size());
    slm::cpu::matmul_reference(quantized.data(), M, K, *W, b, want.data());
    expect_close(*y, want, magnitudes(quantized, M, K, *W, b), double(K + 2) * FLT_EPSILON,
                 std::string("amx model ") + std::string(slm::dtype_name(W->dtype())));
  }
}

// The tile instructions themselves, where the CPU has them and Linux grants
// the process their state (the loops over paths above run them too); said
// plainly where not.
TEST(AmxGemm, HardwareKernelsEqualTheSums) {
  slm::test::IsaGuard guard;
  slm::cpu::force_isa(Isa::Amx);
  if (slm::cpu::active_isa() != Isa::Amx) {
    GTEST_SKIP() << "no AMX on this CPU (or not granted by the kernel): the amx kernels ran on the tile model only";
  }
  check_bf16_gemm(slm::cpu::bf16_gemm_kernels(), "amx");
  check_quant_gemm(slm::cpu::quant_gemm_kernels(), "amx");
}
#endif


// The sgemm of paths that have their own (AVX-512), against the formula in
// double for every transpose, on sizes that cross the 12-row tiles, the
// 32-column panels and the 256-deep blocks, and take the few-row paths (B
// read in place, dot products against Bᵀ) with ragged N and K, with alpha
// and beta as BLAS takes them: beta 0 never reads C (NaN there stays out of
// the result).
TEST(Sgemm, EveryPathMatchesTheFormula) {
  int paths = 0;
  slm::test::for_each_isa([&](Isa isa) {
    const auto own = slm::cpu::vector_kernels().sgemm;
    if (!own) return;
    ++paths;
    for (const auto [M, N, K] :
         {std::array<int64_t, 3>{1, 1, 1}, {13, 33, 17}, {25, 70, 300}, {12, 32, 256}, {7, 5, 0}, {3, 70, 300}, {9, 45, 270},
          {4, 64, 64}, {2, 130, 65}, {4, 17, 3}}) {
      for (bool trans_a : {false, true}) {
        for (bool trans_b : {false, true}) {
          for (const auto [alpha, beta] : {std::array<float, 2>{1.0f, 0.0f}, {0.5f, 2.0f}, {-1.0f, 1.0f}}) {
            const int64_t lda = (trans_a ? M : K) + 3, ldb = (trans_b ? K : N) + 2, ldc = N + 1;
            const std::vector<float> A = random_vector(std::max<int64_t>(1, (trans_a ? K : M) * lda), 11);
            const std::vector<float> B = random_vector(std::max<int64_t>(1, (trans_b ? N : K) * ldb), 12);
            std::vector<float> C = random_vector(M * ldc, 13);
            if (beta == 0.0f) std::fill(C.begin(), C.end(), std::numeric_limits<float>::quiet_NaN());
            const std::vector<float> C0 = C;
            own(trans_a, trans_b, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
            const std::string what = std::string(slm::cpu::isa_name(isa)) + " " + std::to_string(M) + "x" +
                                     std::to_string(N) + "x" + std::to_string(K) + " trans_a " +
                                     std::to_string(trans_a) + " trans_b " + std::to_string(trans_b) + " beta " +
                                     std::to_string(beta);
            for (int64_t m = 0; m < M; ++m) {
              for (int64_t n = 0; n < N; ++n) {
                double want = beta == 0.0f ? 0.0 : double(beta) * C0[size_t(m * ldc + n)];
                double scale = std::fabs(want);
                for (int64_t k = 0; k < K; ++k) {
                  const double a = A[size_t(trans_a ? k * lda + m : m * lda + k)];
                  const double b = B[size_t(trans_b ? n * ldb + k : k * ldb + n)];
                  want += double(alpha) * a * b;
                  scale += std::fabs(double(alpha) * a * b);
                }
                ASSERT_NEAR(C[size_t(m * ldc + n)], want, double(K + 2) * FLT_EPSILON * scale + 1e-30)
                    << what << " at " << m << "," << n;
              }
              if (beta != 0.0f) {
                ASSERT_EQ(C[size_t(m * ldc + N)], C0[size_t(m * ldc + N)]) << what << ": wrote past N";
              }
            }
          }
        }
      }
    }
  });
  if (paths == 0) GTEST_SKIP() << "no path of this CPU has an sgemm of its own (AVX-512 and AVX2 have one)";
}
