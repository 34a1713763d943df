// The machine's own limits, measured in the same run as a benchmark so that
// speed can be reported as a share of what the hardware allows.
#pragma once

#include <optional>
#include <string>

namespace slm {

struct MachineLimits {
  int threads = 0;
  std::string isa;                    // the kernel path in use: amx, avx512bf16, avx512, avx2, neon…, scalar
  double read_gb_per_s = 0;           // streaming read of a buffer far larger than the caches, all threads
  double f32_fma_gflops = 0;          // peak f32 FMA throughput (registers only), all threads
  std::optional<double> bf16_dot_gflops;  // peak AVX512-BF16 dot-product throughput, when the CPU has it
  // Peak int8 dot-product throughput of the path's integer kernels (VNNI
  // vpdpbusd, or AVX2 vpmaddubsw + vpmaddwd), a multiply and an add counted
  // as two operations; absent on the portable path.
  std::optional<double> int8_dot_gops;
  // Peaks of the AMX tile products (tdpbf16ps, tdpbusd), where the path is amx.
  std::optional<double> amx_bf16_gflops;
  std::optional<double> amx_int8_gops;
  bool int8_gemm = false;             // q8/q4 prompts run through the integer GEMM (else f32 widening)
  double sgemm_gflops = 0;            // OpenBLAS f32 GEMM 1024³ achieved, all threads
};

MachineLimits probe_machine();

}  // namespace slm
