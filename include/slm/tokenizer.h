// Tokenizer: reads a Hugging Face tokenizer.json (and tokenizer_config.json)
// as written, and encodes and decodes exactly as the `tokenizers` library does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace simdjson {
struct padded_string;
}

namespace slm {

class Tokenizer {
 public:
  // Loads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json.
  static Tokenizer from_dir(const std::filesystem::path& dir);
  // Loads a tokenizer.json; `config` is an optional tokenizer_config.json.
  static Tokenizer from_file(const std::filesystem::path& tokenizer_json,
                             const std::optional<std::filesystem::path>& config = std::nullopt);

  // The tokenizer a GGUF file's tokenizer.ggml.* metadata describes (byte-level
  // BPE with the pre-tokenizer tokenizer.ggml.pre names, or SentencePiece-style
  // "llama"), built as the pipeline its tokenizer.json would spell out.
  static Tokenizer from_gguf(const std::filesystem::path& gguf);
  // A tokenizer.json and tokenizer_config.json held in memory; `name` names them in errors.
  static Tokenizer from_json_text(std::string_view tokenizer_json, const std::string& config_json,
                                  const std::string& name);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // add_special_tokens: apply the post-processor (BOS/EOS templates) as
  // `tokenizers`' encode(text, add_special_tokens=True) does.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  // The same ids, a long text encoded in parts on up to `threads` threads
  // where the tokenizer lets it be cut exactly: after a newline where the
  // pre-tokenizer's leading split pattern would pass anyway (Llama 3, GPT-2,
  // Qwen), before a "▁" where no merge reaches across (SentencePiece-style:
  // Llama 2, Gemma). `parts`, when given, receives how many parts the text
  // was encoded in (1: on one thread).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens, int threads,
                              size_t* parts = nullptr) const;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  // Token strings as the vocabulary spells them (e.g. "Ġthe", "▁the").
  std::optional<std::string> id_to_token(int32_t id) const;
  std::optional<int32_t> token_to_id(std::string_view token) const;

  int32_t vocab_size() const;  // one past the largest id, added tokens included
  bool is_special(int32_t id) const;
  std::optional<int32_t> bos_id() const;  // from tokenizer_config.json's bos_token when given
  std::optional<int32_t> eos_id() const;
  std::optional<int32_t> pad_id() const;
  std::vector<int32_t> special_ids() const;
  std::string kind() const;  // e.g. "BPE (byte-level)", "BPE (SentencePiece-style, byte fallback)"
  // The chat_template of tokenizer_config.json, empty when absent. When the
  // file holds a list of named templates, the one named "default".
  const std::string& chat_template() const;
  // A special token of tokenizer_config.json ("bos_token", "eos_token",
  // "unk_token", "pad_token") as a string, whether written as a string or as
  // an AddedToken object; nullopt when absent or null.
  std::optional<std::string> special_token(std::string_view name) const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  static Tokenizer load(const std::filesystem::path& tokenizer_json, const std::optional<std::filesystem::path>& config);
  static Tokenizer build(const simdjson::padded_string& text, const nlohmann::json& config, const std::string& source);
  std::unique_ptr<Impl> impl_;
};

struct TokenizerTrainOptions {
  int32_t vocab_size = 8192;  // special tokens and the 256 byte symbols included
  std::vector<std::string> special_tokens = {"<|endoftext|>"};  // ids 0, 1, ...; the first is BOS/EOS
  int64_t min_frequency = 2;  // a pair seen fewer times is never merged
  int64_t model_max_length = 2048;  // written to tokenizer_config.json
};

struct TokenizerTrainStats {
  int64_t bytes = 0;           // text read
  int64_t words = 0;           // pre-tokenized pieces
  int64_t distinct_words = 0;
  int64_t merges = 0;
  int32_t vocab_size = 0;      // may fall short of the request when pairs run out
};

// Trains a byte-level BPE tokenizer (the GPT-2 / Llama 3 family: Llama 3's
// split pattern, no normalizer, no unknown token) on the text files and
// writes OUT_DIR/tokenizer.json and OUT_DIR/tokenizer_config.json, each
// through a temporary file.
TokenizerTrainStats train_bpe_tokenizer(std::span<const std::filesystem::path> files,
                                        const TokenizerTrainOptions& options,
                                        const std::filesystem::path& out_dir);

// Turns a stream of generated ids into printable text without ever emitting
// half a UTF-8 character, and with the same spacing decode() gives for the
// whole sequence.
class StreamDecoder {
 public:
  StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens);
  // Returns the text that became final with this id (often empty).
  std::string push(int32_t id);
  // Whatever is still held back at the end of the stream.
  std::string finish();

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;
  size_t read_offset_ = 0;
};

}  // namespace slm
