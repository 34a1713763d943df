// slm finetune: train LoRA adapters on a JSON-lines dataset and save them in
// the PEFT layout, or (--full) train every weight and save a model folder.
#include "commands.h"
#include "common.h"

#include <slm/adapter.h>
#include <slm/error.h>
#include <slm/train.h>
#include <slm/training.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include <unistd.h>

namespace slm::cli {

namespace {

struct Batches {
  std::vector<TrainExample> examples;
  DatasetSummary summary;
};

Batches read_dataset(const std::string& path, const Tokenizer& tokenizer, const RenderChatFn& render_chat, int64_t seq_len) {
  Batches data;
  const TokenizeFn tokenize = [&](std::string_view text, bool special) { return tokenizer.encode(text, special); };
  data.examples = read_jsonl_dataset(path, tokenize, seq_len, tokenizer.eos_id(), &data.summary, render_chat);
  if (data.summary.unrendered_messages > 0) {
    std::fprintf(stderr,
                 "warning: %lld message(s) do not appear in what the chat template renders, the first %s: the "
                 "template may not know that role, and the model would never see them\n",
                 static_cast<long long>(data.summary.unrendered_messages), data.summary.first_unrendered.c_str());
  }
  return data;
}

std::string format_duration(double seconds) {
  const auto s = static_cast<long long>(std::max(0.0, seconds));
  char text[32];
  if (s >= 3600) {
    std::snprintf(text, sizeof text, "%lldh%02lldm", s / 3600, s / 60 % 60);
  } else {
    std::snprintf(text, sizeof text, "%lldm%02llds", s / 60, s % 60);
  }
  return text;
}

// The number of the signal that asked the run to stop; 0 while none has.
volatile std::sig_atomic_t stop_signal = 0;
void on_stop_signal(int signal_number) { stop_signal = signal_number; }

// Ctrl-C and a plain kill (SIGTERM, as from a job scheduler) both end the run
// with a checkpoint after the current step. SA_RESETHAND: a second one ends
// the process at once (the checkpoint folder is replaced in one rename, so
// the last whole checkpoint survives it).
void install_stop_handlers() {
  stop_signal = 0;
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESETHAND;
  for (const int signal_number : {SIGINT, SIGTERM}) ::sigaction(signal_number, &action, nullptr);
}

// Shortest text that reads back as the same double.
std::string number_text(double value) {
  char text[32];
  const auto result = std::to_chars(text, text + sizeof text, value);
  return {text, result.ptr};
}

// Before any work: --out must be a folder this run can write, and one that
// holds nothing yet unless the run resumes there or --overwrite says so.
void check_out_folder(const std::string& out, const std::string& resume, bool overwrite) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::status(out, ec);
  if (fs::exists(status)) {
    if (!fs::is_directory(status)) fail("--out ", out, " is a file; expected a folder to write into");
    const bool resuming_here = !resume.empty() && fs::equivalent(out, resume, ec);
    if (!resuming_here && !overwrite && !fs::is_empty(out, ec)) {
      fail("--out ", out, " already holds files; pass --overwrite to write into it, or --resume ", out,
           " to continue the run saved there");
    }
    return;
  }
  // The nearest folder that exists must be one (afile/sub cannot be made),
  // and the folder must be makeable there: made now, and removed again so a
  // run that fails later leaves nothing behind.
  fs::path parent = fs::absolute(out).lexically_normal();
  fs::path first_missing = parent;
  while (parent.has_relative_path() && !fs::exists(parent, ec)) {
    first_missing = parent;
    parent = parent.parent_path();
  }
  if (!fs::is_directory(parent, ec)) fail("--out ", out, ": ", parent.string(), " is not a folder");
  fs::create_directories(out, ec);
  if (ec) fail("--out ", out, ": cannot create the folder: ", ec.message());
  fs::remove_all(first_missing, ec);
}

// Memory a run needs beyond the base weights, roughly, checked before any
// of it is allocated: each trained value with its gradient and AdamW's two
// moments (16 bytes), and the activations backward keeps for a batch. A LoRA
// rank past the smaller side of a module it adapts is refused outright.
void check_run_fits(const ModelConfig& c, const LoraOptions& lora, bool full, int64_t batch, int64_t seq_len) {
  double trained = 0;
  if (full) {
    trained = static_cast<double>(c.parameter_count());
  } else {
    for (LoraModule m : parse_lora_targets(lora.targets, c.fused_projections)) {
      const auto [in, out] = lora_dims(c, m);
      if (lora.rank > std::min(in, out)) {
        fail("--lora-r ", lora.rank, " is larger than ", kLoraModuleNames[static_cast<size_t>(m)], " (", in, " -> ", out,
             "), a layer it adapts: a rank is at most the smaller of the two");
      }
      trained += static_cast<double>(lora.rank * (in + out) * c.num_hidden_layers);
    }
  }
  const double tokens = static_cast<double>(batch * seq_len);
  const double per_token_layer = 12.0 * static_cast<double>(c.hidden_size) + 4.0 * static_cast<double>(c.intermediate_size);
  const double activations = 4.0 * tokens * (per_token_layer * static_cast<double>(c.num_hidden_layers) +
                                              2.0 * static_cast<double>(c.vocab_size));
  check_memory(full ? "training every weight" : "--lora-r " + std::to_string(lora.rank), 16.0 * trained + activations);
}

}  // namespace

int run_finetune(int argc, char** argv) {
  CLI::App app{"Train LoRA adapters on your own examples (the adapter folder uses the PEFT layout), or with --full "
               "every weight of the model (a Hugging Face model folder).",
               "finetune"};
  ModelOptions model_options;
  add_model_options(app, model_options);
  std::string data, eval_data, out, resume, schedule = "cosine";
  LoraOptions lora;
  lora.targets = {"all-linear"};  // every linear layer of the family (Phi-3: its fused four)
  OptimizerOptions opt;
  TrainingOptions loop;
  int64_t seq_len = 512;
  std::string save_dtype = "auto", chat_template;
  bool pack = false, full = false, checkpointing = false, overwrite = false;
  app.add_option("--data", data,
                 "training examples, JSON lines: {\"text\"}, {\"prompt\",\"completion\"} or {\"messages\": [...]} "
                 "(loss on the assistant turns)")
      ->required();
  app.add_option("--chat-template", chat_template,
                 "Jinja file to render {\"messages\"} data with, instead of the model's tokenizer_config.json chat_template")
      ->check(CLI::ExistingFile);
  app.add_option("--eval-data", eval_data, "evaluation examples (same format)");
  app.add_option("--out", out,
                 "folder to write: the adapter (adapter_config.json, adapter_model.safetensors), or with --full the "
                 "model (config.json, model.safetensors, tokenizer files)")
      ->required();
  app.add_flag("--overwrite", overwrite, "write into an --out folder that already holds files");
  CLI::Option* full_flag = app.add_flag(
      "--full", full, "train every weight (embeddings, linear layers, norms, lm_head) instead of LoRA adapters");
  app.add_option("--save-dtype", save_dtype, "with --full: weights written: auto (the base's), f32, f16 or bf16")
      ->check(CLI::IsMember({"auto", "f32", "f16", "bf16"}))
      ->needs(full_flag);
  app.add_flag("--grad-checkpointing", checkpointing,
               "keep only each layer's input and recompute the layer in backward: less memory, one more forward");
  app.add_option("--lora-r", lora.rank, "adapter rank")->check(positive_number())->excludes(full_flag);
  app.add_option("--lora-alpha", lora.alpha, "scale numerator: the update is alpha/r · B·A")
      ->check(positive_number())
      ->excludes(full_flag);
  app.add_option("--lora-dropout", lora.dropout, "dropout on the adapter input")
      ->check(CLI::Range(0.0, 0.99))
      ->excludes(full_flag);
  app.add_option("--lora-targets", lora.targets, "PEFT module names, comma-separated, or all-linear")
      ->delimiter(',')
      ->excludes(full_flag);
  app.add_option("--epochs", loop.epochs, "passes over the data")->check(positive_number());
  app.add_option("--max-steps", loop.max_steps, "optimizer steps (overrides --epochs)")->check(positive_number());
  app.add_option("--lr", opt.lr, "peak learning rate")->check(positive_number());
  app.add_option("--lr-schedule", schedule, "cosine, linear or constant")
      ->check(CLI::IsMember({"cosine", "linear", "constant"}));
  app.add_option("--warmup-steps", opt.warmup_steps, "linear warmup from 0")->check(non_negative_number());
  app.add_option("--batch-size", loop.batch_size, "examples per micro-batch")->check(positive_number());
  app.add_option("--grad-accum", loop.grad_accum, "micro-batches per optimizer step")->check(positive_number());
  app.add_option("--seq-len", seq_len,
                 "longest example in tokens (longer ones are truncated); past the model's context is refused, and "
                 "512 is capped to it")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
  app.add_option("--weight-decay", opt.weight_decay, "AdamW decoupled weight decay")->check(non_negative_number());
  app.add_option("--max-grad-norm", opt.max_grad_norm, "clip the global gradient norm (0: off)")
      ->check(non_negative_number());
  app.add_option("--seed", loop.seed, "adapter initialisation, data order and dropout");
  app.add_option("--eval-every", loop.eval_every, "evaluate every N steps (0: only at the end)")
      ->check(non_negative_number());
  app.add_option("--save-every", loop.save_every, "save the adapter every N steps (0: only at the end)")
      ->check(non_negative_number());
  app.add_flag("--pack", pack, "several short examples per sequence (up to --seq-len tokens)");
  CLI::Option* resume_option = app.add_option(
      "--resume", resume,
      "continue the run whose --out this is, from its checkpoint/ folder, with the same options");
  app.add_flag("--resume-override", loop.resume_override,
               "resume even though the checkpoint was made with other settings (learning rate, schedule, seed, "
               "data, ...), which are then this run's")
      ->needs(resume_option);

  return run_command(app, argc, argv, [&] {
    if (full && std::filesystem::exists(out) && std::filesystem::exists(model_options.dir) &&
        std::filesystem::equivalent(out, model_options.dir)) {
      fail("--out ", out, " is the base model's folder; write the trained model elsewhere");
    }
    check_out_folder(out, resume, overwrite);
    const auto started = std::chrono::steady_clock::now();
    // From the start, so a Ctrl-C while loading still ends with a checkpoint after one step.
    install_stop_handlers();
    Model model = load_model(model_options);
    const int64_t context = model.config().max_position_embeddings;
    if (seq_len > context) {
      if (app.count("--seq-len") > 0) {
        fail("--seq-len ", seq_len, " is past the model's context of ", context,
             " positions (max_position_embeddings): it would train positions the model never had");
      }
      seq_len = context;
    }
    const Tokenizer tokenizer = load_tokenizer(model_options.dir);
    const RenderChatFn render_chat = chat_renderer(model_options.dir, tokenizer, chat_template);
    Batches train = read_dataset(data, tokenizer, render_chat, seq_len);
    if (pack) {
      const size_t before = train.examples.size();
      train.examples = pack_examples(train.examples, seq_len);
      std::fprintf(stderr, "packed %zu examples into %zu sequences of at most %lld tokens\n", before,
                   train.examples.size(), static_cast<long long>(seq_len));
    }
    std::optional<Batches> eval;
    if (!eval_data.empty()) eval = read_dataset(eval_data, tokenizer, render_chat, seq_len);
    loop.pad_id = tokenizer.pad_id().value_or(tokenizer.eos_id().value_or(0));
    loop.out = out;
    loop.resume = resume;
    // The adapter's base_model_name_or_path: the folder given, or for slm's
    // default model its name (its path is this machine's business).
    const char* env_model = std::getenv("SLM_MODEL");
    const bool default_model = app.count("--model") == 0 && (env_model == nullptr || *env_model == '\0');
    loop.base_model = default_model ? "slm-tiny" : model_options.dir;

    check_run_fits(model.config(), lora, full, loop.batch_size, seq_len);
    opt.schedule = parse_lr_schedule(schedule);
    opt.total_steps = total_training_steps(loop, train.examples.size());
    lora.seed = loop.seed;
    Trainer trainer = full ? Trainer::full(model, opt,
                                           save_dtype == "auto" ? model.config().torch_dtype : *parse_dtype(save_dtype))
                           : Trainer(model, lora, opt);
    trainer.set_gradient_checkpointing(checkpointing);
    const double share = 100.0 * static_cast<double>(trainer.trainable_parameters()) /
                         static_cast<double>(model.config().parameter_count());
    std::fprintf(stderr, "%lld examples (%lld tokens, %lld in the loss, %lld truncated to %lld); %lld steps; "
                 "%lld trainable parameters (%.3f%% of the model)\n",
                 static_cast<long long>(train.summary.examples), static_cast<long long>(train.summary.tokens),
                 static_cast<long long>(train.summary.loss_tokens), static_cast<long long>(train.summary.truncated),
                 static_cast<long long>(seq_len), static_cast<long long>(opt.total_steps),
                 static_cast<long long>(trainer.trainable_parameters()), share);

    // What else decides the arithmetic (the loop adds --seed, --batch-size,
    // --grad-accum and the examples themselves). The schedule's length only
    // matters where the schedule decays.
    loop.settings = {{"-m", std::filesystem::absolute(model_options.dir).lexically_normal().string()},
                     {"--dtype", model_options.dtype},
                     {"--full", full ? "yes" : "no"},
                     {"--lr", number_text(opt.lr)},
                     {"--lr-schedule", opt.schedule == LrSchedule::Constant
                                           ? schedule
                                           : schedule + " over " + std::to_string(opt.total_steps) + " steps"},
                     {"--warmup-steps", std::to_string(opt.warmup_steps)},
                     {"--weight-decay", number_text(opt.weight_decay)},
                     {"--max-grad-norm", number_text(opt.max_grad_norm)},
                     {"--seq-len", std::to_string(seq_len)},
                     {"--pack", pack ? "yes" : "no"}};
    if (!full) {
      std::string targets;
      for (const std::string& t : trainer.target_modules()) targets += (targets.empty() ? "" : ",") + t;
      loop.settings.insert(loop.settings.end(), {{"--lora-r", std::to_string(lora.rank)},
                                                 {"--lora-alpha", number_text(lora.alpha)},
                                                 {"--lora-dropout", number_text(lora.dropout)},
                                                 {"--lora-targets", targets}});
    }

    TrainingCallbacks callbacks;
    callbacks.on_resume = [&](const ResumeInfo& info) {
      std::fprintf(stderr, "resuming %s at step %lld\n", resume.c_str(), static_cast<long long>(info.step));
      for (const std::string& change : info.overridden) std::fprintf(stderr, "--resume-override: %s\n", change.c_str());
    };
    // On a terminal the progress is one line rewritten in place; in a log,
    // a line per step. Anything else printed first ends the pending line.
    const bool terminal = isatty(STDERR_FILENO) != 0;
    bool line_pending = false;
    const auto end_line = [&] {
      if (line_pending) std::fputc('\n', stderr);
      line_pending = false;
    };
    double last_loss = 0, best_loss = INFINITY, last_eval = NAN;
    int64_t best_step = 0;
    callbacks.on_progress = [&](const ProgressInfo& p) {
      last_loss = p.loss;
      if (p.loss < best_loss) {
        best_loss = p.loss;
        best_step = p.step;
      }
      std::fprintf(stderr, "%sstep %lld/%lld  epoch %lld  loss %.4f  lr %.3g  %.1f tok/s  %s left%s",
                   terminal ? "\r" : "", static_cast<long long>(p.step), static_cast<long long>(p.total_steps),
                   static_cast<long long>(p.epoch), p.loss, p.lr, p.tokens_per_s,
                   format_duration(p.seconds_left).c_str(), terminal ? "\033[K" : "\n");
      line_pending = terminal;
    };
    callbacks.on_eval = [&](const EvalInfo& e) {
      end_line();
      last_eval = e.loss;
      std::fprintf(stderr, "step %lld: eval loss %.4f, perplexity %.3f\n", static_cast<long long>(e.step), e.loss,
                   std::exp(e.loss));
    };
    callbacks.should_stop = [] { return stop_signal != 0; };
    const TrainingSummary summary =
        slm::train(trainer, train.examples, eval ? &eval->examples : nullptr, loop, callbacks);
    end_line();
    if (summary.stopped) {
      std::fprintf(stderr, "interrupted: checkpoint of step %lld saved in %s (continue with --resume %s)\n",
                   static_cast<long long>(summary.steps), out.c_str(), out.c_str());
      return 128 + static_cast<int>(stop_signal);
    }
    const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::fprintf(stderr, "saved %s after %lld steps in %s\n", out.c_str(), static_cast<long long>(summary.steps),
                 format_duration(total).c_str());
    if (std::isfinite(best_loss)) {
      std::fprintf(stderr, "  training loss %.4f at the end, best %.4f (step %lld)\n", last_loss, best_loss,
                   static_cast<long long>(best_step));
    }
    if (!std::isnan(last_eval)) {
      std::fprintf(stderr, "  eval loss %.4f at the end, best %.4f\n", last_eval, summary.best_eval_loss.value_or(last_eval));
    }
    std::fprintf(stderr, "  %lld training tokens per epoch; files: %s, metrics.jsonl, loss.svg\n",
                 static_cast<long long>(train.summary.tokens),
                 full ? "config.json, model.safetensors, tokenizer files" : "adapter_config.json, adapter_model.safetensors");
    return 0;
  });
}

}  // namespace slm::cli
