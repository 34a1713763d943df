// libFuzzer target: a whole model folder, loaded as `slm generate` loads it
// (Model::load, Tokenizer::from_dir, GenerationDefaults::from_file). The
// input is the folder's files one after another, each ended by the line
// "\n@@@@\n", in the order of kFiles; an empty part leaves its file out (so a
// folder without model.safetensors reads the index and its two shards). The
// contract: each loader throws slm::Error or returns something usable: a
// model whose every weight has the shape config.json implies, and that runs
// one token through a KV cache to a row of vocab_size logits; a tokenizer
// that encodes and decodes a fixed text. Anything else (another exception, a
// crash, a sanitizer report) is a finding.
#include <slm/error.h>
#include <slm/kv_cache.h>
#include <slm/model.h>
#include <slm/tokenizer.h>

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace {

namespace fs = std::filesystem;

constexpr const char* kFiles[] = {
    "config.json",          "model.safetensors",
    "tokenizer.json",       "tokenizer_config.json",
    "generation_config.json", "model.safetensors.index.json",
    "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
};
constexpr std::string_view kSeparator = "\n@@@@\n";

// One folder per process (libFuzzer may run several at once), removed at exit.
struct Folder {
  fs::path path = fs::temp_directory_path() / ("slm-fuzz-model-" + std::to_string(getpid()));
  ~Folder() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

const fs::path& folder() {
  static const Folder dir;
  return dir.path;
}

void write_folder(std::string_view input) {
  fs::remove_all(folder());
  fs::create_directories(folder());
  for (const char* name : kFiles) {
    const size_t end = input.find(kSeparator);
    const std::string_view part = input.substr(0, end);
    if (!part.empty()) std::ofstream(folder() / name, std::ios::binary).write(part.data(), static_cast<std::streamsize>(part.size()));
    if (end == std::string_view::npos) return;
    input.remove_prefix(end + kSeparator.size());
  }
}

void check_model() {
  std::optional<slm::Model> model;
  try {
    model.emplace(slm::Model::load(folder()));
  } catch (const slm::Error&) {
    return;  // rejected with a message: fine
  }
  const slm::ModelConfig& c = model->config();
  if (c.vocab_size <= 0 || c.hidden_size <= 0 || c.num_hidden_layers <= 0) std::abort();
  if (model->weight_bytes() == 0) std::abort();
  // One token through the cache: every weight is read with the shape the config implies.
  slm::KVCache cache(c, 1);
  const int32_t token[] = {0};
  if (static_cast<int64_t>(model->forward_last_logits(token, cache).size()) != c.vocab_size) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  write_folder(std::string_view(reinterpret_cast<const char*>(data), size));
  try {
    slm::GenerationDefaults::from_file(folder() / "generation_config.json");
  } catch (const slm::Error&) {
  }
  try {
    const slm::Tokenizer tokenizer = slm::Tokenizer::from_dir(folder());
    const std::vector<int32_t> ids = tokenizer.encode("Hello, world! 123 héllo", true);
    tokenizer.decode(ids, false);
  } catch (const slm::Error&) {
  }
  check_model();
  return 0;
}
