#include "tokenizer/bpe.h"

#include <slm/error.h>

#include "tokenizer/unicode.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <queue>

namespace slm::tok {

namespace {

using json = nlohmann::json;

constexpr size_t kCacheCapacity = 1 << 16;
constexpr size_t kMaxCachedWordBytes = 256;
constexpr std::string_view kMetaspace = "\u2581";

std::string optional_string(const json& model, const char* key) {
  return model.contains(key) && model[key].is_string() ? model[key].get<std::string>() : std::string();
}

}  // namespace

Bpe::Bpe(const json& model, const std::string& where) {
  if (!model.contains("vocab") || !model["vocab"].is_object()) fail(where, ": missing object \"vocab\"");
  const json& vocab = model["vocab"];
  vocab_.reserve(vocab.size());
  for (const auto& [token, id_value] : vocab.items()) {
    if (!id_value.is_number_integer() || id_value.get<int64_t>() < 0 || id_value.get<int64_t>() >= (int64_t{1} << 24)) {
      fail(where, ".vocab: token \"", token, "\" has id ", id_value.dump(), " (expected an integer from 0 to 16777215)");
    }
    const auto id = static_cast<int32_t>(id_value.get<int64_t>());
    if (static_cast<size_t>(id) >= tokens_.size()) tokens_.resize(static_cast<size_t>(id) + 1);
    if (!tokens_[static_cast<size_t>(id)].empty()) {
      fail(where, ".vocab: id ", id, " is given to both \"", tokens_[static_cast<size_t>(id)], "\" and \"", token, "\"");
    }
    tokens_[static_cast<size_t>(id)] = token;
    vocab_.emplace(token, id);
  }

  prefix_ = optional_string(model, "continuing_subword_prefix");
  suffix_ = optional_string(model, "end_of_word_suffix");
  byte_fallback_ = model.value("byte_fallback", false);
  fuse_unk_ = model.value("fuse_unk", false);
  ignore_merges_ = model.value("ignore_merges", false);
  const std::string unk = optional_string(model, "unk_token");
  if (!unk.empty()) {
    const auto it = vocab_.find(unk);
    if (it == vocab_.end()) fail(where, ".unk_token: \"", unk, "\" is not in the vocabulary");
    unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    const auto it = vocab_.find(std::string_view(name));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }

  if (!model.contains("merges") || !model["merges"].is_array()) fail(where, ": missing array \"merges\"");
  const json& merges = model["merges"];
  merges_.reserve(merges.size());
  bool merge_joins_metaspace_to_other_symbol = false;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& merge = merges[rank];
    std::string left, right;
    if (merge.is_string()) {
      const std::string text = merge.get<std::string>();
      const size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
        fail(where, ".merges[", rank, "]: \"", text, "\" is not two tokens separated by one space");
      }
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      fail(where, ".merges[", rank, "]: expected \"a b\" or [\"a\", \"b\"]");
    }
    auto id_of = [&](const std::string& token) {
      const auto it = vocab_.find(token);
      if (it == vocab_.end()) fail(where, ".merges[", rank, "]: token \"", token, "\" is not in the vocabulary");
      return it->second;
    };
    const int32_t a = id_of(left), b = id_of(right);
    if (right.starts_with(kMetaspace) && !left.ends_with(kMetaspace)) {
      // Only a left token spelled as the text is can be told from the text.
      const bool is_byte_or_unk = (left.size() == 6 && left.starts_with("<0x")) || (unk_id_ && a == *unk_id_);
      if (is_byte_or_unk) merge_joins_metaspace_to_other_symbol = true;
      size_t last_char = left.size();
      while (last_char > 0 && (static_cast<uint8_t>(left[last_char - 1]) & 0xC0) == 0x80) --last_char;
      if (last_char > 0) --last_char;
      chars_joined_to_metaspace_.insert(left.substr(last_char));
    }
    const std::string merged = left + (right.starts_with(prefix_) ? right.substr(prefix_.size()) : right);
    merges_.emplace(pair_key(a, b), Merge{static_cast<int32_t>(rank), id_of(merged)});
  }
  split_before_metaspace_ = !merge_joins_metaspace_to_other_symbol && prefix_.empty() && suffix_.empty() &&
                            vocab_.contains(kMetaspace);
}

std::optional<int32_t> Bpe::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* Bpe::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= tokens_.size() || tokens_[static_cast<size_t>(id)].empty()) return nullptr;
  return &tokens_[static_cast<size_t>(id)];
}

void Bpe::encode(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (const auto it = vocab_.find(word); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (!split_before_metaspace_) {
    encode_piece(word, out);
    return;
  }
  // Where no merge can join a "▁" to the symbol before it, BPE on the pieces
  // between those points gives the same ids as on the whole text: the pieces
  // are short and repeat, so they hit the cache, where the whole text (one
  // "word" for SentencePiece-style files without a pre-tokenizer) would not.
  size_t start = 0;
  size_t previous_char = 0;
  for (size_t pos = 0; pos < word.size();) {
    const size_t next = std::min(word.size(), pos + utf8_length(static_cast<uint8_t>(word[pos])));
    if (pos > 0 && word.substr(pos, next - pos) == kMetaspace) {
      const std::string_view before = word.substr(previous_char, pos - previous_char);
      if (before != kMetaspace && !chars_joined_to_metaspace_.contains(before)) {
        encode_piece(word.substr(start, pos - start), out);
        start = pos;
      }
    }
    previous_char = pos;
    pos = next;
  }
  encode_piece(word.substr(start), out);
}

void Bpe::encode_piece(std::string_view word, std::vector<int32_t>& out) const {
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    if (const auto it = cache_.find(word); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    if (cache_.size() >= kCacheCapacity) cache_.clear();
    cache_.emplace(std::string(word), std::vector<int32_t>(out.begin() + static_cast<std::ptrdiff_t>(first), out.end()));
  }
}

void Bpe::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  // Symbols in a doubly linked list; merges are applied lowest rank first,
  // leftmost first among equal ranks, through a heap of candidate pairs
  // that are checked for staleness when popped: O(n log n) in the word length.
  struct Symbol {
    int32_t id, prev, next;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  std::string piece;
  bool previous_unk = false;
  for (size_t i = 0; i < word.size();) {
    const size_t start = i;
    i += utf8_length(static_cast<uint8_t>(word[i]));
    i = std::min(i, word.size());
    piece.clear();
    if (start > 0) piece += prefix_;
    piece.append(word.substr(start, i - start));
    if (i == word.size()) piece += suffix_;
    auto push = [&](int32_t id) {
      symbols.push_back({id, static_cast<int32_t>(symbols.size()) - 1, static_cast<int32_t>(symbols.size()) + 1});
    };
    if (const auto it = vocab_.find(piece); it != vocab_.end()) {
      push(it->second);
      previous_unk = false;
      continue;
    }
    if (byte_fallback_) {
      bool all_bytes = true;
      for (size_t k = start; k < i; ++k) all_bytes = all_bytes && byte_ids_[static_cast<uint8_t>(word[k])] >= 0;
      if (all_bytes) {
        for (size_t k = start; k < i; ++k) push(byte_ids_[static_cast<uint8_t>(word[k])]);
        previous_unk = false;
        continue;
      }
    }
    if (unk_id_) {
      if (!(fuse_unk_ && previous_unk)) push(*unk_id_);
      previous_unk = true;
    }
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    int32_t rank, pos, left, right, result;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto consider = [&](int32_t pos) {
    if (pos < 0) return;
    const int32_t next = symbols[static_cast<size_t>(pos)].next;
    if (next < 0) return;
    const int32_t a = symbols[static_cast<size_t>(pos)].id, b = symbols[static_cast<size_t>(next)].id;
    const auto it = merges_.find(pair_key(a, b));
    if (it != merges_.end()) heap.push({it->second.rank, pos, a, b, it->second.result});
  };
  for (int32_t pos = 0; pos + 1 < static_cast<int32_t>(symbols.size()); ++pos) consider(pos);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& left = symbols[static_cast<size_t>(c.pos)];
    if (left.id != c.left || left.next < 0) continue;
    Symbol& right = symbols[static_cast<size_t>(left.next)];
    if (right.id != c.right) continue;
    left.id = c.result;
    right.id = -1;
    left.next = right.next;
    if (left.next >= 0) symbols[static_cast<size_t>(left.next)].prev = c.pos;
    consider(left.prev);
    consider(c.pos);
  }
  for (int32_t pos = 0; pos >= 0; pos = symbols[static_cast<size_t>(pos)].next) out.push_back(symbols[static_cast<size_t>(pos)].id);
}

}  // namespace slm::tok
