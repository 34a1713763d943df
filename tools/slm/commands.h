// The subcommands of the `slm` program, one file each. Every run_* function
// receives argv with argv[0] = the subcommand name, and returns the exit code.
#pragma once

namespace slm::cli {

int run_generate(int argc, char** argv);
int run_chat(int argc, char** argv);
int run_info(int argc, char** argv);
int run_perplexity(int argc, char** argv);
int run_create(int argc, char** argv);
int run_bench(int argc, char** argv);
int run_finetune(int argc, char** argv);
int run_merge(int argc, char** argv);
int run_export(int argc, char** argv);
int run_tokenize(int argc, char** argv);
int run_tokenizer_train(int argc, char** argv);
int run_detokenize(int argc, char** argv);
int run_chat_template(int argc, char** argv);
int run_serve(int argc, char** argv);

}  // namespace slm::cli
