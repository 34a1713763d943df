// libFuzzer target: the JSON-lines training-data reader (read_jsonl_dataset)
// on arbitrary file contents, with a byte-level tokenizer and a ChatML
// template for conversations. The contract: either an slm::Error, or
// examples within seq_len whose labels are -100 or the token at their
// position, each with a label to learn, and a summary that counts them.
#include <slm/chat_template.h>
#include <slm/error.h>
#include <slm/train.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

namespace {

constexpr int64_t kSeqLen = 48;
constexpr int32_t kBos = 256, kEos = 257;

std::vector<int32_t> tokenize(std::string_view text, bool add_special_tokens) {
  std::vector<int32_t> ids;
  if (add_special_tokens) ids.push_back(kBos);
  for (const char c : text) ids.push_back(static_cast<unsigned char>(c));
  return ids;
}

const std::filesystem::path& input_path() {
  static const std::filesystem::path path = [] {
    std::string dir = (std::filesystem::temp_directory_path() / "slm-fuzz-dataset-XXXXXX").string();
    if (!mkdtemp(dir.data())) std::abort();
    return std::filesystem::path(dir) / "data.jsonl";
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const slm::ChatTemplate chatml(
      "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
      "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
      "fuzz/chatml");
  const slm::RenderChatFn render = [](const slm::ChatJson& messages, bool add_generation_prompt) {
    slm::ChatJson context = {{"messages", messages}, {"add_generation_prompt", add_generation_prompt}};
    return chatml.render(context);
  };
  {
    std::ofstream out(input_path(), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  std::vector<slm::TrainExample> examples;
  slm::DatasetSummary summary;
  try {
    examples = slm::read_jsonl_dataset(input_path(), tokenize, kSeqLen, kEos, &summary, render);
  } catch (const slm::Error&) {
    return 0;
  }
  if (examples.empty() || summary.examples != static_cast<int64_t>(examples.size())) std::abort();
  int64_t tokens = 0, counted = 0;
  for (const slm::TrainExample& e : examples) {
    if (e.tokens.empty() || e.tokens.size() != e.labels.size() || static_cast<int64_t>(e.tokens.size()) > kSeqLen) {
      std::abort();
    }
    int64_t learnable = 0;
    for (size_t i = 0; i < e.tokens.size(); ++i) {
      if (e.tokens[i] < 0 || e.tokens[i] > kEos) std::abort();
      if (e.labels[i] != -100 && e.labels[i] != e.tokens[i]) std::abort();
      if (i > 0 && e.labels[i] >= 0) ++learnable;
    }
    if (learnable == 0) std::abort();
    tokens += static_cast<int64_t>(e.tokens.size());
    counted += learnable;
  }
  if (summary.tokens != tokens || summary.loss_tokens != counted) std::abort();
  return 0;
}
