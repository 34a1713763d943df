#include "common.h"

#include <slm/chat_template.h>
#include <slm/error.h>
#include <slm/train.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <memory>
#include <new>
#include <sstream>

namespace slm::cli {

int run_command(CLI::App& app, int argc, char** argv, const std::function<int()>& body) {
  const std::string name = "slm " + app.get_name();
  // A repeated single-valued option takes its last value, as most tools do
  // (scripts append overrides to a base command line).
  for (CLI::Option* option : app.get_options()) {
    if (option->get_expected_max() == 1) option->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    // --help shows every option's default: the value its variable holds now,
    // unless the description says what the default is (resolved later).
    if (option->get_type_size() > 0 && option->get_default_str().empty() &&
        option->get_description().find("default") == std::string::npos) {
      option->capture_default_str();
      if (option->get_default_str() == "[]") option->default_str("");
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return 0;
  } catch (const CLI::ParseError& e) {
    std::cerr << name << ": error: " << e.what() << "\n"
              << "Run '" << name << " --help' for the options.\n";
    return kExitUsage;
  }
  try {
    const int code = body();
    std::cout.flush();
    return code;
  } catch (const Error& e) {
    std::cout.flush();
    std::cerr << name << ": error: " << e.what() << "\n";
    return kExitError;
  } catch (const std::bad_alloc&) {
    std::cout.flush();
    std::cerr << name << ": error: out of memory\n";
    return kExitError;
  } catch (const std::filesystem::filesystem_error& e) {
    // A path that cannot be made or read (a file where a folder should be,
    // /proc, a full disk): its message names the path and the reason.
    std::cout.flush();
    std::cerr << name << ": error: " << e.what() << "\n";
    return kExitError;
  }
}

namespace {

CLI::Validator number_check(const char* what, const char* name, bool (*accept)(double)) {
  return CLI::Validator(
      [what, accept](std::string& text) -> std::string {
        char* end = nullptr;
        const double value = std::strtod(text.c_str(), &end);
        if (text.empty() || *end != '\0' || !std::isfinite(value) || !accept(value)) {
          return std::string("must be ") + what + ", got " + text;
        }
        return {};
      },
      name);
}

}  // namespace

CLI::Validator positive_number() {
  return number_check("a positive number", "POSITIVE", [](double v) { return v > 0; });
}

CLI::Validator non_negative_number() {
  return number_check("a number >= 0", "NONNEGATIVE", [](double v) { return v >= 0; });
}

std::string read_text_file(const std::string& path) {
  if (path == "-") {
    return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open file for reading");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) fail(path, ": read error");
  return buffer.str();
}

}  // namespace slm::cli

#include <sys/resource.h>

namespace slm::cli {

namespace {

// Where the default model is installed beside this binary: PREFIX/share/slm/slm-tiny.
std::filesystem::path installed_default_model() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return {};
  return exe.parent_path().parent_path() / "share" / "slm" / "slm-tiny";
}

bool running_from_build_folder() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return !ec && std::filesystem::equivalent(exe.parent_path(), SLM_BUILD_BINARY_DIR, ec);
}

bool model_env_set() {
  const char* env = std::getenv("SLM_MODEL");
  return env != nullptr && *env != '\0';
}

// A folder that is the default model but is missing: say where it was looked for.
void check_default_model(const std::string& dir) {
  std::error_code ec;
  if (model_env_set() || dir != default_model_dir() || std::filesystem::exists(std::filesystem::path(dir) / "config.json", ec)) {
    return;
  }
  fail("no -m given, and slm's default model is not at ", dir,
       " (it is installed as share/slm/slm-tiny beside bin/slm): pass -m DIR or set SLM_MODEL=DIR");
}

}  // namespace

std::string default_model_dir() {
  if (model_env_set()) return std::getenv("SLM_MODEL");
  const std::filesystem::path installed = installed_default_model();
  std::error_code ec;
  if (!installed.empty() && std::filesystem::exists(installed / "config.json", ec)) return installed.string();
  if (running_from_build_folder()) return SLM_DEFAULT_MODEL_DIR;
  return installed.string();
}

void add_model_options(CLI::App& app, ModelOptions& options) {
  options.dir = default_model_dir();
  app.add_option("-m,--model", options.dir,
                 "model folder (config.json, *.safetensors, tokenizer.json) or GGUF file (model.gguf)")
      ->capture_default_str();
  app.add_option("--dtype", options.dtype,
                 "weights in memory: auto (as stored, no copy), f32, f16, bf16, q8 or q4 (blocks of 32, quantized at load)")
      ->check(CLI::IsMember({"auto", "f32", "f16", "bf16", "q8", "q4"}));
  app.add_option("--device", options.device, "auto, cpu, cuda or cuda:N");
  app.add_option("--gpu-layers", options.gpu_layers,
                 "the embedding and the first N layers on the GPU, the rest on the CPU (default: all on the device)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--device-map", options.device_map,
                 "JSON file of module name -> device, as transformers' device_map: {\"model.layers.0\": \"cuda:0\", "
                 "..., \"lm_head\": \"cpu\"}");
  app.add_option("--attn", options.attention, "attention implementation: eager, flash or auto (= flash)")
      ->check(CLI::IsMember({"auto", "eager", "flash"}));
  app.add_option("--threads", options.threads, "CPU threads (default: the cores no other process is busy on when the command starts)")->check(CLI::Range(1, 1024));
  app.add_option("--kv-dtype", options.kv_dtype, "KV cache storage: f32, f16 or bf16")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
}

void add_adapter_option(CLI::App& app, ModelOptions& options) {
  app.add_option("--adapter", options.adapter,
                 "PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors) applied at run time; "
                 "the base weights stay as loaded");
}

LoadOptions load_options(const ModelOptions& options) {
  LoadOptions load;
  if (options.dtype != "auto") load.dtype = parse_dtype(options.dtype);
  load.device = options.device;
  load.gpu_layers = options.gpu_layers;
  load.device_map = options.device_map;
  return load;
}

Model load_model(const ModelOptions& options) {
  check_default_model(options.dir);
  set_num_threads(options.threads > 0 ? options.threads : idle_cores());
  Model model = Model::load(options.dir, load_options(options));
  model.set_attention(parse_attention(options.attention));
  return model;
}

int64_t parse_kv_cache_size(const std::string& text, const ModelConfig& config, DType kv_dtype) {
  static const std::pair<const char*, double> kUnits[] = {{"GiB", 1073741824.0}, {"MiB", 1048576.0}, {"KiB", 1024.0},
                                                          {"GB", 1e9},          {"MB", 1e6},         {"KB", 1e3}};
  double scale = 0;
  std::string number = text;
  for (const auto& [unit, bytes] : kUnits) {
    if (text.size() > std::strlen(unit) && text.ends_with(unit)) {
      scale = bytes;
      number = text.substr(0, text.size() - std::strlen(unit));
      break;
    }
  }
  char* end = nullptr;
  const double value = std::strtod(number.c_str(), &end);
  if (number.empty() || end != number.c_str() + number.size() || !(value > 0) || value > 1e15) {
    fail("--kv-cache must be a number of positions (8192) or a size (512MiB, 2GiB), got \"", text, "\"");
  }
  if (scale == 0) return static_cast<int64_t>(value);
  const double per_position = 2.0 * static_cast<double>(config.num_hidden_layers * config.num_key_value_heads *
                                                        config.head_dim) *
                              static_cast<double>(dtype_bytes(kv_dtype, 1));
  const auto positions = static_cast<int64_t>(value * scale / per_position);
  if (positions < 1) fail("--kv-cache ", text, " holds no position of this model (", per_position, " bytes each)");
  return positions;
}

std::shared_ptr<const Adapter> load_adapter_option(const Model& model, const ModelOptions& options) {
  if (options.adapter.empty()) return nullptr;
  return std::make_shared<const Adapter>(load_adapter(model, options.adapter));
}

Tokenizer load_tokenizer(const std::string& dir) {
  check_default_model(dir);
  if (std::filesystem::is_regular_file(dir)) return Tokenizer::from_gguf(dir);
  if (!std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json")) {
    fail(dir, ": no tokenizer.json (expected the Hugging Face tokenizer files beside the model)");
  }
  return Tokenizer::from_dir(dir);
}

RenderChatFn chat_renderer(const std::string& dir, const Tokenizer& tokenizer, const std::string& template_file,
                           const ChatJson& variables) {
  const std::string config = (std::filesystem::path(dir) / "tokenizer_config.json").string();
  std::shared_ptr<const ChatTemplate> chat;
  if (!template_file.empty()) {
    chat = std::make_shared<const ChatTemplate>(read_text_file(template_file), template_file);
  } else if (!tokenizer.chat_template().empty()) {
    chat = std::make_shared<const ChatTemplate>(tokenizer.chat_template(), config + ": chat_template");
  }
  ChatJson context = chat_template_context(tokenizer, ChatJson::array(), false);
  for (auto it = variables.begin(); it != variables.end(); ++it) context[it.key()] = it.value();
  return [chat, context, config](const ChatJson& messages, bool add_generation_prompt) {
    if (!chat) {
      fail(config, ": no chat_template, and conversations need one to be rendered: pass --chat-template FILE "
                   "(a Jinja template, e.g. the chat template of the model this one was trained from)");
    }
    ChatJson with_messages = context;
    with_messages["messages"] = messages;
    with_messages["add_generation_prompt"] = add_generation_prompt;
    return chat->render(with_messages);
  };
}

namespace {

// Sampling settings: explicit options win, then generation_config.json, then
// Hugging Face's default (greedy).
SamplingParams resolve_sampling(const CLI::App& app, const std::filesystem::path& dir, SamplingParams given) {
  // A command without sampling options (slm serve) takes every default.
  auto set = [&](const char* name) {
    const CLI::Option* option = app.get_option_no_throw(name);
    return option != nullptr && option->count() > 0;
  };
  const auto path = dir / "generation_config.json";
  if (!std::filesystem::exists(path)) {
    if (!set("--temperature")) given.temperature = 0;
    return given;
  }
  const GenerationDefaults defaults = GenerationDefaults::from_file(path);
  if (!set("--temperature")) {
    given.temperature = defaults.do_sample.value_or(false) ? defaults.temperature.value_or(1.0) : 0.0;
  }
  if (!set("--top-k") && defaults.top_k) given.top_k = *defaults.top_k;
  if (!set("--top-p") && defaults.top_p) given.top_p = *defaults.top_p;
  if (!set("--min-p") && defaults.min_p) given.min_p = *defaults.min_p;
  if (!set("--repeat-penalty") && defaults.repetition_penalty) {
    given.repetition_penalty = *defaults.repetition_penalty;
  }
  return given;
}

std::vector<int32_t> eos_ids(const Model& model, const std::filesystem::path& dir) {
  std::vector<int32_t> ids = model.config().eos_token_ids;
  const auto path = dir / "generation_config.json";
  if (std::filesystem::exists(path)) {
    for (int32_t id : GenerationDefaults::from_file(path).eos_token_ids) {
      if (id >= model.config().vocab_size) {
        fail(path.string(), ": field \"eos_token_id\" = ", id, " is outside the vocabulary (vocab_size ",
             model.config().vocab_size, ")");
      }
      if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
    }
  }
  return ids;
}

}  // namespace

void add_generation_options(CLI::App& app, GenerationFlags& flags) {
  GenerateOptions& options = flags.options;
  app.add_option("-n,--max-new-tokens", options.max_new_tokens, "tokens to generate")->check(non_negative_number());
  app.add_option("--temperature", options.sampling.temperature, "0 = greedy (default: generation_config.json, else greedy)");
  app.add_option("--top-k", options.sampling.top_k, "keep the K most likely tokens (0 = off)");
  app.add_option("--top-p", options.sampling.top_p, "keep the most likely tokens up to this mass (1 = off)");
  app.add_option("--min-p", options.sampling.min_p, "drop tokens below this fraction of the top probability (0 = off)");
  app.add_option("--repeat-penalty", options.sampling.repetition_penalty, "penalise tokens already present (1 = off)");
  app.add_option("--seed", options.sampling.seed, "random seed; the same seed gives the same sample");
  app.add_option("--stop", options.stop_strings, "stop when this text appears (repeatable; not printed)");
  app.add_flag("--ignore-eos", options.ignore_eos, "keep generating past end-of-sequence tokens");
  app.add_flag("--no-skip-special", flags.print_special, "print special tokens");
}

GenerateOptions resolve_generate_options(const CLI::App& app, const GenerationFlags& flags, const Model& model,
                                         const ModelOptions& model_options) {
  GenerateOptions options = flags.options;
  options.sampling = resolve_sampling(app, model_options.dir, options.sampling);
  options.eos_ids = eos_ids(model, model_options.dir);
  options.skip_special_tokens = !flags.print_special;
  options.kv_dtype = *parse_dtype(model_options.kv_dtype);
  return options;
}

namespace {

std::string gib(double bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return text;
}

}  // namespace

void check_memory(const std::string& what, double bytes) {
  std::ifstream meminfo("/proc/meminfo");
  for (std::string key; meminfo >> key;) {
    if (key == "MemAvailable:") {
      double kib = 0;
      meminfo >> kib;
      if (bytes > kib * 1024) fail(what, " needs about ", gib(bytes), " of memory; this machine has ", gib(kib * 1024), " available");
      return;
    }
    meminfo.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
}

void check_disk(const std::string& what, const std::filesystem::path& path, double bytes) {
  std::filesystem::path existing = std::filesystem::absolute(path);
  std::error_code ec;
  while (!std::filesystem::exists(existing, ec) && existing.has_relative_path()) existing = existing.parent_path();
  const std::filesystem::space_info space = std::filesystem::space(existing, ec);
  if (!ec && bytes > static_cast<double>(space.available)) {
    fail(what, " needs about ", gib(bytes), " of disk; ", existing.string(), " has ",
         gib(static_cast<double>(space.available)), " free");
  }
}

double peak_rss_mib() {
  // VmHWM, which reset_peak_rss() can start over; getrusage where it is absent.
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

void reset_peak_rss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
}

}  // namespace slm::cli
