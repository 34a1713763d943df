#include "tokenizer/bpe.h"

#include <slm/error.h>

#include "tokenizer/parts.h"
#include "tokenizer/unicode.h"

#include <nlohmann/json.hpp>
#include <simdjson.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <functional>
#include <span>

namespace slm::tok {

namespace {

using json = nlohmann::json;

constexpr std::string_view kMetaspace = "\u2581";

std::string optional_string(const json& model, const char* key) {
  return model.contains(key) && model[key].is_string() ? model[key].get<std::string>() : std::string();
}

// A power of two at least twice the entries: probes stay short.
size_t table_size_for(size_t entries) {
  size_t size = 16;
  while (size < 2 * entries) size <<= 1;
  return size;
}

uint64_t mix(uint64_t key) {
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdULL;
  key ^= key >> 33;
  return key;
}

}  // namespace

Bpe::Bpe(const json& options, const simdjson::dom::element* vocab, const simdjson::dom::element* merges,
         const std::string& where) {
  simdjson::dom::object vocab_object;
  if (!vocab || vocab->get_object().get(vocab_object) != simdjson::SUCCESS) fail(where, ": missing object \"vocab\"");
  auto id_of_entry = [&](const simdjson::dom::key_value_pair& entry) {
    int64_t id = -1;
    if (entry.value.get_int64().get(id) != simdjson::SUCCESS || id < 0 || id >= (int64_t{1} << 24)) {
      fail(where, ".vocab: token \"", entry.key, "\" has id ", simdjson::minify(entry.value),
           " (expected an integer from 0 to 16777215)");
    }
    return static_cast<int32_t>(id);
  };
  for (const simdjson::dom::key_value_pair entry : vocab_object) {
    const int32_t id = id_of_entry(entry);
    if (static_cast<size_t>(id) >= tokens_.size()) tokens_.resize(static_cast<size_t>(id) + 1);
    if (!tokens_[static_cast<size_t>(id)].empty()) {
      fail(where, ".vocab: id ", id, " is given to both \"", tokens_[static_cast<size_t>(id)], "\" and \"", entry.key, "\"");
    }
    tokens_[static_cast<size_t>(id)] = entry.key;
  }
  // Indexed once every string has its final place in tokens_.
  token_slots_.assign(table_size_for(tokens_.size()), TokenSlot{0, -1});
  const size_t token_mask = token_slots_.size() - 1;
  for (const simdjson::dom::key_value_pair entry : vocab_object) {
    const int32_t id = id_of_entry(entry);
    const size_t hash = std::hash<std::string_view>{}(entry.key);
    const auto tag = static_cast<uint32_t>(hash >> 32);
    for (size_t i = hash & token_mask;; i = (i + 1) & token_mask) {
      TokenSlot& slot = token_slots_[i];
      if (slot.id < 0 || (slot.hash == tag && tokens_[static_cast<size_t>(slot.id)] == entry.key)) {
        slot = {tag, id};
        break;
      }
    }
  }

  prefix_ = optional_string(options, "continuing_subword_prefix");
  suffix_ = optional_string(options, "end_of_word_suffix");
  byte_fallback_ = options.value("byte_fallback", false);
  fuse_unk_ = options.value("fuse_unk", false);
  ignore_merges_ = options.value("ignore_merges", false);
  const std::string unk = optional_string(options, "unk_token");
  if (!unk.empty()) {
    const int32_t id = find_token(unk);
    if (id < 0) fail(where, ".unk_token: \"", unk, "\" is not in the vocabulary");
    unk_id_ = id;
  }
  for (int c = 0; c < 0x80; ++c) ascii_ids_[c] = find_token(std::string(1, static_cast<char>(c)));
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    byte_ids_[b] = find_token(name);
  }

  simdjson::dom::array merge_array;
  if (!merges || merges->get_array().get(merge_array) != simdjson::SUCCESS) fail(where, ": missing array \"merges\"");
  merge_slots_.assign(table_size_for(merge_array.size()), MergeSlot{kNoPair, 0, 0});
  const size_t merge_mask = merge_slots_.size() - 1;
  bool merge_joins_metaspace_to_other_symbol = false;
  // The merges a batch at a time: the batch's three tokens a merge (left,
  // right, merged) looked up together, then its pairs' slots asked for
  // together and filled in order. One at a time, each lookup and each slot
  // was a miss to memory on its own: most of loading a vocabulary.
  constexpr size_t kMerges = kLookupBatch / 3;
  std::string_view batch[3 * kMerges];
  int32_t ids[3 * kMerges];
  std::string merged[kMerges];
  size_t pending = 0;
  int32_t rank = 0;  // of the batch's first merge
  auto add_batch = [&] {
    find_tokens(std::span(batch, 3 * pending), std::span(ids, 3 * pending));
    uint64_t keys[kMerges];
    for (size_t m = 0; m < pending; ++m) {
      const int32_t merge_rank = rank + static_cast<int32_t>(m);
      for (size_t t = 3 * m; t < 3 * m + 3; ++t) {
        if (ids[t] < 0) fail(where, ".merges[", merge_rank, "]: token \"", batch[t], "\" is not in the vocabulary");
      }
      const std::string_view left = batch[3 * m], right = batch[3 * m + 1];
      if (right.starts_with(kMetaspace) && !left.ends_with(kMetaspace)) {
        // Only a left token spelled as the text is can be told from the text.
        const bool is_byte_or_unk =
            (left.size() == 6 && left.starts_with("<0x")) || (unk_id_ && ids[3 * m] == *unk_id_);
        if (is_byte_or_unk) merge_joins_metaspace_to_other_symbol = true;
        size_t last_char = left.size();
        while (last_char > 0 && (static_cast<uint8_t>(left[last_char - 1]) & 0xC0) == 0x80) --last_char;
        if (last_char > 0) --last_char;
        chars_joined_to_metaspace_.emplace(left.substr(last_char));
      }
      keys[m] = pair_key(ids[3 * m], ids[3 * m + 1]);
      __builtin_prefetch(&merge_slots_[mix(keys[m]) & merge_mask]);
    }
    for (size_t m = 0; m < pending; ++m) {
      for (size_t i = mix(keys[m]) & merge_mask;; i = (i + 1) & merge_mask) {
        MergeSlot& slot = merge_slots_[i];
        if (slot.pair == kNoPair) slot = {keys[m], rank + static_cast<int32_t>(m), ids[3 * m + 2]};
        if (slot.pair == keys[m]) break;  // a repeated pair keeps its first rank
      }
    }
    rank += static_cast<int32_t>(pending);
    pending = 0;
  };
  for (const simdjson::dom::element merge : merge_array) {
    std::string_view left, right, text;
    simdjson::dom::array parts;
    const int32_t merge_rank = rank + static_cast<int32_t>(pending);
    if (merge.get_string().get(text) == simdjson::SUCCESS) {
      const size_t space = text.find(' ');
      if (space == std::string_view::npos || text.find(' ', space + 1) != std::string_view::npos) {
        add_batch();  // an earlier merge's error comes first
        fail(where, ".merges[", merge_rank, "]: \"", text, "\" is not two tokens separated by one space");
      }
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (merge.get_array().get(parts) != simdjson::SUCCESS || parts.size() != 2 ||
               parts.at(0).get_string().get(left) != simdjson::SUCCESS ||
               parts.at(1).get_string().get(right) != simdjson::SUCCESS) {
      add_batch();
      fail(where, ".merges[", merge_rank, "]: expected \"a b\" or [\"a\", \"b\"]");
    }
    merged[pending].assign(left);
    merged[pending].append(right.starts_with(prefix_) ? right.substr(prefix_.size()) : right);
    batch[3 * pending] = left;
    batch[3 * pending + 1] = right;
    batch[3 * pending + 2] = merged[pending];
    if (++pending == kMerges) add_batch();
  }
  add_batch();
  split_before_metaspace_ = !merge_joins_metaspace_to_other_symbol && prefix_.empty() && suffix_.empty() &&
                            find_token(kMetaspace) >= 0;
  cache_ = std::make_unique<CacheSlot[]>(kCacheSlots);
}

int32_t Bpe::find_token(std::string_view token) const { return find_token(token, std::hash<std::string_view>{}(token)); }

void Bpe::find_tokens(std::span<const std::string_view> tokens, std::span<int32_t> ids) const {
  size_t hashes[kLookupBatch];
  const size_t mask = token_slots_.size() - 1;
  for (size_t i = 0; i < tokens.size(); ++i) {
    hashes[i] = std::hash<std::string_view>{}(tokens[i]);
    __builtin_prefetch(&token_slots_[hashes[i] & mask]);
  }
  // The strings of the ids the slots name, asked for too, before any is compared.
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t id = token_slots_[hashes[i] & mask].id;
    if (id >= 0) __builtin_prefetch(&tokens_[static_cast<size_t>(id)]);
  }
  for (size_t i = 0; i < tokens.size(); ++i) ids[i] = find_token(tokens[i], hashes[i]);
}

int32_t Bpe::find_token(std::string_view token, size_t hash) const {
  const auto tag = static_cast<uint32_t>(hash >> 32);
  const size_t mask = token_slots_.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    const TokenSlot& slot = token_slots_[i];
    if (slot.id < 0) return -1;
    if (slot.hash == tag && tokens_[static_cast<size_t>(slot.id)] == token) return slot.id;
  }
}

const Bpe::MergeSlot* Bpe::find_merge(int32_t a, int32_t b) const {
  const uint64_t key = pair_key(a, b);
  const size_t mask = merge_slots_.size() - 1;
  for (size_t i = mix(key) & mask;; i = (i + 1) & mask) {
    const MergeSlot& slot = merge_slots_[i];
    if (slot.pair == key) return &slot;
    if (slot.pair == kNoPair) return nullptr;
  }
}

std::optional<int32_t> Bpe::token_to_id(std::string_view token) const {
  const int32_t id = find_token(token);
  if (id < 0) return std::nullopt;
  return id;
}

const std::string* Bpe::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= tokens_.size() || tokens_[static_cast<size_t>(id)].empty()) return nullptr;
  return &tokens_[static_cast<size_t>(id)];
}

size_t Bpe::encode(std::string_view word, std::vector<int32_t>& out, int threads) const {
  if (word.empty()) return 1;
  if (!split_before_metaspace_) {
    encode_piece(word, ignore_merges_, out);
    return 1;
  }
  if (ignore_merges_) {
    if (const int32_t id = find_token(word); id >= 0) {
      out.push_back(id);
      return 1;
    }
  }
  return encode_cut_word(word, out, threads);
}

size_t Bpe::encode_cut_word(std::string_view word, std::vector<int32_t>& out, int threads) const {
  if (word.empty()) return 1;
  std::vector<size_t> cuts{0};
  const size_t parts_wanted = parts_for(word.size(), threads);
  for (size_t k = 1; k < parts_wanted; ++k) {
    const size_t cut = next_cut(word, std::max(cuts.back() + 1, k * word.size() / parts_wanted));
    if (cut >= word.size()) break;
    cuts.push_back(cut);
  }
  const size_t parts = cuts.size();
  if (parts == 1) {
    encode_between_cuts(word, out);
    return 1;
  }
  cuts.push_back(word.size());
  encode_parts(
      parts,
      [&](size_t k, std::vector<int32_t>& ids) {
        ids.reserve((cuts[k + 1] - cuts[k]) / 3 + 16);
        encode_between_cuts(word.substr(cuts[k], cuts[k + 1] - cuts[k]), ids);
      },
      out);
  return parts;
}

// Where no merge can join a "▁" to the symbol before it, BPE on the pieces
// between those points gives the same ids as on the whole text: the pieces
// are short and repeat, so they hit the cache, where the whole text (one
// "word" for SentencePiece-style files without a pre-tokenizer) would not.
// (A "▁" is found by its bytes: in UTF-8 its first byte only starts a
// character.)
bool Bpe::cuts_before(std::string_view word, size_t pos) const {
  size_t previous = pos - 1;
  while (previous > 0 && (static_cast<uint8_t>(word[previous]) & 0xc0) == 0x80) --previous;
  const std::string_view before = word.substr(previous, pos - previous);
  return before != kMetaspace && !chars_joined_to_metaspace_.contains(before);
}

size_t Bpe::next_cut(std::string_view word, size_t from) const {
  for (size_t pos = word.find(kMetaspace, std::max<size_t>(from, 1)); pos != std::string_view::npos;
       pos = word.find(kMetaspace, pos + 1)) {
    if (cuts_before(word, pos)) return pos;
  }
  return word.size();
}

size_t Bpe::last_cut(std::string_view word, size_t from) const {
  from = std::max<size_t>(from, 1);
  for (size_t pos = word.rfind(kMetaspace); pos != std::string_view::npos && pos >= from;
       pos = pos > 0 ? word.rfind(kMetaspace, pos - 1) : std::string_view::npos) {
    if (cuts_before(word, pos)) return pos;
  }
  return 0;
}

void Bpe::encode_between_cuts(std::string_view word, std::vector<int32_t>& out) const {
  size_t start = 0;
  for (size_t cut = next_cut(word, 1); cut < word.size(); cut = next_cut(word, cut + 1)) {
    encode_piece(word.substr(start, cut - start), false, out);
    start = cut;
  }
  encode_piece(word.substr(start), false, out);
}

// The reader's side of the slot's sequence lock. Only the words it needs are
// read: the tag first (a different word's slot stops there), then the word
// as far as its length, then its ids. The entry's words are loaded with
// acquire and stored with release (plain moves on x86) in place of fences,
// which ThreadSanitizer does not model: a reader that sees any word of a
// newer entry then sees the writer's odd version, and drops what it read.
bool Bpe::lookup(const CacheSlot& slot, uint32_t tag, std::string_view word, std::vector<int32_t>& out) {
  const uint32_t before = slot.version.load(std::memory_order_acquire);
  if (before % 2 != 0 || slot.entry[0].load(std::memory_order_acquire) != tag) return false;
  uint32_t words[kEntryWords];
  words[0] = tag;
  const auto* bytes = reinterpret_cast<const unsigned char*>(words);
  const size_t word_end = (offsetof(CacheEntry, word) + word.size() + 3) / 4;
  for (size_t i = 1; i < word_end; ++i) words[i] = slot.entry[i].load(std::memory_order_acquire);
  const size_t count = bytes[offsetof(CacheEntry, id_count)];
  if (bytes[offsetof(CacheEntry, word_length)] != word.size() || count > kCachedIds ||
      std::memcmp(bytes + offsetof(CacheEntry, word), word.data(), word.size()) != 0) {
    return false;
  }
  constexpr size_t ids_at = offsetof(CacheEntry, ids) / 4;
  for (size_t i = ids_at; i < ids_at + count; ++i) words[i] = slot.entry[i].load(std::memory_order_acquire);
  if (slot.version.load(std::memory_order_relaxed) != before) return false;
  const size_t first = out.size();
  out.resize(first + count);
  std::memcpy(out.data() + first, bytes + offsetof(CacheEntry, ids), count * sizeof(int32_t));
  return true;
}

// The writer's side: the slot is claimed by making its version odd (a slot
// another writer holds is left alone), the entry written, the version made
// even again.
void Bpe::store(CacheSlot& slot, uint32_t tag, std::string_view word, std::span<const int32_t> ids) {
  uint32_t version = slot.version.load(std::memory_order_relaxed);
  if (version % 2 != 0 || !slot.version.compare_exchange_strong(version, version + 1, std::memory_order_relaxed)) {
    return;
  }
  CacheEntry entry{};
  entry.tag = tag;
  entry.word_length = static_cast<uint8_t>(word.size());
  entry.id_count = static_cast<uint8_t>(ids.size());
  std::memcpy(entry.word, word.data(), word.size());
  std::copy(ids.begin(), ids.end(), entry.ids);
  uint32_t words[kEntryWords];
  std::memcpy(words, &entry, sizeof entry);
  for (size_t i = 0; i < kEntryWords; ++i) slot.entry[i].store(words[i], std::memory_order_release);
  slot.version.store(version + 2, std::memory_order_release);
}

void Bpe::encode_piece(std::string_view word, bool whole_word_token, std::vector<int32_t>& out) const {
  const bool cacheable = word.size() <= kCachedWordBytes;
  const uint64_t hash = cacheable ? std::hash<std::string_view>{}(word) : 0;
  CacheSlot& slot = cache_[hash & (kCacheSlots - 1)];
  const auto tag = static_cast<uint32_t>(hash >> 32);
  if (cacheable && lookup(slot, tag, word, out)) return;
  const size_t first = out.size();
  if (const int32_t whole = whole_word_token ? find_token(word) : -1; whole >= 0) {
    out.push_back(whole);
  } else {
    merge_word(word, out);
  }
  const size_t count = out.size() - first;
  if (cacheable && count <= kCachedIds) store(slot, tag, word, std::span(out).subspan(first));
}

template <class Push>
void Bpe::for_each_symbol(std::string_view word, Push push) const {
  const bool plain = prefix_.empty() && suffix_.empty();
  std::string piece;
  bool previous_unk = false;
  for (size_t i = 0; i < word.size();) {
    const size_t start = i;
    i = std::min(word.size(), i + utf8_length(static_cast<uint8_t>(word[i])));
    int32_t id = -1;
    if (plain) {
      // Most characters are ASCII: their ids are at hand.
      id = i - start == 1 && static_cast<uint8_t>(word[start]) < 0x80 ? ascii_ids_[static_cast<uint8_t>(word[start])]
                                                                       : find_token(word.substr(start, i - start));
    } else {
      piece.clear();
      if (start > 0) piece += prefix_;
      piece.append(word.substr(start, i - start));
      if (i == word.size()) piece += suffix_;
      id = find_token(piece);
    }
    if (id >= 0) {
      push(id);
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
}

void Bpe::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  // A word has at most one symbol per byte. Short words (nearly all) are
  // merged in flat arrays; merge_long_word is the reference they agree with.
  if (word.size() > kShortWordBytes) {
    merge_long_word(word, out);
    return;
  }
  // ranks[i]/results[i]: the merge of symbols i and i + 1 (kNoRank: none).
  constexpr int32_t kNoRank = INT32_MAX;
  int32_t ids[kShortWordBytes + 1], ranks[kShortWordBytes + 1], results[kShortWordBytes + 1];
  size_t n = 0;
  for_each_symbol(word, [&](int32_t id) { ids[n++] = id; });
  auto rank_pair = [&](size_t i) {
    const MergeSlot* merge = find_merge(ids[i], ids[i + 1]);
    ranks[i] = merge ? merge->rank : kNoRank;
    results[i] = merge ? merge->result : -1;
  };
  for (size_t i = 0; i + 1 < n; ++i) rank_pair(i);
  if (n > 0) ranks[n - 1] = kNoRank;
  while (n > 1) {
    // The lowest rank, leftmost among equals, as the heap of merge_long_word pops them.
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i) {
      if (ranks[i] < ranks[best]) best = i;
    }
    if (ranks[best] == kNoRank) break;
    ids[best] = results[best];
    for (size_t i = best + 1; i + 1 < n; ++i) {
      ids[i] = ids[i + 1];
      ranks[i] = ranks[i + 1];
      results[i] = results[i + 1];
    }
    --n;
    ranks[n - 1] = kNoRank;
    if (best + 1 < n) rank_pair(best);
    if (best > 0) rank_pair(best - 1);
  }
  out.insert(out.end(), ids, ids + n);
}

void Bpe::merge_long_word(std::string_view word, std::vector<int32_t>& out) const {
  // Symbols in a doubly linked list; merges are applied lowest rank first,
  // leftmost first among equal ranks, through a heap of candidate pairs
  // that are checked for staleness when popped: O(n log n) in the word length.
  struct Symbol {
    int32_t id, prev, next;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for_each_symbol(word, [&](int32_t id) {
    symbols.push_back({id, static_cast<int32_t>(symbols.size()) - 1, static_cast<int32_t>(symbols.size()) + 1});
  });
  if (symbols.empty()) return;
  symbols.back().next = -1;

  // A candidate is (rank << 32 | position), smallest first: 8 bytes, so a
  // word of a million symbols keeps its heap compact. It is stale when the
  // pair at its position no longer has that rank (a rank names one pair).
  std::vector<uint64_t> heap;
  auto candidate = [](int32_t rank, int32_t pos) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(rank)) << 32) | static_cast<uint32_t>(pos);
  };
  auto consider = [&](int32_t pos) {
    if (pos < 0) return;
    const int32_t next = symbols[static_cast<size_t>(pos)].next;
    if (next < 0) return;
    if (const MergeSlot* merge = find_merge(symbols[static_cast<size_t>(pos)].id, symbols[static_cast<size_t>(next)].id)) {
      heap.push_back(candidate(merge->rank, pos));
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    }
  };
  for (int32_t pos = 0; pos + 1 < static_cast<int32_t>(symbols.size()); ++pos) {
    const MergeSlot* merge = find_merge(symbols[static_cast<size_t>(pos)].id, symbols[static_cast<size_t>(pos) + 1].id);
    if (merge) heap.push_back(candidate(merge->rank, pos));
  }
  std::make_heap(heap.begin(), heap.end(), std::greater<>());
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const uint64_t top = heap.back();
    heap.pop_back();
    const auto pos = static_cast<int32_t>(top & 0xffffffffu);
    Symbol& left = symbols[static_cast<size_t>(pos)];
    if (left.id < 0 || left.next < 0) continue;
    Symbol& right = symbols[static_cast<size_t>(left.next)];
    const MergeSlot* merge = find_merge(left.id, right.id);
    if (!merge || static_cast<uint64_t>(merge->rank) != top >> 32) continue;
    left.id = merge->result;
    right.id = -1;
    left.next = right.next;
    if (left.next >= 0) symbols[static_cast<size_t>(left.next)].prev = pos;
    consider(left.prev);
    consider(pos);
  }
  for (int32_t pos = 0; pos >= 0; pos = symbols[static_cast<size_t>(pos)].next) out.push_back(symbols[static_cast<size_t>(pos)].id);
}

}  // namespace slm::tok
