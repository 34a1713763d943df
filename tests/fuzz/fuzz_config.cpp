// libFuzzer target: ModelConfig::from_json on arbitrary text. The contract:
// either an slm::Error, or a config a decoder can be built from, whose
// to_json() reads back to the same config.
#include <slm/error.h>
#include <slm/model.h>

#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  slm::ModelConfig c;
  try {
    c = slm::ModelConfig::from_json(text, "fuzz/config.json");
  } catch (const slm::Error&) {
    return 0;
  }
  if (c.hidden_size <= 0 || c.intermediate_size <= 0 || c.num_hidden_layers <= 0 || c.vocab_size <= 0) std::abort();
  if (c.num_attention_heads <= 0 || c.num_key_value_heads <= 0) std::abort();
  if (c.num_attention_heads % c.num_key_value_heads != 0) std::abort();
  if (c.head_dim <= 0 || c.head_dim % 2 != 0) std::abort();
  if (c.max_position_embeddings <= 0 || c.sliding_window < 0) std::abort();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    if (c.layer_window(l) < 0) std::abort();
  }
  if (c.parameter_count() <= 0) std::abort();
  // What slm writes, slm (and transformers) must read back.
  const slm::ModelConfig again = slm::ModelConfig::from_json(c.to_json(), "fuzz/round-trip");
  if (again.hidden_size != c.hidden_size || again.head_dim != c.head_dim ||
      again.num_key_value_heads != c.num_key_value_heads || again.rope_scaling != c.rope_scaling ||
      again.sliding_window != c.sliding_window || again.eos_token_ids != c.eos_token_ids ||
      again.tie_word_embeddings != c.tie_word_embeddings || again.vocab_size != c.vocab_size) {
    std::abort();
  }
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    if (again.layer_window(l) != c.layer_window(l)) std::abort();
  }
  return 0;
}
