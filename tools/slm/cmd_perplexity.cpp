// slm perplexity: how well a model predicts a text.
#include "commands.h"
#include "common.h"

#include <slm/error.h>
#include <slm/generate.h>

#include <nlohmann/json.hpp>

#include <iostream>

namespace slm::cli {

int run_perplexity(int argc, char** argv) {
  CLI::App app{"Score a text file with a model: token count, mean negative log-likelihood, perplexity.", "perplexity"};
  ModelOptions model_options;
  add_model_options(app, model_options);
  add_adapter_option(app, model_options);
  std::string file, output_format = "text";
  int64_t context = 0;
  app.add_option("-f,--file", file, "text file ('-' for stdin)")->required();
  app.add_option("--ctx", context, "window length in tokens (default: the model's context)");
  app.add_option("--output-format", output_format, "text or json")->check(CLI::IsMember({"text", "json"}));
  return run_command(app, argc, argv, [&] {
    const std::string text = read_text_file(file);
    Model model = load_model(model_options);
    const Tokenizer tokenizer = load_tokenizer(model_options.dir);
    const std::vector<int32_t> ids = tokenizer.encode(text, true);
    const auto adapter = load_adapter_option(model, model_options);
    int64_t window = model.config().max_position_embeddings;
    if (app.count("--ctx") > 0) {
      if (context < 2) fail("--ctx must be at least 2 tokens, got ", context);
      if (context > window) {
        std::fprintf(stderr, "slm perplexity: --ctx %lld is past the model's context; scoring windows of %lld\n",
                     static_cast<long long>(context), static_cast<long long>(window));
      } else {
        window = context;
      }
    }
    const PerplexityResult r = perplexity(model, ids, window, adapter.get());
    if (output_format == "json") {
      std::cout << nlohmann::json{{"tokens", r.tokens}, {"mean_nll", r.mean_nll}, {"perplexity", r.perplexity}}.dump()
                << "\n";
    } else {
      std::printf("tokens      %lld\nmean NLL    %.6f nats\nperplexity  %.4f\n", static_cast<long long>(r.tokens),
                  r.mean_nll, r.perplexity);
    }
    return 0;
  });
}

}  // namespace slm::cli
