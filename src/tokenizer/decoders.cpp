// Decoders: ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence.
#include <slm/error.h>

#include "tokenizer/pipeline.h"
#include "tokenizer/unicode.h"

#include <nlohmann/json.hpp>

#include <unordered_set>

namespace slm::tok {

namespace {

using json = nlohmann::json;

class ByteLevel final : public Decoder {
 public:
  explicit ByteLevel(const std::vector<std::string>& added) : added_(added.begin(), added.end()) {}
  // Runs of ordinary tokens become bytes again; added tokens pass unchanged.
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    auto flush = [&] {
      if (!bytes.empty()) out.push_back(sanitize_utf8(bytes));
      bytes.clear();
    };
    for (const std::string& token : tokens) {
      if (added_.count(token)) {
        flush();
        out.push_back(token);
        continue;
      }
      for (size_t i = 0; i < token.size();) {
        const size_t start = i;
        const int b = unicode_to_byte(next_code_point(token, i));
        if (b >= 0) {
          bytes += static_cast<char>(b);
        } else {
          bytes.append(token, start, i - start);  // not a byte-level character: keep it as written
        }
      }
    }
    flush();
    tokens.swap(out);
  }

 private:
  std::unordered_set<std::string> added_;
};

class Metaspace final : public Decoder {
 public:
  Metaspace(std::string replacement, bool strip_first) : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    const Pattern pattern = Pattern::literal(replacement_);
    for (size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = pattern.replace_all(tokens[i], " ");
      if (i == 0 && strip_first_ && tokens[i].starts_with(' ')) tokens[i].erase(0, 1);
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

class Replace final : public Decoder {
 public:
  Replace(Pattern pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) token = pattern_.replace_all(token, content_);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// <0xAB> → the byte 0xAB, or -1.
int byte_token(const std::string& token) {
  if (token.size() != 6 || !token.starts_with("<0x") || token[5] != '>') return -1;
  int value = 0;
  for (int k = 3; k < 5; ++k) {
    const char c = token[static_cast<size_t>(k)];
    const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

class ByteFallback final : public Decoder {
 public:
  // Consecutive byte tokens form one string when they are valid UTF-8, else
  // one U+FFFD per byte (as `tokenizers` does).
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t byte_count = 0;
    auto flush = [&] {
      if (bytes.empty()) return;
      if (is_valid_utf8(bytes)) {
        out.push_back(bytes);
      } else {
        std::string replacement;
        for (size_t i = 0; i < byte_count; ++i) replacement += "\xEF\xBF\xBD";
        out.push_back(replacement);
      }
      bytes.clear();
      byte_count = 0;
    };
    for (std::string& token : tokens) {
      const int b = byte_token(token);
      if (b >= 0) {
        bytes += static_cast<char>(b);
        ++byte_count;
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    tokens.swap(out);
  }
};

class Fuse final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string joined;
    for (const std::string& token : tokens) joined += token;
    tokens.assign(1, joined);
  }
};

class Strip final : public Decoder {
 public:
  Strip(std::string content, int64_t start, int64_t stop) : content_(std::move(content)), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    if (content_.empty()) return;
    for (std::string& token : tokens) {
      size_t begin = 0, end = token.size();
      for (int64_t i = 0; i < start_ && token.compare(begin, content_.size(), content_) == 0 && begin < end; ++i) {
        begin += content_.size();
      }
      for (int64_t i = 0; i < stop_ && end >= begin + content_.size() &&
                          token.compare(end - content_.size(), content_.size(), content_) == 0;
           ++i) {
        end -= content_.size();
      }
      token = token.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  int64_t start_, stop_;
};

class Sequence final : public Decoder {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& step : steps_) step->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const json& config, const std::string& where,
                                      const std::vector<std::string>& added_tokens) {
  if (config.is_null()) return nullptr;
  if (!config.is_object() || !config.contains("type") || !config["type"].is_string()) {
    fail(where, ": expected an object with a \"type\"");
  }
  const std::string type = config["type"].get<std::string>();
  if (type == "ByteLevel") return std::make_unique<ByteLevel>(added_tokens);
  if (type == "Metaspace") {
    bool strip_first = config.value("add_prefix_space", true);
    if (config.contains("prepend_scheme") && config["prepend_scheme"].is_string()) {
      strip_first = config["prepend_scheme"].get<std::string>() != "never";
    }
    return std::make_unique<Metaspace>(config.value("replacement", std::string("\xE2\x96\x81")), strip_first);
  }
  if (type == "Replace") {
    if (!config.contains("content") || !config["content"].is_string()) fail(where, ": missing string field \"content\"");
    return std::make_unique<Replace>(Pattern::from_json(config.value("pattern", json()), where + ".pattern"),
                                     config["content"].get<std::string>());
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallback>();
  if (type == "Fuse") return std::make_unique<Fuse>();
  if (type == "Strip") {
    return std::make_unique<Strip>(config.value("content", std::string(" ")), config.value("start", int64_t{0}),
                                   config.value("stop", int64_t{0}));
  }
  if (type == "Sequence") {
    if (!config.contains("decoders") || !config["decoders"].is_array()) fail(where, ": Sequence needs a \"decoders\" array");
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < config["decoders"].size(); ++i) {
      auto step = make_decoder(config["decoders"][i], where + ".decoders[" + std::to_string(i) + "]", added_tokens);
      if (step) steps.push_back(std::move(step));
    }
    return std::make_unique<Sequence>(std::move(steps));
  }
  fail(where, ": decoder type \"", type,
       "\" is not supported (supported: ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence)");
}

}  // namespace slm::tok
