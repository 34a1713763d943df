// Byte-level BPE training: count the pre-tokenized words of the text, then
// repeatedly merge the most frequent adjacent pair of symbols. The result is
// written as a tokenizer.json in the layout of GPT-2 / Llama 3 / SmolLM, so
// Hugging Face `tokenizers` (and slm's own Tokenizer) load it as written.
#include "tokenizer/pipeline.h"
#include "tokenizer/unicode.h"

#include <slm/error.h>
#include <slm/tokenizer.h>

#include "core/atomic_file.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <queue>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

namespace slm {

namespace {

// The Llama 3 split: contractions, letters with one leading non-letter,
// numbers in groups of up to three digits, punctuation runs, newlines.
constexpr const char* kSplitPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

nlohmann::json pre_tokenizer_config() {
  return {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"}, {"pattern", {{"Regex", kSplitPattern}}}, {"behavior", "Isolated"}, {"invert", false}},
            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
}

nlohmann::json byte_level(bool trim_offsets) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", trim_offsets}, {"use_regex", true}};
}

// Pieces of at most this many bytes are pre-tokenized at a time; cuts fall
// after a newline so that words are never split.
constexpr size_t kChunkBytes = size_t{1} << 16;

using WordCounts = std::unordered_map<std::string, int64_t>;

void count_words(const tok::PreTokenizer& pre_tokenizer, std::string_view text, WordCounts& counts) {
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = std::min(text.size(), begin + kChunkBytes);
    if (end < text.size()) {
      const size_t newline = text.rfind('\n', end);
      if (newline != std::string_view::npos && newline > begin) {
        end = newline + 1;
      } else {
        while (end > begin + 1 && (static_cast<uint8_t>(text[end]) & 0xC0) == 0x80) --end;  // not inside a character
      }
    }
    pre_tokenizer.split(tok::sanitize_utf8(text.substr(begin, end - begin)), 0,
                        [&](std::string_view piece) { ++counts[std::string(piece)]; });
    begin = end;
  }
}

struct Word {
  std::vector<int32_t> symbols;
  int64_t count;
};

uint64_t pair_key(int32_t a, int32_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b); }

struct Candidate {
  int64_t count;
  uint64_t pair;
  // Most frequent first; among equals, the pair of older (smaller) ids.
  bool operator<(const Candidate& other) const {
    return count != other.count ? count < other.count : pair > other.pair;
  }
};

class BpeLearner {
 public:
  BpeLearner(std::vector<Word> words, std::vector<std::string> symbols)
      : words_(std::move(words)), symbols_(std::move(symbols)) {
    for (size_t w = 0; w < words_.size(); ++w) add_pairs(static_cast<int32_t>(w), +1);
    for (const auto& [pair, count] : pair_counts_) heap_.push({count, pair});
  }

  // Merges until the vocabulary holds `target` symbols or no pair occurs
  // `min_frequency` times.
  void learn(size_t target, int64_t min_frequency) {
    while (symbols_.size() < target && !heap_.empty()) {
      const Candidate top = heap_.top();
      heap_.pop();
      const auto it = pair_counts_.find(top.pair);
      const int64_t current = it == pair_counts_.end() ? 0 : it->second;
      if (current != top.count) {  // stale entry: requeue with the live count
        if (current > 0) heap_.push({current, top.pair});
        continue;
      }
      if (current < min_frequency) break;
      merge(top.pair);
    }
  }

  const std::vector<std::string>& symbols() const { return symbols_; }
  const std::vector<std::pair<int32_t, int32_t>>& merges() const { return merges_; }

 private:
  void add_pairs(int32_t w, int sign) {
    const Word& word = words_[static_cast<size_t>(w)];
    for (size_t i = 0; i + 1 < word.symbols.size(); ++i) {
      const uint64_t key = pair_key(word.symbols[i], word.symbols[i + 1]);
      int64_t& count = pair_counts_[key];
      count += sign * word.count;
      if (sign > 0) where_[key].push_back(w);
      changed_.insert(key);
    }
  }

  void merge(uint64_t pair) {
    const auto a = static_cast<int32_t>(pair >> 32);
    const auto b = static_cast<int32_t>(pair & 0xffffffffu);
    const auto merged = static_cast<int32_t>(symbols_.size());
    symbols_.push_back(symbols_[static_cast<size_t>(a)] + symbols_[static_cast<size_t>(b)]);
    merges_.emplace_back(a, b);

    std::vector<int32_t> holders = std::move(where_[pair]);
    where_.erase(pair);
    std::sort(holders.begin(), holders.end());
    holders.erase(std::unique(holders.begin(), holders.end()), holders.end());
    changed_.clear();
    for (const int32_t w : holders) {
      std::vector<int32_t>& s = words_[static_cast<size_t>(w)].symbols;
      bool present = false;
      for (size_t i = 0; i + 1 < s.size() && !present; ++i) present = s[i] == a && s[i + 1] == b;
      if (!present) continue;  // an earlier merge already consumed the pair here
      // A word's pairs are removed and re-added whole: words are short, and
      // overlapping occurrences ("a a a") then need no special case.
      add_pairs(w, -1);
      size_t out = 0;
      for (size_t i = 0; i < s.size(); ++out) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          s[out] = merged;
          i += 2;
        } else {
          s[out] = s[i++];
        }
      }
      s.resize(out);
      add_pairs(w, +1);
    }
    pair_counts_.erase(pair);
    for (const uint64_t key : changed_) {
      const auto it = pair_counts_.find(key);
      if (it == pair_counts_.end()) continue;
      if (it->second <= 0) {
        pair_counts_.erase(it);
        where_.erase(key);
      } else {
        heap_.push({it->second, key});
      }
    }
  }

  std::vector<Word> words_;
  std::vector<std::string> symbols_;
  std::vector<std::pair<int32_t, int32_t>> merges_;
  std::unordered_map<uint64_t, int64_t> pair_counts_;
  std::unordered_map<uint64_t, std::vector<int32_t>> where_;
  std::unordered_set<uint64_t> changed_;
  std::priority_queue<Candidate> heap_;
};

// A byte-level word as the ids of its byte symbols (symbol id = byte value).
std::vector<int32_t> byte_symbols(const std::string& word) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < word.size();) ids.push_back(tok::unicode_to_byte(tok::next_code_point(word, i)));
  return ids;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path.string(), ": cannot open for reading");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail(path.string(), ": read error");
  return std::move(text).str();
}

}  // namespace

TokenizerTrainStats train_bpe_tokenizer(std::span<const std::filesystem::path> files,
                                        const TokenizerTrainOptions& options,
                                        const std::filesystem::path& out_dir) {
  if (files.empty()) fail("tokenizer training needs at least one text file");
  const auto specials = static_cast<int32_t>(options.special_tokens.size());
  if (options.vocab_size < specials + 256) {
    fail("--vocab-size ", options.vocab_size, " is too small: byte-level BPE needs 256 byte symbols plus ",
         specials, " special tokens");
  }
  if (options.min_frequency < 1) fail("--min-frequency must be >= 1, got ", options.min_frequency);
  std::unordered_set<std::string> seen;
  for (const std::string& s : options.special_tokens) {
    if (s.empty()) fail("--special-tokens: a special token cannot be empty");
    if (!seen.insert(s).second) fail("--special-tokens: '", s, "' is listed twice");
  }

  TokenizerTrainStats stats;
  const std::unique_ptr<tok::PreTokenizer> pre_tokenizer =
      tok::make_pre_tokenizer(pre_tokenizer_config(), "tokenizer trainer");
  WordCounts counts;
  for (const std::filesystem::path& file : files) {
    const std::string text = read_file(file);
    stats.bytes += static_cast<int64_t>(text.size());
    count_words(*pre_tokenizer, text, counts);
  }

  // Special tokens take the first ids, the 256 byte symbols the next.
  std::vector<std::string> symbols;
  for (int byte = 0; byte < 256; ++byte) symbols.push_back(tok::byte_to_unicode(static_cast<uint8_t>(byte)));
  // The merges do not depend on the order of the words (ties between pairs
  // are broken by symbol ids), so the hash map's order is fine.
  std::vector<Word> words;
  words.reserve(counts.size());
  for (const auto& [text, count] : counts) {
    stats.words += count;
    words.push_back({byte_symbols(text), count});
  }
  counts.clear();
  stats.distinct_words = static_cast<int64_t>(words.size());

  BpeLearner learner(std::move(words), std::move(symbols));
  learner.learn(static_cast<size_t>(options.vocab_size - specials), options.min_frequency);

  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  nlohmann::json added = nlohmann::json::array();
  for (int32_t id = 0; id < specials; ++id) {
    const std::string& content = options.special_tokens[static_cast<size_t>(id)];
    vocab[content] = id;
    added.push_back({{"id", id},
                     {"content", content},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  const std::vector<std::string>& learned = learner.symbols();
  for (size_t i = 0; i < learned.size(); ++i) vocab[learned[i]] = specials + static_cast<int32_t>(i);
  nlohmann::json merges = nlohmann::json::array();
  for (const auto& [a, b] : learner.merges()) {
    merges.push_back(learned[static_cast<size_t>(a)] + " " + learned[static_cast<size_t>(b)]);
  }
  stats.vocab_size = specials + static_cast<int32_t>(learned.size());
  stats.merges = static_cast<int64_t>(learner.merges().size());

  nlohmann::ordered_json tokenizer;
  tokenizer["version"] = "1.0";
  tokenizer["truncation"] = nullptr;
  tokenizer["padding"] = nullptr;
  tokenizer["added_tokens"] = added;
  tokenizer["normalizer"] = nullptr;
  tokenizer["pre_tokenizer"] = pre_tokenizer_config();
  tokenizer["post_processor"] = byte_level(false);
  tokenizer["decoder"] = byte_level(true);
  tokenizer["model"] = {{"type", "BPE"},
                        {"dropout", nullptr},
                        {"unk_token", nullptr},
                        {"continuing_subword_prefix", nullptr},
                        {"end_of_word_suffix", nullptr},
                        {"fuse_unk", false},
                        {"byte_fallback", false},
                        {"ignore_merges", false},
                        {"vocab", vocab},
                        {"merges", merges}};

  nlohmann::ordered_json config;
  config["tokenizer_class"] = "PreTrainedTokenizerFast";
  config["add_bos_token"] = false;
  config["add_eos_token"] = false;
  config["clean_up_tokenization_spaces"] = false;
  config["model_max_length"] = options.model_max_length;
  if (specials > 0) {
    config["bos_token"] = options.special_tokens.front();
    config["eos_token"] = options.special_tokens.front();
  }

  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) fail(out_dir.string(), ": cannot create folder: ", ec.message());
  write_text_atomically(out_dir / "tokenizer.json", tokenizer.dump(2, ' ', false) + "\n");
  write_text_atomically(out_dir / "tokenizer_config.json", config.dump(2) + "\n");
  return stats;
}

}  // namespace slm
