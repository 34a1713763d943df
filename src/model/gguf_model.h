// A model as llama.cpp lays it out in a GGUF file: the family's GGUF
// architecture name, its hyperparameters as `<arch>.*` metadata, tensors
// under llama.cpp's names (token_embd, blk.N.attn_q, ...) with dimensions
// fastest-varying first, and, for the `llama` architecture, the rows of q and
// k permuted from Hugging Face's rotate-half order to interleaved pairs
// (llama.cpp rotates adjacent elements there; convert_hf_to_gguf.py's
// LlamaModel.permute). Both directions live here, so export and load agree.
#pragma once

#include <slm/model.h>

#include "io/gguf.h"
#include "io/weight_source.h"

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace slm {

// model.cpp's loader over any weight source: shapes checked against the config.
Weights read_weights(const ModelConfig& config, const WeightSource& source, std::optional<DType> dtype);

// Loads a GGUF model file: config from its metadata, tensors memory-mapped
// where slm has the type (F32, F16, BF16, Q8_0, Q4_0), K-quants (Q4_K, Q5_K,
// Q6_K) widened once (to options.dtype, q8 by default).
Model load_gguf_model(const std::filesystem::path& path, const LoadOptions& options);
// The model config a GGUF file's metadata describes; fails naming the key.
ModelConfig gguf_model_config(const GgufFile& file);

// "llama" for llama and mistral (llama.cpp converts both to it), "gemma3"
// for gemma3_text, else model_type.
std::string gguf_architecture(const ModelConfig& config);
// Whether the family's q/k rows are permuted in GGUF (the llama architecture).
bool gguf_permutes_qk(const ModelConfig& config);
// The GGUF name of a Hugging Face tensor name of the config's family (its
// checkpoint names: Phi-3's qkv_proj), and back; nullopt when the name is
// not one of the decoder's.
std::optional<std::string> gguf_tensor_name(const ModelConfig& config, std::string_view hf_name);
std::optional<std::string> hf_tensor_name(const ModelConfig& config, std::string_view gguf_name);
// A tensor's values as llama.cpp stores them (to_gguf), or back: the llama
// architecture's q/k rows permuted, Gemma's norm weights as 1 + weight;
// else `t` itself.
Tensor gguf_tensor_data(const ModelConfig& config, std::string_view hf_name, const Tensor& t, bool to_gguf);

// Rows of a q or k projection (weight [heads·head_dim, in] or bias
// [heads·head_dim]), any dtype, permuted from Hugging Face order to
// llama.cpp's (to_gguf) or back. A copy.
Tensor permute_qk_rows(const Tensor& t, int64_t heads, bool to_gguf);

// The model's general.* and <arch>.* metadata, as convert_hf_to_gguf.py
// writes it; fails naming what llama.cpp's architecture cannot express (a
// Gemma query_pre_attn_scalar other than head_dim, another layer pattern).
void write_gguf_model_metadata(const ModelConfig& config, std::string_view name, uint32_t file_type,
                               GgufWriter& writer);

}  // namespace slm
