// Writing a model for llama.cpp and the tools built on it (Ollama, LM
// Studio): a complete GGUF file (metadata, tokenizer, tensors under
// llama.cpp's names and layout), and a PEFT adapter as a LoRA GGUF that
// llama.cpp's --lora loads. docs/gguf.md describes both.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace slm {

// The weight types a GGUF export writes: f32, f16, bf16, or llama.cpp's
// Q8_0 / Q4_0 blocks (slm's q8 / q4, byte for byte). Norms, biases and
// rope factors stay f32, as llama.cpp's converter keeps them.
enum class GgufWeightType { F32, F16, BF16, Q8_0, Q4_0 };
// "f32", "f16", "bf16", "q8_0", "q4_0"; nullopt for anything else.
std::optional<GgufWeightType> parse_gguf_weight_type(const std::string& name);

struct GgufExportOptions {
  std::optional<GgufWeightType> type;  // nullopt: the model folder's torch_dtype
  std::filesystem::path adapter;       // a PEFT adapter folder merged in first (empty: none)
};

struct GgufExportSummary {
  int64_t tensors = 0;
  uint64_t bytes = 0;  // of the file written
  std::string architecture, type, tokenizer;  // "llama", "q8_0", "gpt2 (llama-bpe)"
};

// The model folder `model_dir` (config.json, safetensors, tokenizer.json,
// tokenizer_config.json) as one GGUF file `out`, written to a temporary
// name and renamed.
GgufExportSummary export_gguf(const std::filesystem::path& model_dir, const std::filesystem::path& out,
                              const GgufExportOptions& options = {});

// The PEFT adapter in `adapter_dir` for the model in `model_dir`, as a LoRA
// GGUF (general.type "adapter"): lora_a / lora_b pairs in f32 under the base
// tensors' GGUF names, q/k rows of lora_b permuted as the base's are.
GgufExportSummary export_gguf_lora(const std::filesystem::path& model_dir, const std::filesystem::path& adapter_dir,
                                   const std::filesystem::path& out);

}  // namespace slm
