// slm merge: fold a LoRA adapter into the base weights and write a complete
// Hugging Face folder that slm and transformers both load.
#include "commands.h"
#include "common.h"

#include <slm/error.h>
#include <slm/train.h>

namespace slm::cli {

int run_merge(int argc, char** argv) {
  CLI::App app{"Merge a PEFT LoRA adapter into its base model and write a Hugging Face model folder.", "merge"};
  std::string base, adapter, out, dtype = "auto";
  int threads = 0;
  app.add_option("-m,--model", base, "base model folder")->required();
  app.add_option("--adapter", adapter, "adapter folder (adapter_config.json, adapter_model.safetensors)")->required();
  app.add_option("--out", out, "folder to write")->required();
  app.add_option("--dtype", dtype, "weights written: auto (the base's), f32, f16 or bf16")
      ->check(CLI::IsMember({"auto", "f32", "f16", "bf16"}));
  app.add_option("--threads", threads, "CPU threads (default: all cores)")->check(CLI::Range(1, 1024));
  return run_command(app, argc, argv, [&] {
    if (threads > 0) set_num_threads(threads);
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
