// Microbenchmarks of the CPU kernels at the shapes of a SmolLM2-135M layer.
#include <slm/kv_cache.h>
#include <slm/tensor.h>

#include "backend/cpu/backward.h"
#include "backend/cpu/kernels.h"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <vector>

namespace {

slm::Tensor weight(slm::DType dtype, int64_t rows, int64_t cols) {
  slm::Tensor f = slm::Tensor::zeros(slm::DType::F32, {rows, cols});
  for (int64_t i = 0; i < f.numel(); ++i) f.data_as<float>()[i] = static_cast<float>((i * 7919) % 1000) * 1e-3f - 0.5f;
  return f.to(dtype);
}

// Arguments: rows of activations (1 = decode), dtype (0 f32, 1 f16, 2 bf16, 3 q8, 4 q4).
void BM_Matmul(benchmark::State& state) {
  const int64_t M = state.range(0), K = 576, N = 1536;
  const auto dtype = static_cast<slm::DType>(state.range(1));
  const slm::Tensor W = weight(dtype, N, K);
  std::vector<float> x(static_cast<size_t>(M * K), 0.25f), y(static_cast<size_t>(M * N));
  for (auto _ : state) {
    slm::cpu::matmul(x.data(), M, K, W, nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(M * N * K), benchmark::Counter::kIsIterationInvariantRate,
                                                  benchmark::Counter::kIs1000);
  state.counters["weight_GB/s"] = benchmark::Counter(static_cast<double>(W.nbytes()), benchmark::Counter::kIsIterationInvariantRate,
                                                      benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Matmul)->ArgsProduct({{1, 128}, {0, 1, 2, 3, 4}})->ArgNames({"rows", "dtype"})->UseRealTime();

// The products of a LoRA training step on a SmolLM2-135M shape (batch 4 × 256
// tokens, bf16 base): k/v projections (N 192), q/o (576), gate/up (1536) and
// down (K 1536), where splitting the work evenly over the threads matters as
// much as the inner loop.
void BM_MatmulTraining(benchmark::State& state) {
  const int64_t M = 1024, N = state.range(0), K = state.range(1);
  const bool input_gradient = state.range(2) != 0;  // dx[M,K] = dy[M,N]·W: W read as the [K][N] operand
  const slm::Tensor W = weight(slm::DType::BF16, N, K);
  std::vector<float> x(static_cast<size_t>(M * std::max(N, K)), 0.25f), y(x.size());
  for (auto _ : state) {
    if (input_gradient) {
      slm::cpu::matmul_backward_input(x.data(), M, W, y.data(), false);
    } else {
      slm::cpu::matmul(x.data(), M, K, W, nullptr, y.data());
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(M * N * K), benchmark::Counter::kIsIterationInvariantRate,
                                                  benchmark::Counter::kIs1000);
}
BENCHMARK(BM_MatmulTraining)->ArgsProduct({{192, 576, 1536}, {576}, {0, 1}})->Args({576, 1536, 0})
    ->Args({576, 1536, 1})->ArgNames({"N", "K", "dx"})->UseRealTime();

// What one parallel region costs (fork, a trivial body, join): decode opens
// about five per layer per token, so this times 5 × layers is the threading
// overhead of a token.
void BM_ParallelRegion(benchmark::State& state) {
  int sink = 0;
  for (auto _ : state) {
#pragma omp parallel reduction(+ : sink)
    sink += 1;
    benchmark::DoNotOptimize(sink);
  }
}
BENCHMARK(BM_ParallelRegion)->UseRealTime();

// One sequence's keys and values in the paged layout, in consecutive blocks
// of the default size.
struct PagedCache {
  std::vector<float> keys, values;
  std::vector<int32_t> table;
  slm::PagedKV view;
  PagedCache(int64_t positions, int64_t kv_heads, int64_t head_dim) {
    const int64_t bt = slm::KVCache::kDefaultBlockTokens, blocks = (positions + bt - 1) / bt;
    keys.assign(static_cast<size_t>(blocks * kv_heads * bt * head_dim), 0.01f);
    values.assign(keys.size(), 0.02f);
    for (int32_t b = 0; b < blocks; ++b) table.push_back(b);
    view = {keys.data(), values.data(), slm::DType::F32, bt, kv_heads, head_dim};
  }
};

void BM_FlashAttentionDecode(benchmark::State& state) {
  const int64_t context = state.range(0), heads = 9, kv_heads = 3, head_dim = 64;
  std::vector<float> q(static_cast<size_t>(heads * head_dim), 0.1f), out(q.size());
  const PagedCache cache(context, kv_heads, head_dim);
  slm::AttentionRun run{0, 1, context - 1, cache.table.data()};
  for (auto _ : state) {
    slm::cpu::attention_flash(q.data(), cache.view, {std::span(&run, 1), heads, 0}, out.data());
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_FlashAttentionDecode)->Arg(512)->Arg(2048)->UseRealTime();

// A prompt of `n` tokens through flash attention (the tiled matrix-product
// path), f32 cache; counts the FLOP of Q·Kᵀ and P·V over the causal half.
void BM_FlashAttentionPrefill(benchmark::State& state) {
  const int64_t n = state.range(0), heads = 9, kv_heads = 3, head_dim = 64;
  std::vector<float> q(static_cast<size_t>(n * heads * head_dim), 0.1f), out(q.size());
  const PagedCache cache(n, kv_heads, head_dim);
  slm::AttentionRun run{0, n, 0, cache.table.data()};
  for (auto _ : state) {
    slm::cpu::attention_flash(q.data(), cache.view, {std::span(&run, 1), heads, 0}, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * 2.0 * heads * head_dim * static_cast<double>(n * n) / 2,
                                                  benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_FlashAttentionPrefill)->Arg(128)->Arg(512)->Arg(2048)->UseRealTime();

// The elementwise kernels of a layer, for `rows` tokens of SmolLM2-135M's
// widths (hidden 576, 9 heads of 64, MLP 1536).
void BM_RmsNorm(benchmark::State& state) {
  const int64_t rows = state.range(0), dim = 576;
  std::vector<float> x(static_cast<size_t>(rows * dim), 0.5f), w(static_cast<size_t>(dim), 1.0f), out(x.size());
  for (auto _ : state) {
    slm::cpu::rmsnorm(x.data(), w.data(), 0.0f, 1e-5f, rows, dim, out.data());
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_RmsNorm)->Arg(1)->Arg(128)->UseRealTime();

void BM_Rope(benchmark::State& state) {
  const int64_t rows = state.range(0), heads = 9, head_dim = 64;
  std::vector<float> x(static_cast<size_t>(rows * heads * head_dim), 0.5f);
  std::vector<float> cos(static_cast<size_t>(rows * head_dim / 2), 0.8f), sin(cos.size(), 0.6f);
  for (auto _ : state) {
    slm::cpu::rope(x.data(), rows, heads, head_dim, cos.data(), sin.data());
    benchmark::DoNotOptimize(x.data());
  }
}
BENCHMARK(BM_Rope)->Arg(1)->Arg(128)->UseRealTime();

void BM_SiluMul(benchmark::State& state) {
  const int64_t n = state.range(0) * 1536;
  std::vector<float> gate(static_cast<size_t>(n), 0.5f), up(gate.size(), 0.25f), out(gate.size());
  for (auto _ : state) {
    slm::cpu::silu_mul(gate.data(), up.data(), out.data(), n);
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_SiluMul)->Arg(1)->Arg(128)->UseRealTime();

}  // namespace
