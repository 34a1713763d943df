// The decoder block, written once: its forward serves inference (over the
// paged KV cache), perplexity and training (keeping what the backward reads),
// and its backward sits beside it (llm.c style: explicit functions over named
// buffers, no autograd graph). Every operation goes through the model's
// backend.
#pragma once

#include <slm/model.h>

#include "backend/backend.h"

#include <array>
#include <span>
#include <vector>

namespace slm::decoder {

using Buffer = std::vector<float>;

// What one layer's backward needs from its forward, beside the layer's input
// (the normed inputs and the MLP activation are recomputed: cheap next to
// keeping them). Inference reuses one set for every layer.
struct LayerActivations {
  Buffer q, k, v;       // after bias, q/k norm and RoPE
  Buffer q_pre, k_pre;  // before the q/k norm (qk_norm models only)
  Buffer attn;          // attention output, o_proj's input [N, q_dim]
  Buffer lse;           // [B, heads, T] (training)
  Buffer x_mid;         // residual stream after attention
  Buffer gate, up;      // MLP pre-activations [N, I]
  std::array<Buffer, kLoraModuleCount> lora_u;  // A·x of each adapted module
};

// Consecutive rows of a batch that add the same adapter.
struct AdapterRun {
  int64_t row0;
  int64_t rows;
  const Adapter* adapter;  // null: none
};

// One pass of the decoder over `rows` rows. Attention reads the paged cache
// when `cache` is set (inference: keys and values of `runs` are written
// there first), else the pass's own keys and values of `train_batch`
// sequences of `train_seq` rows each (training, which keeps every row's
// logsumexp for the backward).
struct Pass {
  const Model& model;
  int64_t rows;
  const float* cos;
  const float* sin;
  std::span<const AdapterRun> adapters;
  KVCache* cache = nullptr;
  std::span<AttentionRun> runs;
  int64_t train_batch = 0, train_seq = 0;
  double dropout = 0.0;        // LoRA dropout (training)
  uint64_t dropout_seed = 0;   // of this pass; each layer and module mixes in its own
  Buffer& h;                   // scratch: normed input [rows, max(hidden, intermediate)]
  Buffer& act;                 // scratch: MLP activation [rows, intermediate]
  std::vector<float>& scratch;  // LoRA dropout and backward scratch
  std::vector<float>& scores;   // eager attention's score matrix
};

// x_out = layer(x); x_out may be x.
void layer_forward(const Pass& pass, int64_t layer, const float* x, float* x_out, LayerActivations& a);

// Where gradients go: every weight's (full fine-tuning) and the trained
// adapter's (LoRA; rows adding another adapter train nothing).
struct Gradients {
  Weights* weights = nullptr;
  const Adapter* trained = nullptr;
  Adapter* adapter = nullptr;
};
struct BackwardScratch {
  Buffer dh, dact, dgate, dup, dattn, dq, dk, dv;
};
// On entry dx holds ∂L/∂(layer output); on exit ∂L/∂(layer input). `a`
// holds forward's activations of this layer, x_in its input.
void layer_backward(const Pass& pass, int64_t layer, const float* x_in, const LayerActivations& a,
                    const Gradients& grads, Buffer& dx, BackwardScratch& s);

// cos/sin [n, head_dim/2] of each row's own position.
void rope_angles(std::span<const float> inv_freq, const int32_t* positions, int64_t n, Buffer& cos, Buffer& sin);

// The scratch of inference passes, owned by the KV cache they write.
struct Workspace {
  Buffer x, h, act, cos, sin, hidden, logits;
  LayerActivations layer;
  std::vector<float> scratch, scores;
  std::vector<AttentionRun> runs;
  std::vector<AdapterRun> adapters;
  std::vector<int32_t> run_sequences;
  std::vector<int64_t> output_rows;
  Batch single;  // the batch of Model's one-sequence calls
};

}  // namespace slm::decoder
