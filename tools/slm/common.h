// Shared plumbing of the subcommands: argument parsing with CLI11 and one
// uniform way of turning errors into a message and an exit code.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>

namespace slm::cli {

// Exit codes: 0 success, 1 a runtime error (bad file, bad model, ...),
// 2 a usage error (unknown option, bad option value).
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;

// Parses argv into `app`, then calls `body`. Prints "slm NAME: error: ..." for
// an slm::Error or a parse error and returns the matching exit code.
int run_command(CLI::App& app, int argc, char** argv, const std::function<int()>& body);

// Option checks whose errors read "--lr: must be a positive number, got abc"
// (CLI11's own print the whole range of a double).
CLI::Validator positive_number();
CLI::Validator non_negative_number();

// Reads a whole file, or standard input when path is "-"; fails with an slm::Error naming the path.
std::string read_text_file(const std::string& path);

}  // namespace slm::cli

#include <slm/generate.h>
#include <slm/model.h>
#include <slm/tokenizer.h>
#include <slm/train.h>

#include <memory>
#include <optional>

namespace slm::cli {

// The options every command that runs a model shares.
struct ModelOptions {
  std::string dir;
  std::string dtype = "auto";
  std::string device = "auto";
  int64_t gpu_layers = -1;
  std::string device_map;
  std::string attention = "auto";
  int threads = 0;  // 0: the default (all cores)
  std::string kv_dtype = "f32";
  std::string adapter;  // --adapter, for the commands that call add_adapter_option
};

// The folder a command uses when -m is not given: $SLM_MODEL when set, else
// slm's default model (share/slm/slm-tiny beside an installed binary, or, for
// the binary of the build folder, models/slm-tiny of the source tree it was
// built from). Loading it when it is missing fails saying where it was sought.
std::string default_model_dir();

// -m defaults to default_model_dir().
void add_model_options(CLI::App& app, ModelOptions& options);
// --adapter DIR: a PEFT LoRA adapter that load_model applies at run time.
void add_adapter_option(CLI::App& app, ModelOptions& options);
// --dtype, --device, --gpu-layers and --device-map as Model::load takes them.
LoadOptions load_options(const ModelOptions& options);
// Applies --threads, then loads the model with --dtype, --device and --attn.
Model load_model(const ModelOptions& options);
// --kv-cache: positions ("8192") or memory ("512MiB", "2GiB", "100MB") of
// the KV cache pool, as positions for `config` with keys and values in `kv_dtype`.
int64_t parse_kv_cache_size(const std::string& text, const ModelConfig& config, DType kv_dtype);
// The --adapter for `model`, or null when none was given.
std::shared_ptr<const Adapter> load_adapter_option(const Model& model, const ModelOptions& options);
// The tokenizer of a model folder, or of a GGUF file's metadata; fails
// naming the folder when it has none.
Tokenizer load_tokenizer(const std::string& dir);
// Renders conversations with `template_file` (--chat-template, a Jinja file)
// when given, else with the chat_template of DIR/tokenizer_config.json, and
// the tokenizer's special tokens (bos_token, ...). The template is parsed
// here; a model without one is an error only when a conversation is
// rendered, naming the file and suggesting --chat-template. `variables`
// (tools, enable_thinking, ...) join every render's context.
RenderChatFn chat_renderer(const std::string& dir, const Tokenizer& tokenizer, const std::string& template_file,
                           const ChatJson& variables = ChatJson::object());

// The generation options that slm generate and slm chat share.
struct GenerationFlags {
  GenerateOptions options;
  bool print_special = false;  // --no-skip-special
};
// -n, --temperature, --top-k, --top-p, --min-p, --repeat-penalty, --seed,
// --stop, --ignore-eos and --no-skip-special, into `flags`.
void add_generation_options(CLI::App& app, GenerationFlags& flags);
// What a request runs with: the sampling options given on the command line,
// then those of DIR/generation_config.json, then Hugging Face's default
// (greedy); the eos ids of config.json and generation_config.json; --kv-dtype.
GenerateOptions resolve_generate_options(const CLI::App& app, const GenerationFlags& flags, const Model& model,
                                         const ModelOptions& model_options);

// Fails, before any work, when `bytes` (what `what` needs, roughly) is more
// than the memory this machine has available (/proc/meminfo MemAvailable),
// naming both figures. Without /proc/meminfo it says nothing.
void check_memory(const std::string& what, double bytes);
// The same for free disk space under `path` (the nearest folder that exists).
void check_disk(const std::string& what, const std::filesystem::path& path, double bytes);

// Peak resident memory of this process so far, in MiB.
double peak_rss_mib();
// Starts the peak over from the current resident memory (Linux
// /proc/self/clear_refs), so a figure can leave out an earlier phase such as
// slm bench --probe's bandwidth buffer.
void reset_peak_rss();

}  // namespace slm::cli
