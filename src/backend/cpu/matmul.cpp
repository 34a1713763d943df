#include "backend/cpu/kernels.h"

#include <slm/error.h>

#include "backend/cpu/simd.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

namespace slm::cpu {

namespace {

// The activations of a product in the layouts the dot products read: x
// itself [M, K]; for bf16 weights, prepare_bf16_x's layout (row stride
// padded_k); for q8/q4 weights, q8 blocks as the integer dot products read
// them (row stride q8_bytes; null when there are none of either).
struct PreparedX {
  const float* x;
  const float* bf16;
  int64_t padded_k;
  const char* q8;
  int64_t q8_bytes;
};

// Rows [begin, end) of y[M,N] = x·Wᵀ (+ bias) for a handful of x rows, one
// weight row at a time: a single sequential stream is what the hardware
// prefetcher serves best (interleaving four rows measured 40% slower).
// Quantized rows go to their kernel kRowRun at a time for each x row, the
// run's weights still in cache for the x rows after the first.
void dot_rows(const VectorKernels& k, const QuantDotKernels& quant, const PreparedX& in, int64_t M, int64_t K,
              const Tensor& W, const float* bias, float* y, int64_t begin, int64_t end) {
  constexpr int64_t kRowRun = 64;
  const int64_t N = W.dim(0), blocks = K / kQuantBlock;
  const float* x = in.x;
  if (is_quantized(W.dtype())) {
    for (int64_t n = begin; n < end; n += kRowRun) {
      const int64_t rows = std::min(kRowRun, end - n);
      for (int64_t m = 0; m < M; ++m) {
        if (W.dtype() == DType::Q8) {
          quant.q8(in.q8 + m * in.q8_bytes, W.data_as<const BlockQ8>() + n * blocks, K, rows, y + m * N + n);
        } else {
          quant.q4(in.q8 + m * in.q8_bytes, W.data_as<const BlockQ4>() + n * blocks, K, rows, y + m * N + n);
        }
      }
    }
  } else {
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t m = 0; m < M; ++m) {
        float& out = y[m * N + n];
        switch (W.dtype()) {
          case DType::F32: out = k.f32(x + m * K, W.data_as<const float>() + n * K, K); break;
          case DType::BF16: out = k.bf16_prepared(in.bf16 + m * in.padded_k, W.data_as<const uint16_t>() + n * K, K); break;
          default: out = k.f16(x + m * K, W.data_as<const uint16_t>() + n * K, K); break;  // F16
        }
      }
    }
  }
  if (bias) {
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t n = begin; n < end; ++n) y[m * N + n] += bias[n];
    }
  }
}

void check_weight(const Tensor& W, int64_t K) {
  if (W.rank() != 2 || W.dim(1) != K) fail("matmul: weight of shape ", W.shape_string(), " does not take inputs of width ", K);
}

// Below this many rows a product is a set of dot products streaming the
// weights once; above it, a blocked GEMM reuses each weight row across rows.
constexpr int64_t kGemmMinRows = 4;

// y = x·Wᵀ (+ bias) for every projection, from kGemmMinRows rows on, in
// tasks of a panel of panel_rows weight rows against a block of x's rows (a
// multiple of row_granule, the kernel's tile height), on every thread:
// multiply(m0, rows, W, w, cols, y) computes rows [m0, m0 + rows) of x
// against the `cols` rows of W that start at w, into y (row stride N). Tasks are cut across the rows of x as well when the panels
// alone are too few to share between threads.
template <class Multiply>
void panel_tasks(int64_t M, std::span<const Projection> projections, int64_t panel_rows, int64_t row_granule,
                 const Multiply& multiply) {
  std::vector<int64_t> first_panel;  // of each projection, counted across all of them
  int64_t panels = 0;
  for (const Projection& p : projections) {
    first_panel.push_back(panels);
    panels += (p.weight->dim(0) + panel_rows - 1) / panel_rows;
  }
  const auto round_up = [&](int64_t rows) { return (rows + row_granule - 1) / row_granule * row_granule; };
  int64_t block_rows = round_up(M);
  while (block_rows > 4 * row_granule && panels * ((M + block_rows - 1) / block_rows) < 4 * omp_get_max_threads()) {
    block_rows = round_up(block_rows / 2);
  }
  const int64_t row_blocks = (M + block_rows - 1) / block_rows;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t t = 0; t < panels * row_blocks; ++t) {
    const int64_t panel = t / row_blocks, m0 = (t % row_blocks) * block_rows;
    const size_t o = std::upper_bound(first_panel.begin(), first_panel.end(), panel) - first_panel.begin() - 1;
    const Tensor& W = *projections[o].weight;
    const int64_t N = W.dim(0), n0 = (panel - first_panel[o]) * panel_rows;
    const int64_t cols = std::min(panel_rows, N - n0), rows = std::min(block_rows, M - m0);
    const int64_t row_bytes = static_cast<int64_t>(W.nbytes()) / N;
    float* y = projections[o].out + m0 * N + n0;
    multiply(m0, rows, W, static_cast<const char*>(W.data()) + n0 * row_bytes, cols, y);
    if (const float* bias = projections[o].bias) {
      for (int64_t m = 0; m < rows; ++m) {
        for (int64_t n = 0; n < cols; ++n) y[m * N + n] += bias[n0 + n];
      }
    }
  }
}

// The products of panel_tasks for weights without an integer or bf16 GEMM:
// the path's own gemm_nt where it has one (it packs the panel, at most
// 128 KB as f32, so that it stays in L2), else the panel widened to f32 for
// sgemm (the path's own or OpenBLAS, single-threaded inside: the tasks are
// the parallelism, so one pool of threads serves every kernel).
void float_gemm(const VectorKernels& kernels, const float* x, int64_t M, int64_t K,
                std::span<const Projection> projections) {
  const int64_t panel_rows = std::clamp<int64_t>((128 << 10) / (4 * K) / 16 * 16, 16, 64);
  panel_tasks(M, projections, panel_rows, 6,
              [&](int64_t m0, int64_t rows, const Tensor& W, const void* w, int64_t cols, float* y) {
                const int64_t N = W.dim(0);
                if (kernels.gemm_nt) {
                  kernels.gemm_nt(x + m0 * K, rows, K, W.dtype(), w, cols, K, y, N);
                  return;
                }
                // Kept by each pool thread across calls: no page faults per product.
                thread_local std::vector<float> widened;
                const float* panel_f32 = static_cast<const float*>(w);
                if (W.dtype() != DType::F32) {
                  widened.resize(static_cast<size_t>(cols * K));
                  switch (W.dtype()) {
                    case DType::BF16: kernels.widen_bf16(static_cast<const uint16_t*>(w), cols * K, widened.data()); break;
                    case DType::F16: kernels.widen_f16(static_cast<const uint16_t*>(w), cols * K, widened.data()); break;
                    case DType::Q8: kernels.widen_q8(static_cast<const BlockQ8*>(w), cols * K, widened.data()); break;
                    case DType::Q4: kernels.widen_q4(static_cast<const BlockQ4*>(w), cols * K, widened.data()); break;
                    case DType::F32: break;
                  }
                  panel_f32 = widened.data();
                }
                sgemm(false, true, rows, cols, K, 1.0f, x + m0 * K, K, panel_f32, K, 0.0f, y, N);
              });
}

}  // namespace

void quant_gemm_parallel(const QuantGemmKernels& kernels, const float* x, int64_t M, int64_t K,
                         std::span<const Projection> projections) {
  const int64_t blocks = K / kQuantBlock;
  // Reused by the thread that owns the pass, as bf16_gemm_parallel's
  // buffers; inside the parallel regions, thread_local names the worker's.
  thread_local std::vector<uint8_t> xq;
  thread_local std::vector<float> xs;
  thread_local std::vector<char> packed_storage;
  xq.resize(static_cast<size_t>(M * K));
  xs.resize(static_cast<size_t>(M * blocks));
  uint8_t* q = xq.data();
  float* scales = xs.data();
  const bool packs = kernels.pack_x != nullptr;
  if (packs) packed_storage.resize(static_cast<size_t>(kernels.packed_x_bytes(M, K)));
  char* packed = packed_storage.data();
  const int64_t packed_block_bytes = packs ? kernels.packed_x_bytes(16, K) : 0;
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; ++m) kernels.prepare_x(x + m * K, K, q + m * K, scales + m * blocks);
    if (packs) {
#pragma omp for schedule(static)
      for (int64_t m = 0; m < M; m += 16) {
        kernels.pack_x(q + m * K, scales + m * blocks, std::min<int64_t>(16, M - m), K, packed + m / 16 * packed_block_bytes);
      }
    }
  }
  // Panels of 96 weight rows (two of the VNNI kernel's 48, three of the
  // AMX kernel's 32); row blocks of whole packed tiles where packed.
  panel_tasks(M, projections, 96, packs ? 16 : 4,
              [&](int64_t m0, int64_t rows, const Tensor& W, const void* w, int64_t cols, float* y) {
                if (packs) {
                  kernels.gemm_packed(packed, m0, rows, W.dtype(), w, cols, K, y, W.dim(0));
                } else {
                  kernels.gemm(q + m0 * K, scales + m0 * blocks, rows, W.dtype(), w, cols, K, y, W.dim(0));
                }
              });
}

// Tiles are cut in both directions so that every thread gets a fair share
// even when N is small (k/v projections) or M is (short prompts): panels of
// weight rows alone left one of two threads idle a third of the time on a
// 192-row projection.
void bf16_gemm_parallel(const Bf16GemmKernels& kernels, const float* x, int64_t M, int64_t K,
                        std::span<const Bf16Operand> operands, bool accumulate) {
  const int64_t lda = (K + 1) / 2 * 2;
  // Reused across calls by the thread that owns the forward or backward pass:
  // a fresh buffer of megabytes per product cost page faults and zeroing
  // worth 5% of a training step.
  thread_local std::vector<uint16_t> narrowed;
  narrowed.resize(static_cast<size_t>(M * lda));
  uint16_t* a = narrowed.data();
  // Paths that pack the activations for NK products do so once here, each
  // thread its share of the 16-row blocks.
  const bool packs = kernels.pack_a && std::all_of(operands.begin(), operands.end(), [](const Bf16Operand& op) {
    return op.layout == Bf16Layout::NK;
  });
  thread_local std::vector<char> packed_storage;
  if (packs) packed_storage.resize(static_cast<size_t>(kernels.packed_a_bytes(M, K)));
  char* packed = packed_storage.data();  // the owner's: inside the parallel region, thread_local names the worker's
  const int64_t packed_block_bytes = packs ? kernels.packed_a_bytes(16, K) : 0;
  constexpr int64_t kTileCols = 96, kMaxTileRows = 1024, kMinTileRows = 32;
  const auto tiles_of = [](const Bf16Operand& op) { return (op.N + kTileCols - 1) / kTileCols; };
  int64_t col_tiles = 0;
  for (const Bf16Operand& op : operands) col_tiles += tiles_of(op);
  // Enough tiles for a balanced dynamic schedule, each tall enough that
  // repacking its weight panel stays a small share of the work.
  int64_t tile_rows = kMaxTileRows;
  while (tile_rows > kMinTileRows && col_tiles * ((M + tile_rows - 1) / tile_rows) < 8 * omp_get_max_threads()) {
    tile_rows /= 2;
  }
  const int64_t row_tiles = (M + tile_rows - 1) / tile_rows;
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; ++m) {
      kernels.narrow(x + m * K, K, a + m * lda);
      if (lda > K) a[m * lda + K] = 0;
    }
    if (packs) {
#pragma omp for schedule(static)
      for (int64_t m = 0; m < M; m += 16) {
        kernels.pack_a(a + m * lda, std::min<int64_t>(16, M - m), lda, K, packed + m / 16 * packed_block_bytes);
      }
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < col_tiles * row_tiles; ++t) {
      // Column tile t / row_tiles, counted across the operands in turn.
      int64_t col_tile = t / row_tiles;
      size_t o = 0;
      while (col_tile >= tiles_of(operands[o])) col_tile -= tiles_of(operands[o++]);
      const Bf16Operand& op = operands[o];
      const int64_t n0 = col_tile * kTileCols, m0 = (t % row_tiles) * tile_rows;
      const int64_t cols = std::min(kTileCols, op.N - n0), rows = std::min(tile_rows, M - m0);
      const uint16_t* panel = op.layout == Bf16Layout::NK ? op.B + n0 * op.ldb : op.B + n0;
      if (packs) {
        kernels.gemm_packed(packed, m0, rows, panel, op.ldb, cols, K, op.y + m0 * op.N + n0, op.N, accumulate);
      } else {
        kernels.gemm(a + m0 * lda, rows, lda, panel, op.ldb, op.layout, cols, K, op.y + m0 * op.N + n0, op.N, accumulate);
      }
      if (op.bias) {
        for (int64_t m = m0; m < m0 + rows; ++m) {
          for (int64_t n = n0; n < n0 + cols; ++n) op.y[m * op.N + n] += op.bias[n];
        }
      }
    }
  }
}

void matmul_group(const float* x, int64_t M, int64_t K, std::span<const Projection> projections) {
  if (M >= kGemmMinRows) {
    const Bf16GemmKernels* bf16 = bf16_gemm_kernels();
    std::vector<Bf16Operand> operands;
    for (const Projection& p : projections) {
      check_weight(*p.weight, K);
      if (p.weight->dtype() == DType::BF16) {
        operands.push_back({p.weight->data_as<const uint16_t>(), K, Bf16Layout::NK, p.weight->dim(0), p.bias, p.out});
      }
    }
    const QuantGemmKernels* quantized = quant_gemm_kernels();
    const bool all_quantized = std::all_of(projections.begin(), projections.end(),
                                           [](const Projection& p) { return is_quantized(p.weight->dtype()); });
    if (bf16 && operands.size() == projections.size()) {
      bf16_gemm_parallel(*bf16, x, M, K, operands, false);
    } else if (quantized && all_quantized) {
      quant_gemm_parallel(*quantized, x, M, K, projections);
    } else {
      float_gemm(vector_kernels(), x, M, K, projections);
    }
    return;
  }
  int64_t total_rows = 0, total_bytes = 0;
  bool any_bf16 = false, any_quantized = false;
  for (const Projection& p : projections) {
    check_weight(*p.weight, K);
    total_rows += p.weight->dim(0);
    total_bytes += static_cast<int64_t>(p.weight->nbytes());
    any_bf16 |= p.weight->dtype() == DType::BF16;
    any_quantized |= is_quantized(p.weight->dtype());
  }
  const VectorKernels& kernels = vector_kernels();
  const QuantDotKernels& quant = quant_dot_kernels();
  // Called from the thread that owns the forward pass, never from inside a
  // parallel region, so one buffer per calling thread is reused for every
  // token (the workers' thread_local copies are not this one).
  thread_local std::vector<float> x_bf16;
  thread_local std::vector<BlockQ8> x_q8;
  thread_local std::vector<char> x_arranged;
  PreparedX prepared{x, nullptr, (K + 31) / 32 * 32, nullptr, 0};
  if (any_bf16) {
    x_bf16.resize(static_cast<size_t>(M * prepared.padded_k));
    for (int64_t m = 0; m < M; ++m) kernels.prepare_bf16_x(x + m * K, K, x_bf16.data() + m * prepared.padded_k);
    prepared.bf16 = x_bf16.data();
  }
  if (any_quantized) {
    const int64_t blocks = K / kQuantBlock;
    x_q8.resize(static_cast<size_t>(M * blocks));
    for (int64_t m = 0; m < M; ++m) quant.quantize_x(x + m * K, K, x_q8.data() + m * blocks);
    prepared.q8 = reinterpret_cast<const char*>(x_q8.data());
    prepared.q8_bytes = blocks * static_cast<int64_t>(sizeof(BlockQ8));
    if (quant.arrange_x) {
      prepared.q8_bytes = quant.arranged_bytes(K);
      x_arranged.resize(static_cast<size_t>(M * prepared.q8_bytes));
      for (int64_t m = 0; m < M; ++m) {
        quant.arrange_x(x_q8.data() + m * blocks, K, x_arranged.data() + m * prepared.q8_bytes);
      }
      prepared.q8 = x_arranged.data();
    }
  }
  // The rows, walking across projection boundaries, in contiguous chunks of
  // at least 128 KB (up to 8 a thread) that the threads take as they finish:
  // one share a thread left the faster core waiting for the slower at every
  // product (SmolLM2 bf16 decode on a 2-core VM: 5% faster in chunks).
  const int64_t threads = omp_get_max_threads();
  const int64_t chunks = std::clamp<int64_t>(total_bytes / (128 << 10), threads, 8 * threads);
  const int64_t share = (total_rows + chunks - 1) / chunks;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t begin = std::min(total_rows, chunk * share);
    const int64_t end = std::min(total_rows, begin + share);
    int64_t offset = 0;
    for (const Projection& p : projections) {
      const int64_t rows = p.weight->dim(0);
      const int64_t lo = std::max(begin, offset), hi = std::min(end, offset + rows);
      if (lo < hi) dot_rows(kernels, quant, prepared, M, K, *p.weight, p.bias, p.out, lo - offset, hi - offset);
      offset += rows;
    }
  }
}

void matmul_reference(const float* x, int64_t M, int64_t K, const Tensor& W, const float* bias, float* y) {
  check_weight(W, K);
  const int64_t N = W.dim(0);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double sum = bias ? bias[n] : 0.0;
      for (int64_t k = 0; k < K; ++k) sum += static_cast<double>(x[m * K + k]) * W.at(n * K + k);
      y[m * N + n] = static_cast<float>(sum);
    }
  }
}

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (const auto own = vector_kernels().sgemm) {
    own(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  static const bool single_threaded = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)single_threaded;
  const auto as_int = [](int64_t v) { return static_cast<int>(v); };
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, as_int(M),
              as_int(N), as_int(K), alpha, A, as_int(lda), B, as_int(ldb), beta, C, as_int(ldc));
}

void matmul(const float* x, int64_t M, int64_t K, const Tensor& W, const float* bias, float* y) {
  const Projection one{&W, bias, y};
  matmul_group(x, M, K, std::span(&one, 1));
}

void sgemm_parallel(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                    int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const bool by_rows = M >= N;
  const int64_t extent = by_rows ? M : N;
  const int64_t threads = omp_get_max_threads();
  // Blocks of at least 16 rows or columns, a few per thread for balance.
  const int64_t block = std::max<int64_t>(16, (extent + 4 * threads - 1) / (4 * threads));
  const int64_t blocks = (extent + block - 1) / block;
#pragma omp parallel for schedule(dynamic, 1) if (blocks > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t i0 = b * block, count = std::min(block, extent - i0);
    const float* a = A;
    const float* bb = B;
    float* c;
    int64_t m = M, n = N;
    if (by_rows) {
      a = trans_a ? A + i0 : A + i0 * lda;  // rows [i0, i0+count) of op(A)
      c = C + i0 * ldc;
      m = count;
    } else {
      bb = trans_b ? B + i0 * ldb : B + i0;  // columns [i0, i0+count) of op(B)
      c = C + i0;
      n = count;
    }
    sgemm(trans_a, trans_b, m, n, K, alpha, a, lda, bb, ldb, beta, c, ldc);
  }
}

void low_rank_add(const float* x, int64_t M, const Tensor& A, const Tensor& B, float scale, float* u, float* y) {
  const int64_t rank = A.dim(0), K = A.dim(1), N = B.dim(0);
  sgemm_parallel(false, true, M, rank, K, 1.0f, x, K, A.data_as<const float>(), K, 0.0f, u, rank);
  sgemm_parallel(false, true, M, N, rank, scale, u, rank, B.data_as<const float>(), rank, 1.0f, y, N);
}

}  // namespace slm::cpu
