// The instruction-set paths of the hot CPU loops. Each path lives in its own
// file compiled for its target; `active_isa()` picks the best one the CPU
// has, once. SLM_CPU_ISA names another one the CPU runs (tests use it to
// check every path on one machine): on x86 scalar, avx2 (AVX2, FMA, F16C),
// avx2vnni (that one with AVX-VNNI's integer GEMM for q8/q4 prompts: Intel's
// client cores since Alder Lake), avx512 (AVX-512 F/BW/VL), avx512bf16 (plus
// the bf16 and int8 dot products, AVX512_BF16 and AVX512_VNNI) and amx (that
// one with the prompt's bf16 and int8 GEMMs on AMX tiles, where the CPU has
// AMX-BF16/INT8 and Linux grants the process their state). On AArch64 the
// paths are scalar, neon (Advanced SIMD), neondot (plus SDOT, ASIMDDP) and
// neonbf16 (plus the bf16 and int8 matrix instructions of ARMv8.6, BF16 and
// I8MM); a path of the other architecture is never chosen.
#pragma once

#include "backend/backend.h"
#include "core/quant.h"

#include <slm/tensor.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <string_view>

// SLM_TARGET_BEGIN("avx2,fma") ... SLM_TARGET_END: the functions between
// them are compiled for those instructions. GCC's `#pragma GCC target`
// covers the rest of the file; clang knows no such pragma, but applies a
// target attribute to every function between a push and a pop.
#define SLM_PRAGMA(text) _Pragma(#text)
#if defined(__clang__)
#define SLM_TARGET_BEGIN(features) \
  SLM_PRAGMA(clang attribute push(__attribute__((target(features))), apply_to = function))
#define SLM_TARGET_END SLM_PRAGMA(clang attribute pop)
#else
#define SLM_TARGET_BEGIN(features) SLM_PRAGMA(GCC target(features))
#define SLM_TARGET_END
#endif

namespace slm::cpu {

// In order of capability within each architecture (Scalar below all); a CPU
// may lack a lower path (avx2vnni needs AVX-VNNI, which some AVX-512 CPUs
// have not), so which ones run is asked per path.
enum class Isa { Scalar, Avx2, Avx2Vnni, Avx512, Avx512Bf16, Amx, Neon, NeonDot, NeonBf16 };

Isa active_isa();
std::string_view isa_name(Isa isa);
// Overrides the detected path (never above what the CPU supports); for tests and benchmarks.
void force_isa(Isa isa);

// How far ahead of their reading decode's dot products ask for a weight
// row's bytes (past the row's end, the next row's). One core streaming a
// matrix keeps only as many loads in flight as its loop issues: a kilobyte
// ahead left Llama-3.2-1B's q4 decode at 37 GB/s of a 52 GB/s machine, 8 KiB
// took it to 50-60 (docs/benchmarks.md).
constexpr int64_t kDecodePrefetchBytes = 8192;

// Asks for the cache lines of the `Bytes` a loop step reads from `at`,
// kDecodePrefetchBytes ahead.
template <int64_t Bytes>
[[gnu::always_inline]] inline void prefetch_ahead(const void* at) {
  for (int64_t line = 0; line < Bytes; line += 64) {
    __builtin_prefetch(static_cast<const char*>(at) + kDecodePrefetchBytes + line);
  }
}

// The vector loops of the kernels. Dot products of f32 activations with one
// weight row accumulate in f32 (q8/q4 rows have QuantDotKernels instead).
struct VectorKernels {
  float (*f32)(const float* x, const float* w, int64_t k);
  float (*bf16)(const float* x, const uint16_t* w, int64_t k);
  // bf16 rows against an x rearranged once by prepare_bf16_x into
  // round_up(k, 32) floats: the layout that path's bf16_prepared reads
  // (AVX512-BF16 and NEON-BF16: x rounded to bf16, as their bf16 GEMMs
  // round it, in the first half, for their bf16 dot instructions; the
  // others: x as it is, copy_padded).
  void (*prepare_bf16_x)(const float* x, int64_t k, float* out);
  float (*bf16_prepared)(const float* x, const uint16_t* w, int64_t k);
  float (*f16)(const float* x, const uint16_t* w, int64_t k);
  // Widens n 16-bit weights to f32 (GEMM panels).
  void (*widen_bf16)(const uint16_t* w, int64_t n, float* out);
  void (*widen_f16)(const uint16_t* w, int64_t n, float* out);
  void (*widen_q8)(const BlockQ8* w, int64_t n, float* out);
  void (*widen_q4)(const BlockQ4* w, int64_t n, float* out);
  // C[m,n] = A[m,k]·Wᵀ for n rows of a weight of `dtype` as stored (row
  // length k, for q8/q4 a multiple of 32) in f32 arithmetic; lda and ldc are
  // row strides. The product of a few dozen rows and up, where a BLAS spent
  // more on widening and packing the weights than on FMAs. Null where the
  // path has none (matmul then widens weight panels for OpenBLAS, whose
  // AVX-512 and NEON kernels serve those paths).
  void (*gemm_nt)(const float* a, int64_t m, int64_t lda, DType dtype, const void* w, int64_t n, int64_t k, float* c,
                  int64_t ldc);
  // C = alpha·op(A)·op(B) + beta·C in f32, as BLAS sgemm (row-major; with
  // beta 0, C is not read), single-threaded, allocating nothing per call.
  // The x86 paths have one (OpenBLAS's AVX-512 kernels are not chosen under
  // the OPENBLAS_CORETYPE some machines set, and its small-matrix path
  // allocates per attention tile); null where OpenBLAS's serves (ARM).
  void (*sgemm)(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
  // y += a·x, x in f32, bf16 or f16
  void (*axpy)(float a, const float* x, float* y, int64_t n);
  void (*axpy_bf16)(float a, const uint16_t* x, float* y, int64_t n);
  void (*axpy_f16)(float a, const uint16_t* x, float* y, int64_t n);
  // out = gate · sigmoid(gate) · up; out may alias gate
  void (*silu_mul)(const float* gate, const float* up, float* out, int64_t n);
  // out = e^(x − shift), elementwise (out may alias x); returns Σ out. For
  // softmax numerators with shift ≥ max x (the cross-entropy over the
  // vocabulary, attention tiles); x is finite or -inf (a masked score,
  // whose e^-inf is exactly 0).
  double (*exp_shifted)(const float* x, float shift, float* out, int64_t n);
};

const VectorKernels& vector_kernels();

// How a bf16 B operand is laid out: NK is [N][K] (a weight as stored, so the
// product is A·Bᵀ), KN is [K][N] (the same weight read for the input
// gradient dy·W, which then needs no transposed copy). ldb is the row stride.
enum class Bf16Layout { NK, KN };

// C[M,N] (+)= A[M,K] · B with A and B in bf16 and C in f32. A has an even
// leading dimension lda ≥ K, zero past K. With `accumulate` the product is
// added to C. narrow() rounds f32 activations to bf16 (nearest even).
struct Bf16GemmKernels {
  void (*gemm)(const uint16_t* A, int64_t M, int64_t lda, const uint16_t* B, int64_t ldb, Bf16Layout layout,
               int64_t N, int64_t K, float* C, int64_t ldc, bool accumulate);
  void (*narrow)(const float* x, int64_t n, uint16_t* out);
  // Where a path's NK products read A in a packed form of its own (amx:
  // tiles of 16 rows), packed once per product rather than each weight
  // panel once per call: the bytes of M rows of K packed, the packing of
  // rows [0, M) of A (lda as above), and C (+)= rows [m0, m0 + M) of the
  // packed A (m0 a multiple of 16) times N rows of an NK weight. Null on
  // paths without one; `gemm` computes the same from A as it is.
  int64_t (*packed_a_bytes)(int64_t M, int64_t K);
  void (*pack_a)(const uint16_t* A, int64_t M, int64_t lda, int64_t K, void* packed);
  void (*gemm_packed)(const void* packed, int64_t m0, int64_t M, const uint16_t* B, int64_t ldb, int64_t N, int64_t K,
                      float* C, int64_t ldc, bool accumulate);
};

// One right-hand operand of bf16_gemm_parallel and its product:
// y[M,N] (+)= x · B (+ bias[N] when not null).
struct Bf16Operand {
  const uint16_t* B;
  int64_t ldb;
  Bf16Layout layout;
  int64_t N;
  const float* bias;
  float* y;
};

// The products of one input x[M,K] with each operand, on every thread: x is
// rounded to bf16 once for all of them (q/k/v and gate/up share theirs), and
// the work is cut into tiles of each C for a balanced dynamic schedule.
void bf16_gemm_parallel(const Bf16GemmKernels& kernels, const float* x, int64_t M, int64_t K,
                        std::span<const Bf16Operand> operands, bool accumulate);

// prepare_bf16_x of the paths whose bf16 dot products take x rounded to
// bf16 by their `Narrow`: the rounded values, zero past k up to a multiple
// of 32, in the first half of the round_up(k, 32) floats.
template <void (*Narrow)(const float*, int64_t, uint16_t*)>
void prepare_narrowed_x(const float* x, int64_t k, float* out) {
  auto* narrowed = reinterpret_cast<uint16_t*>(out);
  Narrow(x, k, narrowed);
  std::fill(narrowed + k, narrowed + (k + 31) / 32 * 32, uint16_t{0});
}

// Null when the active path has no bf16 dot-product instructions. Where it
// has them (avx512bf16, neonbf16), bf16 products round their activations to
// bf16, decode's dot products (prepare_bf16_x) as well as the GEMM.
const Bf16GemmKernels* bf16_gemm_kernels();

// Dot products of q8/q4 weight rows (k/32 blocks, src/core/quant.h) with
// activations quantized once per product to q8 blocks (quantize_x gives
// exactly quantize_q8's blocks), in integer arithmetic, as quantized engines
// decode: 32 products in one instruction (VNNI) or two (AVX2), against about
// a dozen to widen 32 weights to f32. Each block's integer sum is exact; the
// product of the two blocks' scales multiplies it into an f32 total.
struct QuantDotKernels {
  void (*quantize_x)(const float* x, int64_t k, BlockQ8* out);
  // Where the dot products read x in a layout of their own, arrange_x
  // rewrites its k/32 blocks into arranged_bytes(k) bytes once per product;
  // both null where they read the blocks as they are.
  int64_t (*arranged_bytes)(int64_t k);
  void (*arrange_x)(const BlockQ8* x, int64_t k, void* out);
  // out[r] = Σ x·w_r for `rows` consecutive weight rows of k/32 blocks: one
  // call for a thread's share of a product, so what a row costs besides its
  // blocks (the call, constants, the last blocks, the reduction) is paid
  // once or overlaps the next row. Each path writes this loop in its own
  // file, compiled for its target, so that its row body inlines into it.
  void (*q8)(const void* x, const BlockQ8* w, int64_t k, int64_t rows, float* out);
  void (*q4)(const void* x, const BlockQ4* w, int64_t k, int64_t rows, float* out);
};

// The active path's: VNNI on the top path, AVX2's vpmaddubsw on the AVX-512
// and AVX2 paths, SDOT on neondot, NEON widening multiplies on neon, plain
// integer loops on the portable one.
const QuantDotKernels& quant_dot_kernels();

// Products of q8/q4 weights with many activation rows (prompts), in integer
// arithmetic as the dot products are: activations are quantized once per
// product to exactly quantize_q8's blocks, each block pair's integer sum is
// exact and its two scales multiply it into an f32 total. Widening the
// weights to f32 instead costs more than the products themselves.
struct QuantGemmKernels {
  // One activation row of k (a multiple of 32) as gemm reads it: the q8
  // values plus 128 as unsigned bytes (q[k]) and each block's scale as f32
  // (scales[k/32]).
  void (*prepare_x)(const float* x, int64_t k, uint8_t* q, float* scales);
  // C[m,n] = Σ_b xs[m,b]·ws[n,b]·Σ_{j in b} xq[m,j]·wq[n,j] for m prepared rows
  // (strides k and k/32) and n weight rows of `dtype` (Q8 or Q4) as stored;
  // ldc is C's row stride.
  void (*gemm)(const uint8_t* xq, const float* xs, int64_t m, DType dtype, const void* w, int64_t n, int64_t k,
               float* c, int64_t ldc);
  // Where a path reads the prepared rows in a packed form of its own (amx:
  // tiles of 16 rows), packed once per product: the bytes of m rows packed,
  // the packing of prepared rows [0, m), and C = rows [m0, m0 + m) of the
  // packed rows (m0 a multiple of 16) times n weight rows, as gemm. Null on
  // paths without one.
  int64_t (*packed_x_bytes)(int64_t m, int64_t k);
  void (*pack_x)(const uint8_t* xq, const float* xs, int64_t m, int64_t k, void* packed);
  void (*gemm_packed)(const void* packed, int64_t m0, int64_t m, DType dtype, const void* w, int64_t n, int64_t k,
                      float* c, int64_t ldc);
};

// Null when the active path has none (the avx2, avx2vnni, avx512bf16 (VNNI),
// amx and neonbf16 (I8MM) paths have one; the avx512 path has none).
const QuantGemmKernels* quant_gemm_kernels();

// y = x·Wᵀ (+ bias) for q8/q4 projections of one input x[M,K] in integers,
// on every thread: x prepared once for all of them (and packed once where
// the path packs), the outputs cut into tasks of 96 weight rows by a block
// of rows.
void quant_gemm_parallel(const QuantGemmKernels& kernels, const float* x, int64_t M, int64_t K,
                         std::span<const Projection> projections);

// What an sgemm with K = 0 leaves: C = beta·C (C not read when beta is 0).
inline void sgemm_empty_k(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) C[m * ldc + n] = beta == 0.0f ? 0.0f : beta * C[m * ldc + n];
  }
}

// x zero-padded to a multiple of 32: prepare_bf16_x of the paths that widen
// bf16 weights against x as it is.
void copy_padded(const float* x, int64_t k, float* out);

VectorKernels portable_kernels();
QuantDotKernels portable_quant_kernels();
// What every gemm_nt is tested against: each weight row widened, then dotted
// with each row of A.
void gemm_nt_reference(const float* a, int64_t m, int64_t lda, DType dtype, const void* w, int64_t n, int64_t k,
                       float* c, int64_t ldc);
#if defined(__x86_64__)
VectorKernels avx2_kernels();
QuantDotKernels avx2_quant_kernels();
// The integer GEMM of q8/q4 prompts on AVX2 (simd_avx2.cpp).
QuantGemmKernels avx2_gemm_kernels();
// AVX-VNNI's integer dot products and GEMM (simd_avx2vnni.cpp).
QuantDotKernels avx2vnni_quant_kernels();
QuantGemmKernels avx2vnni_gemm_kernels();
VectorKernels avx512_kernels();
// avx512_kernels() with the bf16 dot products of AVX512-BF16.
VectorKernels avx512bf16_vector_kernels();
Bf16GemmKernels avx512bf16_kernels();
QuantDotKernels avx512vnni_kernels();
QuantGemmKernels avx512vnni_gemm_kernels();
// The AMX GEMMs (simd_amx.cpp); callable only where the amx path is active.
Bf16GemmKernels amx_bf16_kernels();
QuantGemmKernels amx_quant_kernels();
// The same kernels over a software model of the tile instructions
// (amx_tiles.h), for tests on CPUs without AMX; they need avx512bf16.
Bf16GemmKernels amx_model_bf16_kernels();
QuantGemmKernels amx_model_quant_kernels();
// Loops of four independent tile products (bf16: 16 K FLOP each, int8: 32 K
// operations), for the probe.
double amx_bf16_loop(int64_t iterations);
double amx_int8_loop(int64_t iterations);
#endif
#if defined(__aarch64__)
VectorKernels neon_kernels();
// Widening multiplies on neon, SDOT on neondot.
QuantDotKernels neon_quant_kernels();
QuantDotKernels neon_dotprod_kernels();
// neon_kernels() with BFDOT's bf16 dot products; BFMMLA's bf16 GEMM and
// SMMLA's integer GEMM.
VectorKernels neonbf16_vector_kernels();
Bf16GemmKernels neonbf16_gemm_kernels();
QuantGemmKernels neon_i8mm_gemm_kernels();
#endif

}  // namespace slm::cpu
