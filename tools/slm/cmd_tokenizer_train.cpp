// slm tokenizer-train: learn a byte-level BPE tokenizer from text files.
#include "commands.h"
#include "common.h"

#include <chrono>
#include <cstdio>

namespace slm::cli {

int run_tokenizer_train(int argc, char** argv) {
  CLI::App app{"Train a byte-level BPE tokenizer (tokenizer.json that Hugging Face tokenizers loads) on text files.",
               "tokenizer-train"};
  TokenizerTrainOptions options;
  std::vector<std::string> files;
  std::string out;
  app.add_option("files", files, "text files to learn from")->required()->check(CLI::ExistingFile);
  app.add_option("--out", out, "output folder for tokenizer.json and tokenizer_config.json")->required();
  app.add_option("--vocab-size", options.vocab_size, "vocabulary size, special tokens and 256 byte symbols included")
      ->capture_default_str();
  app.add_option("--special-tokens", options.special_tokens,
                 "special tokens, given the first ids; the first is also BOS and EOS")
      ->capture_default_str()
      ->delimiter(',');
  app.add_option("--min-frequency", options.min_frequency, "never merge a pair seen fewer times")->capture_default_str();
  app.add_option("--model-max-length", options.model_max_length, "model_max_length in tokenizer_config.json")
      ->capture_default_str();
  return run_command(app, argc, argv, [&] {
    const auto start = std::chrono::steady_clock::now();
    const std::vector<std::filesystem::path> paths(files.begin(), files.end());
    const TokenizerTrainStats stats = train_bpe_tokenizer(paths, options, out);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("trained on %.1f MB (%lld words, %lld distinct) in %.1f s: %d tokens, %lld merges -> %s\n",
                static_cast<double>(stats.bytes) / 1e6, static_cast<long long>(stats.words),
                static_cast<long long>(stats.distinct_words), seconds, stats.vocab_size,
                static_cast<long long>(stats.merges), out.c_str());
    return 0;
  });
}

}  // namespace slm::cli
