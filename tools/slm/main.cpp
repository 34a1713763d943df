// slm: small language models — tokenize, run and fine-tune Hugging Face
// Llama-family checkpoints from one native binary.
#include "commands.h"

#include <cstdio>
#include <cstring>
#include <string_view>

namespace {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(int, char**);
};

constexpr Command kCommands[] = {
    {"generate", "continue a prompt with a model", slm::cli::run_generate},
    {"chat", "chat with a model in the terminal", slm::cli::run_chat},
    {"serve", "serve a model over an OpenAI-compatible HTTP API, with a web chat", slm::cli::run_serve},
    {"info", "describe a model folder", slm::cli::run_info},
    {"perplexity", "score a text file with a model", slm::cli::run_perplexity},
    {"create", "write a randomly initialised model folder", slm::cli::run_create},
    {"bench", "measure prefill and decode speed", slm::cli::run_bench},
    {"finetune", "train LoRA adapters (or every weight) on a JSON-lines dataset", slm::cli::run_finetune},
    {"merge", "merge a LoRA adapter into its base model", slm::cli::run_merge},
    {"export", "write a model (or a LoRA adapter) as a GGUF file for llama.cpp", slm::cli::run_export},
    {"tokenize", "text to token ids", slm::cli::run_tokenize},
    {"detokenize", "token ids to text", slm::cli::run_detokenize},
    {"chat-template", "render a conversation with a model's chat template", slm::cli::run_chat_template},
    {"tokenizer-train", "train a byte-level BPE tokenizer on text files", slm::cli::run_tokenizer_train},
};

void print_usage(std::FILE* out) {
  std::fprintf(out, "usage: slm COMMAND [OPTIONS]\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-15s %s\n", c.name, c.summary);
  std::fprintf(out, "\nRun 'slm COMMAND --help' for the options of a command.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  const std::string_view name = argv[1];
  if (name == "-h" || name == "--help" || name == "help") {
    print_usage(stdout);
    return 0;
  }
  if (name == "--version") {
    std::printf("slm 0.1.0\n");
    return 0;
  }
  for (const Command& c : kCommands) {
    if (name == c.name) return c.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "slm: error: unknown command '%s'\n\n", argv[1]);
  print_usage(stderr);
  return 2;
}
