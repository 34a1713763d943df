// slm merge: fold a LoRA adapter into the base weights and write a complete
// Hugging Face folder that slm and transformers both load.
#include "commands.h"
#include "common.h"

#include <nlohmann/json.hpp>

#include <slm/error.h>
#include <slm/train.h>

namespace slm::cli {

namespace {

// The folder an adapter says it was trained on, when that is a model folder
// on this machine; slm's default model otherwise.
std::string adapter_base(const std::string& adapter) {
  const std::filesystem::path config = std::filesystem::path(adapter) / "adapter_config.json";
  const nlohmann::json j = nlohmann::json::parse(read_text_file(config.string()), nullptr, false);
  if (j.is_object() && j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string()) {
    const std::string named = j["base_model_name_or_path"].get<std::string>();
    std::error_code ec;
    if (!named.empty() && std::filesystem::exists(std::filesystem::path(named) / "config.json", ec)) return named;
  }
  return default_model_dir();
}

}  // namespace

int run_merge(int argc, char** argv) {
  CLI::App app{"Merge a PEFT LoRA adapter into its base model and write a Hugging Face model folder.", "merge"};
  std::string base, adapter, out, dtype = "auto";
  int threads = 0;
  app.add_option("-m,--model", base,
                 "base model folder (default: the adapter's base_model_name_or_path when it is a folder here, else "
                 "slm's default model)");
  app.add_option("--adapter", adapter, "adapter folder (adapter_config.json, adapter_model.safetensors)")->required();
  app.add_option("--out", out, "folder to write")->required();
  app.add_option("--dtype", dtype, "weights written: auto (the base's), f32, f16 or bf16")
      ->check(CLI::IsMember({"auto", "f32", "f16", "bf16"}));
  app.add_option("--threads", threads, "CPU threads (default: the cores no other process is busy on when the command starts)")->check(CLI::Range(1, 1024));
  return run_command(app, argc, argv, [&] {
    set_num_threads(threads > 0 ? threads : idle_cores());
    if (base.empty()) base = adapter_base(adapter);
    if (std::filesystem::exists(out) && std::filesystem::equivalent(out, base)) {
      fail("--out ", out, " is the base model's folder; write the merged model elsewhere");
    }
    const Model model = Model::load(base);
    const DType written = dtype == "auto" ? model.config().torch_dtype : *parse_dtype(dtype);
    // Merge in f32, round once when writing.
    const Model merged = merge_adapter(model, adapter, DType::F32);
    save_model_folder(merged, out, written, base);
    std::fprintf(stderr, "wrote %s: %s merged into %s, %s\n", out.c_str(), adapter.c_str(), base.c_str(),
                 std::string(dtype_name(written)).c_str());
    return 0;
  });
}

}  // namespace slm::cli
