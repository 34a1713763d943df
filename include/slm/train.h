// Training: LoRA adapters on a frozen model, or every weight (full
// fine-tuning, pretraining from a random init), with hand-written backward
// passes (src/backend/cpu/backward.h), AdamW and a learning-rate schedule.
// The model given is never modified (full training works on its own f32
// copy); inference stays on Model::forward and never allocates gradient state.
#pragma once

#include <slm/chat_template.h>
#include <slm/model.h>
#include <slm/tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string_view>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace slm {

enum class LrSchedule { Constant, Linear, Cosine };
// "constant", "linear", "cosine".
LrSchedule parse_lr_schedule(const std::string& name);

struct LoraOptions {
  int64_t rank = 8;
  double alpha = 16.0;
  double dropout = 0.0;
  // PEFT module names (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj,
  // down_proj) or "all-linear".
  std::vector<std::string> targets = {"q_proj", "v_proj"};
  uint64_t seed = 0;  // initialisation of A and the dropout masks
};

struct OptimizerOptions {
  double lr = 2e-4;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // decoupled (AdamW)
  double max_grad_norm = 1.0;  // ≤ 0: no clipping
  LrSchedule schedule = LrSchedule::Constant;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;  // needed by linear and cosine
};

// The learning rate of optimizer step `step` (0-based), as Hugging Face
// transformers' get_{constant,linear,cosine}_schedule_with_warmup gives it.
double learning_rate_at(const OptimizerOptions& options, int64_t step);

// `batch` sequences of `seq` tokens. labels follow Hugging Face's causal-LM
// convention: labels[i] is the token expected at position i (normally
// tokens[i]); the loss of position i predicts labels[i+1]; -100 is ignored.
struct TrainBatch {
  int64_t batch = 0;
  int64_t seq = 0;
  std::vector<int32_t> tokens;
  std::vector<int32_t> labels;
  // Positions whose next-token loss counts.
  int64_t counted_tokens() const;
};

struct StepStats {
  double grad_norm = 0.0;  // before clipping
  double lr = 0.0;
  int64_t step = 0;  // steps done after this one
};

// One training example: its token ids and, position by position, the label
// (the id itself where the loss counts, -100 where it does not).
struct TrainExample {
  std::vector<int32_t> tokens;
  std::vector<int32_t> labels;
};

struct DatasetSummary {
  int64_t examples = 0;
  int64_t tokens = 0;
  int64_t loss_tokens = 0;  // labels that count
  int64_t truncated = 0;    // examples cut to seq_len
  // Chat messages whose content the chat template's render does not hold
  // (a role the template does not know, typically), and where the first is.
  int64_t unrendered_messages = 0;
  std::string first_unrendered;
};

// Text to ids; add_special_tokens as Tokenizer::encode takes it.
using TokenizeFn = std::function<std::vector<int32_t>(std::string_view text, bool add_special_tokens)>;

// A conversation (a JSON array of messages) to text, as the model's chat
// template renders it; add_generation_prompt as apply_chat_template takes it.
using RenderChatFn = std::function<std::string(const ChatJson& messages, bool add_generation_prompt)>;

// Reads a JSON-lines file, one example per line, the format recognised per line:
//   {"text": ...}                          loss on every token
//   {"prompt": ..., "completion": ...}     loss on the completion only
//   {"messages": [{"role", "content"}, ...]} loss on the assistant turns only
// The prompt (or text) is encoded with special tokens (BOS), the completion
// without, and `eos` (when given) is appended unless the ids already end
// with it. A conversation is rendered with `render_chat` (the template adds
// BOS itself, so every piece is encoded without special tokens); the text of
// assistant message i is what render(messages[0..i]) adds to
// render(messages[0..i), add_generation_prompt), and both must be prefixes
// of the whole render (docs/chat-templates.md). `eos` is appended when the
// render, trailing whitespace aside, does not already end with it. Examples
// longer than seq_len are truncated and counted. Blank lines are skipped; a
// bad line (or a conversation without render_chat) fails naming the file and
// line number; an empty file fails. Lines are turned into examples on the
// threads of the OpenMP pool (`tokenize` and `render_chat` are called from
// several at once), with the results of reading them one after another.
std::vector<TrainExample> read_jsonl_dataset(const std::filesystem::path& path, const TokenizeFn& tokenize,
                                             int64_t seq_len, std::optional<int32_t> eos,
                                             DatasetSummary* summary = nullptr, const RenderChatFn& render_chat = {});

// The examples at `indices` as one batch, right-padded to the longest with
// `pad_id` (label -100, so padding never counts; attention is causal, so it
// never changes the real positions either).
TrainBatch make_batch(const std::vector<TrainExample>& examples, const std::vector<size_t>& indices, int32_t pad_id);

// Several short examples per sequence (--pack): consecutive examples are
// concatenated, in order, while the total stays within seq_len; an example is
// never split. Attention then spans the examples of a sequence, as
// transformers' packed datasets do.
std::vector<TrainExample> pack_examples(const std::vector<TrainExample>& examples, int64_t seq_len);

// The order of the examples in epoch `epoch`: a permutation drawn from
// (seed, epoch), the same on every platform.
std::vector<size_t> epoch_order(size_t count, uint64_t seed, int64_t epoch);

// A model with the PEFT adapter in `adapter_dir` merged into its weights:
// W + alpha/r · B·A for every targeted module, stored in the base's dtype
// (or in `dtype` when given). Untouched tensors are shared with `base` (each
// tensor co-owns its memory, so either model may go first). Fails naming any
// missing or misshapen tensor.
Model merge_adapter(const Model& base, const std::filesystem::path& adapter_dir,
                    std::optional<DType> dtype = std::nullopt);

// Writes `model` as a Hugging Face folder in `out`: model.safetensors in
// `dtype` (f32, f16 or bf16), config.json, and generation_config.json plus the
// tokenizer files copied from `files_from` (the base model's folder) when
// present. Every file is written to a temporary name and renamed.
void save_model_folder(const Model& model, const std::filesystem::path& out, DType dtype,
                       const std::filesystem::path& files_from);

class Trainer {
 public:
  // LoRA: adds fresh adapters (PEFT's initialisation) to the modules named in
  // `lora.targets` of every layer; the model's weights stay frozen, in their
  // own dtype. `model` must outlive the trainer.
  Trainer(const Model& model, const LoraOptions& lora, const OptimizerOptions& optimizer);
  // Full fine-tuning: every weight (embeddings, linear layers and their
  // biases, norms, lm_head or the tied embedding) is trained, from f32 master
  // copies made here, with f32 AdamW moments. `model` is only read while
  // constructing. Checkpoints are Hugging Face model folders whose weights
  // are written in `save_dtype` (f32, f16 or bf16).
  static Trainer full(const Model& model, const OptimizerOptions& optimizer, DType save_dtype);
  Trainer(Trainer&&) noexcept;
  Trainer& operator=(Trainer&&) noexcept;
  ~Trainer();

  // Gradient checkpointing: forward keeps only each layer's input, and
  // backward recomputes the layer's activations from it (one more forward
  // per step, activation memory of one layer instead of all). The gradients
  // are bit-identical either way.
  void set_gradient_checkpointing(bool on);

  // Forward and backward over a batch: adds grad_scale · ∂(summed loss)/∂θ
  // to the gradients and returns the summed loss over counted positions.
  double accumulate_gradients(const TrainBatch& batch, double grad_scale);
  // The summed loss over counted positions, without gradients (dropout off).
  double evaluate(const TrainBatch& batch);
  // Clips, applies AdamW at the scheduled learning rate, zeroes the gradients.
  // Weight decay applies to matrices only, never to biases and norm weights
  // (as transformers' Trainer groups them).
  StepStats step();
  // One whole step on one batch: mean loss over its counted positions.
  double train_step(const TrainBatch& batch, StepStats* stats = nullptr);
  void zero_grad();

  bool is_full() const;
  // The model forward runs: the frozen base (LoRA) or the trained weights (full).
  const Model& model() const;
  int64_t steps_done() const;
  int64_t trainable_parameters() const;
  const LoraOptions& lora_options() const;
  std::vector<std::string> target_modules() const;  // PEFT names, canonical order; none when full
  // The trainable tensors, views of the trainer's own memory: adapters under
  // their PEFT names (base_model.model.model.layers.L.self_attn.q_proj.lora_A.weight),
  // or, when full, every weight under its Hugging Face name.
  std::vector<std::pair<std::string, Tensor>> parameter_tensors() const;
  std::vector<std::pair<std::string, Tensor>> gradient_tensors() const;  // same names
  // Copies values into the trainable tensors by name; every one must be
  // present with its shape (`source` names the file in messages).
  void set_parameter_tensors(const std::map<std::string, Tensor>& tensors, const std::string& source);
  // LoRA only: the adapters as a PEFT folder (adapter_config.json +
  // adapter_model.safetensors, each written atomically) that Python peft
  // loads unchanged.
  void save_adapter(const std::filesystem::path& dir, const std::string& base_model_name_or_path) const;
  // LoRA only: loads a PEFT folder into the adapters; its rank and target
  // modules must be the trainer's (the message names what differs).
  void load_adapter(const std::filesystem::path& dir);
  // A checkpoint: the trained tensors (LoRA: the PEFT files; full: a model
  // folder, whose tokenizer and generation config files are copied from
  // `base_model_name_or_path`), the AdamW moments (optimizer.safetensors,
  // which also keeps the f32 master weights when the folder's dtype is not
  // f32) and the step and dropout counters (trainer_state.json), each written
  // atomically. Loading one into a trainer made with the same options
  // continues exactly where it stopped.
  void save_checkpoint(const std::filesystem::path& dir, const std::string& base_model_name_or_path) const;
  void load_checkpoint(const std::filesystem::path& dir);

 private:
  struct State;
  explicit Trainer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace slm
