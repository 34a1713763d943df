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
  Buffer attn_out;      // o_proj's output before its post-norm [N, H] (post_norms models only)
  Buffer x_mid;         // residual stream after attention
  Buffer gate, up;      // MLP pre-activations [N, I]
  Buffer mlp_out;       // down_proj's output before its post-norm [N, H] (post_norms models only)
  std::array<Buffer, kLoraModuleCount> lora_u;  // A·x of each adapted module
  Buffer fused_update;  // scratch: a fused module's update before it is split [N, out]
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
// cos/sin [rows, head_dim/2] of each row's position; local_* those of the
// sliding layers where they rotate with their own base (else empty).
struct RopeTables {
  const float* cos;
  const float* sin;
  const float* local_cos;
  const float* local_sin;
};

struct Pass {
  const Model& model;
  int64_t rows;
  RopeTables rope;
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
  Buffer dh, dact, dgate, dup, dattn, dq, dk, dv, dpost;
  Buffer dfused;  // a fused module's output gradient, gathered from its parts'
};
// On entry dx holds ∂L/∂(layer output); on exit ∂L/∂(layer input). `a`
// holds forward's activations of this layer, x_in its input.
void layer_backward(const Pass& pass, int64_t layer, const float* x_in, const LayerActivations& a,
                    const Gradients& grads, Buffer& dx, BackwardScratch& s);

// A pass's rotary tables and their storage.
struct RopeBuffers {
  Buffer cos, sin, local_cos, local_sin;
  RopeTables tables() const { return {cos.data(), sin.data(), local_cos.data(), local_sin.data()}; }
};
// cos/sin [n, head_dim/2] of each row's own position, times longrope's
// attention factor, and those of the sliding layers where they rotate with
// their own base. extents[i]: the length row i's sequence reaches in this
// pass; with longrope, a sequence reaching past the original context rotates
// by the long factors (transformers chooses by the length of each call).
void rope_angles(const Model& model, const int32_t* positions, const int32_t* extents, int64_t n, RopeBuffers& out);

// out [n, hidden] = the embeddings of `ids`, scaled as the model scales them.
void embed(const Model& model, const int32_t* ids, int64_t n, float* out);
// dtable += ∂L/∂(embedding rows) from dout, the gradient of embed()'s output
// (overwritten: the scale is applied in place).
void embed_backward(const Model& model, float* dout, const int32_t* ids, int64_t n, float* dtable);

// The scratch of inference passes, owned by the KV cache they write.
struct Workspace {
  Buffer x, h, act, hidden, logits;
  RopeBuffers rope;
  std::vector<int32_t> extents;
  LayerActivations layer;
  std::vector<float> scratch, scores;
  std::vector<AttentionRun> runs;
  std::vector<AdapterRun> adapters;
  std::vector<int32_t> run_sequences;
  std::vector<int64_t> output_rows;
  Batch single;  // the batch of Model's one-sequence calls
};

}  // namespace slm::decoder
