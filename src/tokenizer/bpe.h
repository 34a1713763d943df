// The BPE model of `tokenizers`, in both flavours: byte-level (GPT-2,
// Llama 3, Qwen) and SentencePiece-style (Llama 2, Mistral, Gemma) with
// byte_fallback, fuse_unk, ignore_merges, unk_token,
// continuing_subword_prefix and end_of_word_suffix.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace slm::tok {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using Vocabulary = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class Bpe {
 public:
  // `model` is tokenizer.json's "model" object; `where` names it in errors.
  Bpe(const nlohmann::json& model, const std::string& where);

  // Appends the ids of one pre-tokenized word.
  void encode(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;
  int32_t size() const { return static_cast<int32_t>(tokens_.size()); }
  bool byte_fallback() const { return byte_fallback_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  // The cached BPE of one piece of a word.
  void encode_piece(std::string_view word, std::vector<int32_t>& out) const;
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  Vocabulary vocab_;
  std::vector<std::string> tokens_;  // by id; empty where the vocabulary has a gap
  std::unordered_map<uint64_t, Merge> merges_;
  std::optional<int32_t> unk_id_;
  std::string prefix_, suffix_;
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  // Whether a word may be cut before a "▁" that follows another character
  // (no prefix or suffix to add, no merge joins "▁" to a byte or unknown
  // token), and the characters a merge may join to a following "▁", before
  // which it is not cut.
  bool split_before_metaspace_ = false;
  std::unordered_set<std::string, StringHash, std::equal_to<>> chars_joined_to_metaspace_;
  int32_t byte_ids_[256];

  // Words repeat: a bounded cache of their ids, shared by threads under a lock.
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace slm::tok
