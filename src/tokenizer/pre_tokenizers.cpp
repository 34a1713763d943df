// Pre-tokenizers: ByteLevel, Split, Digits, Metaspace, Whitespace,
// WhitespaceSplit, Punctuation, BertPreTokenizer, Sequence.
#include <slm/error.h>

#include "tokenizer/pipeline.h"
#include "tokenizer/split_scanner.h"
#include "tokenizer/unicode.h"

#include <nlohmann/json.hpp>
#include <utf8proc.h>

#include <algorithm>
#include <functional>

namespace slm::tok {

namespace {

using json = nlohmann::json;

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

Behavior parse_behavior(const json& config, const std::string& where, Behavior fallback) {
  if (!config.contains("behavior")) return fallback;
  const std::string name = config["behavior"].is_string() ? config["behavior"].get<std::string>() : "";
  if (name == "Removed") return Behavior::Removed;
  if (name == "Isolated") return Behavior::Isolated;
  if (name == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::MergedWithNext;
  if (name == "Contiguous") return Behavior::Contiguous;
  fail(where, ": unknown split behavior \"", name,
       "\" (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous)");
}

struct Segment {
  size_t begin, end;
  bool is_match;
};

// Every match of `pattern` in `piece` and every stretch between them, as
// they are (the Isolated behavior), passed to `out` as they are found.
void isolate(std::string_view piece, const Pattern& pattern, PieceSink out) {
  size_t last = 0;
  pattern.for_each_match(piece, [&](size_t begin, size_t end) {
    if (begin > last) out(piece.substr(last, begin - last));
    out(piece.substr(begin, end - begin));
    last = end;
    return true;
  });
  if (last < piece.size()) out(piece.substr(last));
}

// Cuts `piece` at `matches` and regroups the parts as `tokenizers`'
// SplitDelimiterBehavior does, passing the non-empty results to `out`.
void split_piece(std::string_view piece, const std::vector<Span>& matches, Behavior behavior, bool invert,
                 PieceSink out) {
  if (behavior == Behavior::Isolated) {  // every match and every stretch between them, as they are
    size_t last = 0;
    for (const auto& [begin, end] : matches) {
      if (begin > last) out(piece.substr(last, begin - last));
      out(piece.substr(begin, end - begin));
      last = end;
    }
    if (last < piece.size()) out(piece.substr(last));
    return;
  }
  std::vector<Segment> segments;
  size_t last = 0;
  for (const auto& [begin, end] : matches) {
    if (begin > last) segments.push_back({last, begin, invert});
    segments.push_back({begin, end, !invert});
    last = end;
  }
  if (last < piece.size()) segments.push_back({last, piece.size(), invert});

  std::vector<Span> grouped;
  bool previous_match = false;
  switch (behavior) {
    case Behavior::Removed:
      for (const Segment& s : segments) {
        if (!s.is_match) grouped.emplace_back(s.begin, s.end);
      }
      break;
    case Behavior::Isolated:  // handled above
      break;
    case Behavior::MergedWithPrevious:
      for (const Segment& s : segments) {
        if (s.is_match && !previous_match && !grouped.empty()) {
          grouped.back().second = s.end;
        } else {
          grouped.emplace_back(s.begin, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    case Behavior::MergedWithNext:
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->is_match && !previous_match && !grouped.empty()) {
          grouped.back().first = it->begin;
        } else {
          grouped.emplace_back(it->begin, it->end);
        }
        previous_match = it->is_match;
      }
      std::reverse(grouped.begin(), grouped.end());
      break;
    case Behavior::Contiguous:
      for (size_t i = 0; i < segments.size(); ++i) {
        if (i > 0 && segments[i].is_match == previous_match) {
          grouped.back().second = segments[i].end;
        } else {
          grouped.emplace_back(segments[i].begin, segments[i].end);
        }
        previous_match = segments[i].is_match;
      }
      break;
  }
  for (const auto& [begin, end] : grouped) {
    if (end > begin) out(piece.substr(begin, end - begin));
  }
}

// Matches of single characters satisfying `predicate`.
std::vector<Span> character_matches(std::string_view piece, const std::function<bool(char32_t)>& predicate) {
  std::vector<Span> matches;
  for (size_t i = 0; i < piece.size();) {
    const size_t start = i;
    if (predicate(next_code_point(piece, i))) matches.emplace_back(start, i);
  }
  return matches;
}

class PatternSplit final : public PreTokenizer {
 public:
  PatternSplit(Pattern pattern, Behavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void split(std::string_view piece, size_t, PieceSink out) const override {
    if (behavior_ == Behavior::Isolated) {  // invert or not, the same parts
      isolate(piece, pattern_, out);
      return;
    }
    std::vector<Span> matches;
    pattern_.find_all(piece, matches);
    split_piece(piece, matches, behavior_, invert_, out);
  }
  const Pattern* leading_pattern() const override { return behavior_ == Behavior::Isolated ? &pattern_ : nullptr; }

 private:
  Pattern pattern_;
  Behavior behavior_;
  bool invert_;
};

class CharacterSplit final : public PreTokenizer {
 public:
  CharacterSplit(std::function<bool(char32_t)> predicate, Behavior behavior)
      : predicate_(std::move(predicate)), behavior_(behavior) {}
  void split(std::string_view piece, size_t, PieceSink out) const override {
    split_piece(piece, character_matches(piece, predicate_), behavior_, false, out);
  }

 private:
  std::function<bool(char32_t)> predicate_;
  Behavior behavior_;
};

class ByteLevel final : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex, const std::string& where)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex), pattern_(Pattern::regex(kGpt2Split, where)) {
    for (int b = 0; b < 256; ++b) {
      const std::string& mapped = byte_to_unicode(static_cast<uint8_t>(b));
      mapped_[b].length = static_cast<uint8_t>(mapped.size());  // 1 or 2: every mapped character is below U+0200
      std::copy(mapped.begin(), mapped.end(), mapped_[b].bytes);
    }
  }
  void split(std::string_view piece, size_t, PieceSink out) const override {
    std::string spaced;
    if (add_prefix_space_ && (piece.empty() || piece[0] != ' ')) {
      spaced.reserve(piece.size() + 1);
      spaced += ' ';
      spaced += piece;
      piece = spaced;
    }
    if (use_regex_) {
      isolate(piece, pattern_, [&](std::string_view sub) { split_rest(sub, 0, out); });
    } else {
      split_rest(piece, 0, out);
    }
  }
  const Pattern* leading_pattern() const override { return use_regex_ && !add_prefix_space_ ? &pattern_ : nullptr; }
  // Maps the bytes, on the stack when they fit (most words).
  void split_rest(std::string_view piece, size_t, PieceSink out) const override {
    char small[256];
    std::string large;
    char* to = small;
    if (2 * piece.size() > sizeof small) {
      large.resize(2 * piece.size());
      to = large.data();
    }
    out(std::string_view(to, map_bytes(piece, to)));
  }

 private:
  struct MappedByte {
    char bytes[2];
    uint8_t length;
  };

  // Writes the characters of `text`'s bytes to `to` (room for two bytes
  // per byte); returns their length.
  size_t map_bytes(std::string_view text, char* to) const {
    char* at = to;
    for (char c : text) {
      const MappedByte& m = mapped_[static_cast<uint8_t>(c)];
      at[0] = m.bytes[0];
      at[1] = m.bytes[1];
      at += m.length;
    }
    return static_cast<size_t>(at - to);
  }

  bool add_prefix_space_;
  bool use_regex_;
  Pattern pattern_;
  MappedByte mapped_[256];
};

class Metaspace final : public PreTokenizer {
 public:
  enum class Prepend { Always, First, Never };
  Metaspace(std::string replacement, Prepend prepend, bool split)
      : replacement_(std::move(replacement)), prepend_(prepend), split_(split) {}
  void split(std::string_view piece, size_t section, PieceSink out) const override {
    std::string text = Pattern::literal(" ").replace_all(piece, replacement_);
    const bool prepend = prepend_ == Prepend::Always || (prepend_ == Prepend::First && section == 0);
    if (prepend && !text.starts_with(replacement_)) text = replacement_ + text;
    if (!split_) {
      out(text);
      return;
    }
    std::vector<Span> matches;
    Pattern::literal(replacement_).find_all(text, matches);
    split_piece(text, matches, Behavior::MergedWithNext, false, out);
  }

 private:
  std::string replacement_;
  Prepend prepend_;
  bool split_;
};

class Sequence final : public PreTokenizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  void split(std::string_view piece, size_t section, PieceSink out) const override { split_from(0, piece, section, out); }
  const Pattern* leading_pattern() const override { return steps_.empty() ? nullptr : steps_[0]->leading_pattern(); }
  void split_rest(std::string_view piece, size_t section, PieceSink out) const override {
    steps_[0]->split_rest(piece, section, [&](std::string_view sub) { split_from(1, sub, section, out); });
  }

 private:
  // Each piece of step `step` goes through the steps after it before the next is cut.
  void split_from(size_t step, std::string_view piece, size_t section, PieceSink out) const {
    if (step == steps_.size()) {
      out(piece);
      return;
    }
    steps_[step]->split(piece, section, [&](std::string_view sub) { split_from(step + 1, sub, section, out); });
  }

  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

bool is_numeric(char32_t cp) {
  const auto category = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return category == UTF8PROC_CATEGORY_ND || category == UTF8PROC_CATEGORY_NL || category == UTF8PROC_CATEGORY_NO;
}

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& config, const std::string& where) {
  if (config.is_null()) return nullptr;
  if (!config.is_object() || !config.contains("type") || !config["type"].is_string()) {
    fail(where, ": expected an object with a \"type\"");
  }
  const std::string type = config["type"].get<std::string>();
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevel>(config.value("add_prefix_space", true), config.value("use_regex", true), where);
  }
  if (type == "Split") {
    return std::make_unique<PatternSplit>(Pattern::from_json(config.value("pattern", json()), where + ".pattern"),
                                          parse_behavior(config, where, Behavior::Isolated), config.value("invert", false));
  }
  if (type == "Digits") {
    return std::make_unique<CharacterSplit>(is_numeric, config.value("individual_digits", false) ? Behavior::Isolated
                                                                                                  : Behavior::Contiguous);
  }
  if (type == "Metaspace") {
    const std::string replacement = config.value("replacement", std::string("\xE2\x96\x81"));
    Metaspace::Prepend prepend = config.value("add_prefix_space", true) ? Metaspace::Prepend::Always : Metaspace::Prepend::Never;
    if (config.contains("prepend_scheme") && config["prepend_scheme"].is_string()) {
      const std::string scheme = config["prepend_scheme"].get<std::string>();
      if (scheme == "always") {
        prepend = Metaspace::Prepend::Always;
      } else if (scheme == "first") {
        prepend = Metaspace::Prepend::First;
      } else if (scheme == "never") {
        prepend = Metaspace::Prepend::Never;
      } else {
        fail(where, ": unknown prepend_scheme \"", scheme, "\" (expected always, first or never)");
      }
    }
    return std::make_unique<Metaspace>(replacement, prepend, config.value("split", true));
  }
  if (type == "Whitespace") {
    return std::make_unique<PatternSplit>(Pattern::regex(R"(\w+|[^\w\s]+)", where), Behavior::Removed, true);
  }
  if (type == "WhitespaceSplit") return std::make_unique<CharacterSplit>(is_whitespace, Behavior::Removed);
  if (type == "Punctuation") {
    return std::make_unique<CharacterSplit>(is_punctuation, parse_behavior(config, where, Behavior::Isolated));
  }
  if (type == "BertPreTokenizer") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    steps.push_back(std::make_unique<CharacterSplit>(is_whitespace, Behavior::Removed));
    steps.push_back(std::make_unique<CharacterSplit>(is_punctuation, Behavior::Isolated));
    return std::make_unique<Sequence>(std::move(steps));
  }
  if (type == "Sequence") {
    if (!config.contains("pretokenizers") || !config["pretokenizers"].is_array()) {
      fail(where, ": Sequence needs a \"pretokenizers\" array");
    }
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < config["pretokenizers"].size(); ++i) {
      auto step = make_pre_tokenizer(config["pretokenizers"][i], where + ".pretokenizers[" + std::to_string(i) + "]");
      if (step) steps.push_back(std::move(step));
    }
    return std::make_unique<Sequence>(std::move(steps));
  }
  fail(where, ": pre-tokenizer type \"", type,
       "\" is not supported (supported: ByteLevel, Split, Digits, Metaspace, Whitespace, WhitespaceSplit, Punctuation, "
       "BertPreTokenizer, Sequence)");
}

}  // namespace slm::tok
