// The BPE model of `tokenizers`, in both flavours: byte-level (GPT-2,
// Llama 3, Qwen) and SentencePiece-style (Llama 2, Mistral, Gemma) with
// byte_fallback, fuse_unk, ignore_merges, unk_token,
// continuing_subword_prefix and end_of_word_suffix.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace simdjson::dom {
class element;
}

namespace slm::tok {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

class Bpe {
 public:
  // `options` is tokenizer.json's "model" object without "vocab" and
  // "merges", which come as simdjson parsed them (null when absent): the
  // hundreds of thousands of entries of a large vocabulary are read straight
  // into flat tables. `where` names the model in errors.
  Bpe(const nlohmann::json& options, const simdjson::dom::element* vocab, const simdjson::dom::element* merges,
      const std::string& where);

  // Appends the ids of one pre-tokenized word. A long word that may be cut
  // before a "▁" (SentencePiece-style files, where the whole text is one
  // word) is encoded in parts on up to `threads` threads; returns how many.
  size_t encode(std::string_view word, std::vector<int32_t>& out, int threads = 1) const;
  // Whether encode cuts long words before their "▁"s (SentencePiece-style).
  bool cuts_words() const { return split_before_metaspace_; }
  // Where such a word may be cut last, at or after `from` (0: nowhere), and
  // the ids of a part of one that starts and ends at cuts (or at the word's
  // ends): what encoding the whole word gives there, a word longer than any
  // token.
  size_t last_cut(std::string_view word, size_t from) const;
  size_t encode_cut_word(std::string_view part, std::vector<int32_t>& out, int threads) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;
  int32_t size() const { return static_cast<int32_t>(tokens_.size()); }
  bool byte_fallback() const { return byte_fallback_; }

 private:
  // Open addressing (linear probing) in flat arrays: one cache line per
  // lookup, where node-based maps chase pointers across hundreds of MB.
  struct TokenSlot {
    uint32_t hash;
    int32_t id;  // -1: empty
  };
  struct MergeSlot {
    uint64_t pair;  // kNoPair: empty
    int32_t rank;
    int32_t result;
  };
  static constexpr uint64_t kNoPair = ~uint64_t{0};
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  // The id of a token string; -1 when it is not in the vocabulary.
  int32_t find_token(std::string_view token) const;
  // The same from the token's hash (std::hash of its bytes).
  int32_t find_token(std::string_view token, size_t hash) const;
  // The ids of many tokens (up to kLookupBatch): every slot is asked for
  // before any is read, so that their misses to memory overlap (loading a
  // vocabulary's merges is three lookups a merge, each a miss).
  static constexpr size_t kLookupBatch = 256;
  void find_tokens(std::span<const std::string_view> tokens, std::span<int32_t> ids) const;
  const MergeSlot* find_merge(int32_t a, int32_t b) const;
  // The first place at or after `from` (at least 1) where `word` may be cut
  // before a "▁": BPE on the two sides gives the ids of BPE on the whole.
  // word.size() when there is none.
  size_t next_cut(std::string_view word, size_t from) const;
  // Whether `word` may be cut before the "▁" at `pos` (> 0).
  bool cuts_before(std::string_view word, size_t pos) const;
  // BPE of `word` piece by piece between its cuts.
  void encode_between_cuts(std::string_view word, std::vector<int32_t>& out) const;
  // The cached BPE of one piece of a word; with `whole_word_token`
  // (ignore_merges), a piece that is itself a token is that token.
  void encode_piece(std::string_view word, bool whole_word_token, std::vector<int32_t>& out) const;
  // The ids of the characters of a word (with prefix and suffix), byte
  // fallback or unknown tokens where the vocabulary lacks one, each passed to `push`.
  template <class Push>
  void for_each_symbol(std::string_view word, Push push) const;
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  void merge_long_word(std::string_view word, std::vector<int32_t>& out) const;
  static constexpr size_t kShortWordBytes = 64;

  std::vector<std::string> tokens_;  // by id; empty where the vocabulary has a gap
  std::vector<TokenSlot> token_slots_;
  std::vector<MergeSlot> merge_slots_;
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
  int32_t ascii_ids_[0x80];  // the token of each ASCII character alone, -1 when none

  // Words repeat: a cache of their ids, shared by threads. Direct-mapped,
  // one word per cache line, a new word replacing the one in its slot:
  // memory stays at 8 MB whatever the text, and the table is small enough
  // to stay in the last-level cache. Each slot is a sequence lock: a reader
  // copies the entry and keeps it only if the slot's version was the same,
  // and even, before and after; a writer makes the version odd while it
  // writes (a slot another writer holds is left alone). Hits never write,
  // so threads encoding parts of one text do not pull each other's cache
  // lines away (a striped mutex per lookup did, and halved the second
  // thread's gain).
  static constexpr size_t kCachedWordBytes = 26, kCachedIds = 7, kCacheSlots = size_t{1} << 17;
  struct CacheEntry {
    uint32_t tag;  // the high half of the word's hash
    uint8_t word_length;  // 0: empty
    uint8_t id_count;
    char word[kCachedWordBytes];
    int32_t ids[kCachedIds];
  };
  static constexpr size_t kEntryWords = sizeof(CacheEntry) / sizeof(uint32_t);
  struct alignas(64) CacheSlot {
    std::atomic<uint32_t> version{0};
    std::atomic<uint32_t> entry[kEntryWords] = {};  // a CacheEntry, word by word
  };
  static_assert(sizeof(CacheEntry) % sizeof(uint32_t) == 0 && sizeof(CacheSlot) == 64);
  std::unique_ptr<CacheSlot[]> cache_;
  // The ids of `word` from its slot into `out`; false if the slot holds
  // another word or a writer is in it.
  static bool lookup(const CacheSlot& slot, uint32_t tag, std::string_view word, std::vector<int32_t>& out);
  // `word` and its ids (at most kCachedIds) into its slot, unless another
  // writer is in it.
  static void store(CacheSlot& slot, uint32_t tag, std::string_view word, std::span<const int32_t> ids);
};

}  // namespace slm::tok
