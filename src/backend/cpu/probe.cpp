// Measures read bandwidth and peak arithmetic throughput with tiny loops
// whose cost is known exactly, so benchmarks can be read as a share of them.
#include <slm/machine.h>

#include "backend/cpu/simd.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace slm {

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

template <class F>
double best_of(int runs, F f) {
  double best = 1e30;
  for (int r = 0; r < runs; ++r) {
    const double t0 = now();
    f();
    best = std::min(best, now() - t0);
  }
  return best;
}

double read_bandwidth() {
  // 512 MiB: far beyond any last-level cache, so every pass comes from DRAM.
  const size_t n = (size_t{512} << 20) / sizeof(float);
  float* data = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) data[i] = static_cast<float>(i & 7);
  volatile float sink = 0;
  // The widest dot-product kernel of x with itself: one stream of loads with
  // enough independent accumulators that the adds never limit it.
  const cpu::VectorKernels& kernels = cpu::vector_kernels();
  const double seconds = best_of(5, [&] {
    float total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (size_t block = 0; block < n; block += 4096) total += kernels.f32(data + block, data + block, 4096);
    sink = sink + total;
  });
  std::free(data);
  return static_cast<double>(n * sizeof(float)) / seconds / 1e9;
}

// The portable path's peak: 8 independent chains of 16 lanes, which the
// compiler vectorises for the baseline target (SSE2, NEON); 8 × 16 × 2 flops
// per iteration.
double fma_loop_portable(int64_t iterations) {
  float a[8][16];
  for (int j = 0; j < 8; ++j) std::fill_n(a[j], 16, static_cast<float>(j) * 1e-3f);
  for (int64_t i = 0; i < iterations; ++i) {
    for (int j = 0; j < 8; ++j) {
#pragma omp simd
      for (int l = 0; l < 16; ++l) a[j][l] = a[j][l] * 0.999f + 1e-4f;
    }
  }
  float s = 0;
  for (int j = 0; j < 8; ++j) s += a[j][0];
  return s;
}

#if defined(__x86_64__)
// 8 independent 16-lane FMA chains: 8 × 16 × 2 flops per iteration.
__attribute__((target("avx512f"))) double fma_loop_avx512(int64_t iterations) {
  __m512 a[8];
  for (int j = 0; j < 8; ++j) a[j] = _mm512_set1_ps(static_cast<float>(j) * 1e-3f);
  const __m512 b = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-4f);
  for (int64_t i = 0; i < iterations; ++i) {
    for (int j = 0; j < 8; ++j) a[j] = _mm512_fmadd_ps(a[j], b, c);
  }
  __m512 s = a[0];
  for (int j = 1; j < 8; ++j) s = _mm512_add_ps(s, a[j]);
  float out[16];
  _mm512_storeu_ps(out, s);
  return out[0];
}

__attribute__((target("avx2,fma"))) double fma_loop_avx2(int64_t iterations) {
  __m256 a[10];
  for (int j = 0; j < 10; ++j) a[j] = _mm256_set1_ps(static_cast<float>(j) * 1e-3f);
  const __m256 b = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-4f);
  for (int64_t i = 0; i < iterations; ++i) {
    for (int j = 0; j < 10; ++j) a[j] = _mm256_fmadd_ps(a[j], b, c);
  }
  __m256 s = a[0];
  for (int j = 1; j < 10; ++j) s = _mm256_add_ps(s, a[j]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0];
}

// vdpbf16ps: each of 16 lanes does two bf16 multiplies and two adds.
__attribute__((target("avx512f,avx512bf16"))) double bf16_loop(int64_t iterations) {
  __m512 a[8];
  for (int j = 0; j < 8; ++j) a[j] = _mm512_setzero_ps();
  const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3f80);
  for (int64_t i = 0; i < iterations; ++i) {
    for (int j = 0; j < 8; ++j) a[j] = _mm512_dpbf16_ps(a[j], b, b);
  }
  __m512 s = a[0];
  for (int j = 1; j < 8; ++j) s = _mm512_add_ps(s, a[j]);
  float out[16];
  _mm512_storeu_ps(out, s);
  return out[0];
}

// vpdpbusd: each of 16 lanes does four u8 × s8 multiplies and four adds.
__attribute__((target("avx512f,avx512vnni"))) double int8_loop_vnni(int64_t iterations) {
  __m512i a[8];
  for (int j = 0; j < 8; ++j) a[j] = _mm512_setzero_si512();
  const __m512i b = _mm512_set1_epi8(1);
  for (int64_t i = 0; i < iterations; ++i) {
    for (int j = 0; j < 8; ++j) a[j] = _mm512_dpbusd_epi32(a[j], b, b);
  }
  __m512i s = a[0];
  for (int j = 1; j < 8; ++j) s = _mm512_add_epi32(s, a[j]);
  int32_t out[16];
  _mm512_storeu_si512(out, s);
  return out[0];
}

// vpdpbusd on 256-bit registers (AVX-VNNI): 8 lanes × 4 multiplies and adds.
__attribute__((target("avx2,avxvnni"))) double int8_loop_avxvnni(int64_t iterations) {
  __m256i a[8];
  for (int j = 0; j < 8; ++j) a[j] = _mm256_setzero_si256();
  const __m256i b = _mm256_set1_epi8(1);
  for (int64_t i = 0; i < iterations; ++i) {
    for (int j = 0; j < 8; ++j) a[j] = _mm256_dpbusd_avx_epi32(a[j], b, b);
  }
  __m256i s = a[0];
  for (int j = 1; j < 8; ++j) s = _mm256_add_epi32(s, a[j]);
  int32_t out[8];
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), s);
  return out[0];
}

// The AVX2 integer dot product as its kernels issue it: vpmaddubsw (32
// products into 16 pairs) and vpmaddwd (8 sums of pairs), added into 8
// lanes; 32 multiplies and 32 adds per chain and iteration.
__attribute__((target("avx2"))) double int8_loop_avx2(int64_t iterations) {
  __m256i a[6];
  for (int j = 0; j < 6; ++j) a[j] = _mm256_setzero_si256();
  __m256i b[6];
  for (int j = 0; j < 6; ++j) b[j] = _mm256_set1_epi8(static_cast<char>(j + 1));
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t i = 0; i < iterations; ++i) {
    for (int j = 0; j < 6; ++j) {
      // The products do not depend on the sums: without this, the compiler
      // computes them once, outside the loop, and the loop measures the adds.
      __asm__ volatile("" : "+x"(b[j]));
      a[j] = _mm256_add_epi32(a[j], _mm256_madd_epi16(_mm256_maddubs_epi16(b[j], b[j]), ones));
    }
  }
  __m256i s = a[0];
  for (int j = 1; j < 6; ++j) s = _mm256_add_epi32(s, a[j]);
  int32_t out[8];
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), s);
  return out[0];
}
#endif

// Runs `loop` on every thread and returns the aggregate GFLOP/s.
double peak(double (*loop)(int64_t), double flops_per_iteration) {
  constexpr int64_t kIterations = 20'000'000;
  volatile double sink = 0;
  const double seconds = best_of(3, [&] {
#pragma omp parallel
    { sink = sink + loop(kIterations); }
  });
  return flops_per_iteration * static_cast<double>(kIterations) * omp_get_max_threads() / seconds / 1e9;
}

double sgemm_rate() {
  const int n = 1024;
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size());
  openblas_set_num_threads(omp_get_max_threads());
  auto run = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  };
  run();
  const double seconds = best_of(5, run);
  openblas_set_num_threads(1);
  return 2.0 * n * n * static_cast<double>(n) / seconds / 1e9;
}

}  // namespace

MachineLimits probe_machine() {
  MachineLimits limits;
  limits.threads = omp_get_max_threads();
  limits.isa = std::string(cpu::isa_name(cpu::active_isa()));
  limits.read_gb_per_s = read_bandwidth();
#if defined(__x86_64__)
  if (cpu::active_isa() >= cpu::Isa::Avx512) {
    limits.f32_fma_gflops = peak(fma_loop_avx512, 8 * 16 * 2);
  } else if (cpu::active_isa() >= cpu::Isa::Avx2) {
    limits.f32_fma_gflops = peak(fma_loop_avx2, 10 * 8 * 2);
  } else {
    limits.f32_fma_gflops = peak(fma_loop_portable, 8 * 16 * 2);
  }
  if (cpu::active_isa() >= cpu::Isa::Avx512Bf16) {
    limits.bf16_dot_gflops = peak(bf16_loop, 8 * 16 * 4);
    limits.int8_dot_gops = peak(int8_loop_vnni, 8 * 16 * 8);
  } else if (cpu::active_isa() == cpu::Isa::Avx2Vnni) {
    limits.int8_dot_gops = peak(int8_loop_avxvnni, 8 * 8 * 8);
  } else if (cpu::active_isa() >= cpu::Isa::Avx2) {
    limits.int8_dot_gops = peak(int8_loop_avx2, 6 * 8 * 8);
  }
  if (cpu::active_isa() == cpu::Isa::Amx) {
    limits.amx_bf16_gflops = peak(cpu::amx_bf16_loop, 4 * 16 * 16 * 32 * 2);
    limits.amx_int8_gops = peak(cpu::amx_int8_loop, 4 * 16 * 16 * 64 * 2);
  }
  limits.int8_gemm = cpu::quant_gemm_kernels() != nullptr;
#else
  limits.f32_fma_gflops = peak(fma_loop_portable, 8 * 16 * 2);
#endif
  limits.sgemm_gflops = sgemm_rate();
  return limits;
}

}  // namespace slm
