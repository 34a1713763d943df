// slm export: a model folder (with an adapter merged in) as a GGUF file for
// llama.cpp and Ollama, or an adapter as a LoRA GGUF for llama.cpp's --lora.
#include "commands.h"
#include "common.h"

#include <slm/error.h>
#include <slm/export.h>
#include <slm/model.h>

#include <cstdio>

namespace slm::cli {

int run_export(int argc, char** argv) {
  CLI::App app{"Write a model folder as a GGUF file (llama.cpp, Ollama), or a LoRA adapter as a LoRA GGUF.", "export"};
  std::string model = default_model_dir(), adapter, gguf, gguf_lora, type = "auto";
  int threads = 0;
  app.add_option("-m,--model", model, "model folder (the base of --adapter)")->capture_default_str();
  app.add_option("--adapter", adapter,
                 "PEFT LoRA adapter folder: merged into the weights with --gguf, written alone with --gguf-lora");
  auto* full = app.add_option("--gguf", gguf, "GGUF file to write: the model, tokenizer and metadata");
  auto* lora = app.add_option("--gguf-lora", gguf_lora, "LoRA GGUF file to write from --adapter");
  full->excludes(lora);
  app.add_option("--type", type, "weights written: auto (the folder's torch_dtype), f32, f16, bf16, q8_0 or q4_0")
      ->check(CLI::IsMember({"auto", "f32", "f16", "bf16", "q8_0", "q4_0"}));
  app.add_option("--threads", threads, "CPU threads (default: the cores no other process is busy on when the command starts)")
      ->check(CLI::Range(1, 1024));
  return run_command(app, argc, argv, [&] {
    if (gguf.empty() && gguf_lora.empty()) fail("give --gguf OUT.gguf (the model) or --gguf-lora OUT.gguf (an adapter)");
    if (!gguf_lora.empty() && adapter.empty()) fail("--gguf-lora needs --adapter DIR");
    if (!gguf_lora.empty() && type != "auto") fail("--type applies to --gguf; a LoRA GGUF is written in f32");
    if (!std::filesystem::is_directory(model)) fail("-m ", model, ": not a model folder");
    set_num_threads(threads > 0 ? threads : idle_cores());
    GgufExportSummary written;
    const std::string& out = gguf.empty() ? gguf_lora : gguf;
    if (!gguf.empty()) {
      GgufExportOptions options;
      if (type != "auto") options.type = parse_gguf_weight_type(type);
      options.adapter = adapter;
      written = export_gguf(model, gguf, options);
    } else {
      written = export_gguf_lora(model, adapter, gguf_lora);
    }
    std::fprintf(stderr, "wrote %s: %s, %lld tensors in %s, tokenizer %s, %.1f MiB\n", out.c_str(),
                 written.architecture.c_str(), static_cast<long long>(written.tensors), written.type.c_str(),
                 written.tokenizer.c_str(), static_cast<double>(written.bytes) / 1048576.0);
    return 0;
  });
}

}  // namespace slm::cli
