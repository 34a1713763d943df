// Normalizers: NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents,
// Replace, Prepend, Sequence.
#include <slm/error.h>

#include "tokenizer/pipeline.h"
#include "tokenizer/unicode.h"

#include <nlohmann/json.hpp>
#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>

namespace slm::tok {

namespace {

using json = nlohmann::json;

bool is_ascii(const std::string& text) {
  for (char c : text) {
    if (static_cast<uint8_t>(c) >= 0x80) return false;
  }
  return true;
}

class UnicodeForm final : public Normalizer {
 public:
  explicit UnicodeForm(int options) : options_(options) {}
  // The place before an ASCII character is a normalization boundary (ASCII
  // characters are starters, unchanged by every form, and never the second
  // of a composed pair), so only the stretches of non-ASCII characters, with
  // the character before each, go through utf8proc: one accented letter no
  // longer sends a whole book through it.
  std::string normalize(std::string text, bool /*first*/, bool /*last*/) const override {
    if (is_ascii(text)) return text;
    auto is_ascii_byte = [](char c) { return static_cast<uint8_t>(c) < 0x80; };
    std::string out;
    out.reserve(text.size());
    size_t at = 0;
    while (at < text.size()) {
      size_t next = at;
      while (next < text.size() && is_ascii_byte(text[next])) ++next;
      if (next == text.size()) {
        out.append(text, at, next - at);
        break;
      }
      const size_t begin = next > at ? next - 1 : next;
      size_t end = next;
      while (end < text.size() && !is_ascii_byte(text[end])) ++end;
      out.append(text, at, begin - at);
      append_normalized(std::string_view(text).substr(begin, end - begin), out);
      at = end;
    }
    return out;
  }

 private:
  void append_normalized(std::string_view text, std::string& out) const {
    utf8proc_uint8_t* mapped = nullptr;
    const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                            static_cast<utf8proc_ssize_t>(text.size()), &mapped,
                                            static_cast<utf8proc_option_t>(options_));
    if (n < 0) {
      out.append(text);  // input is sanitized UTF-8, so this does not happen
      return;
    }
    out.append(reinterpret_cast<char*>(mapped), static_cast<size_t>(n));
    std::free(mapped);
  }

  int options_;
};

// Σ's rule looks at the characters on either side of it. A part cut after
// a newline ends with that newline, and the part after it starts where the
// character before is that newline: a non-word character either way, as the
// start of a text (nothing) is, so the rule sees the same across a cut.
class Lowercase final : public Normalizer {
 public:
  std::string normalize(std::string text, bool /*first*/, bool /*last*/) const override {
    std::string out;
    out.reserve(text.size());
    char32_t previous = 0;
    for (size_t i = 0; i < text.size();) {
      const char32_t cp = next_code_point(text, i);
      if (cp == 0x130) {  // İ lowers to i + combining dot above (the one multi-character mapping)
        out += "i\xCC\x87";
      } else if (cp == 0x3a3) {  // Σ ends a word as ς
        size_t j = i;
        const bool at_end = j >= text.size() || !is_word_char(next_code_point(text, j));
        append_utf8(out, at_end && is_word_char(previous) ? 0x3c2 : 0x3c3);
      } else {
        append_utf8(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
      }
      previous = cp;
    }
    return out;
  }
};

class Strip final : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  std::string normalize(std::string text, bool first, bool last) const override {
    return std::string(trim_whitespace(text, left_ && first, right_ && last));
  }
  // A first part of whitespace alone would leave the strip short of the second part's.
  bool normalizes_in_parts() const override { return false; }

 private:
  bool left_, right_;
};

class StripAccents final : public Normalizer {
 public:
  std::string normalize(std::string text, bool /*first*/, bool /*last*/) const override {
    std::string out;
    for (size_t i = 0; i < text.size();) {
      const char32_t cp = next_code_point(text, i);
      if (utf8proc_category(static_cast<utf8proc_int32_t>(cp)) != UTF8PROC_CATEGORY_MN) append_utf8(out, cp);
    }
    return out;
  }
};

class Replace final : public Normalizer {
 public:
  Replace(Pattern pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::string normalize(std::string text, bool /*first*/, bool /*last*/) const override {
    return pattern_.replace_all(text, content_);
  }
  // A match that holds no newline neither reaches across a cut after one nor removes it.
  bool normalizes_in_parts() const override { return !pattern_.may_match_newline(); }

 private:
  Pattern pattern_;
  std::string content_;
};

class Prepend final : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string normalize(std::string text, bool first, bool /*last*/) const override {
    if (first && !text.empty()) text.insert(0, prefix_);
    return text;
  }

 private:
  std::string prefix_;
};

class Sequence final : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  std::string normalize(std::string text, bool first, bool last) const override {
    for (const auto& step : steps_) text = step->normalize(std::move(text), first, last);
    return text;
  }
  bool normalizes_in_parts() const override {
    return std::all_of(steps_.begin(), steps_.end(), [](const auto& step) { return step->normalizes_in_parts(); });
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

std::string string_field(const json& config, const char* key, const std::string& where) {
  if (!config.contains(key) || !config[key].is_string()) fail(where, ": missing string field \"", key, "\"");
  return config[key].get<std::string>();
}

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const json& config, const std::string& where) {
  if (config.is_null()) return nullptr;
  if (!config.is_object() || !config.contains("type") || !config["type"].is_string()) {
    fail(where, ": expected an object with a \"type\"");
  }
  const std::string type = config["type"].get<std::string>();
  if (type == "NFC") return std::make_unique<UnicodeForm>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  if (type == "NFD") return std::make_unique<UnicodeForm>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
  if (type == "NFKC") return std::make_unique<UnicodeForm>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
  if (type == "NFKD") return std::make_unique<UnicodeForm>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "StripAccents") return std::make_unique<StripAccents>();
  if (type == "Strip") {
    return std::make_unique<Strip>(config.value("strip_left", true), config.value("strip_right", true));
  }
  if (type == "Replace") {
    return std::make_unique<Replace>(Pattern::from_json(config.value("pattern", json()), where + ".pattern"),
                                     string_field(config, "content", where));
  }
  if (type == "Prepend") return std::make_unique<Prepend>(string_field(config, "prepend", where));
  if (type == "Sequence") {
    if (!config.contains("normalizers") || !config["normalizers"].is_array()) {
      fail(where, ": Sequence needs a \"normalizers\" array");
    }
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < config["normalizers"].size(); ++i) {
      auto step = make_normalizer(config["normalizers"][i], where + ".normalizers[" + std::to_string(i) + "]");
      if (step) steps.push_back(std::move(step));
    }
    return std::make_unique<Sequence>(std::move(steps));
  }
  fail(where, ": normalizer type \"", type,
       "\" is not supported (supported: NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, Replace, Prepend, Sequence)");
}

}  // namespace slm::tok
