// slm finetune: train LoRA adapters on a JSON-lines dataset and save them in
// the PEFT layout, or (--full) train every weight and save a model folder.
#include "commands.h"
#include "common.h"

#include <slm/error.h>
#include <slm/train.h>

#include "core/atomic_file.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>

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
  return data;
}

// Mean loss per counted token over a whole dataset, without gradients.
double evaluate(Trainer& trainer, const std::vector<TrainExample>& examples, int64_t batch_size, int32_t pad) {
  double total = 0.0;
  int64_t counted = 0;
  for (size_t start = 0; start < examples.size(); start += static_cast<size_t>(batch_size)) {
    std::vector<size_t> indices;
    for (size_t i = start; i < std::min(examples.size(), start + static_cast<size_t>(batch_size)); ++i) {
      indices.push_back(i);
    }
    const TrainBatch batch = make_batch(examples, indices, pad);
    total += trainer.evaluate(batch);
    counted += batch.counted_tokens();
  }
  return total / static_cast<double>(std::max<int64_t>(1, counted));
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

volatile std::sig_atomic_t interrupted = 0;
void on_interrupt(int) { interrupted = 1; }

// Where in the data a checkpoint stopped, beside the trainer's own state.
void save_data_state(const std::filesystem::path& dir, int64_t epoch, int64_t cursor) {
  write_text_atomically(dir / "data_state.json", nlohmann::json{{"epoch", epoch}, {"cursor", cursor}}.dump() + "\n");
}

// loss.svg: the training loss per step (and eval points), a plain polyline
// any browser shows.
std::string loss_svg(const std::vector<double>& losses, const std::vector<std::pair<int64_t, double>>& evals) {
  constexpr double kWidth = 640, kHeight = 360, kMargin = 48;
  double low = std::numeric_limits<double>::infinity(), high = -low;
  for (double l : losses) low = std::min(low, l), high = std::max(high, l);
  for (const auto& [step, l] : evals) low = std::min(low, l), high = std::max(high, l);
  if (!(high > low)) high = low + 1.0;
  const double steps = static_cast<double>(std::max<size_t>(2, losses.size()));
  auto x = [&](double step) { return kMargin + (step - 1) / (steps - 1) * (kWidth - 2 * kMargin); };
  auto y = [&](double loss) { return kHeight - kMargin - (loss - low) / (high - low) * (kHeight - 2 * kMargin); };
  std::string svg;
  char buffer[160];
  std::snprintf(buffer, sizeof buffer,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" "
                "font-size=\"12\">\n",
                kWidth, kHeight);
  svg += buffer;
  svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<polyline fill=\"none\" stroke=\"#1f77b4\" points=\"";
  for (size_t i = 0; i < losses.size(); ++i) {
    std::snprintf(buffer, sizeof buffer, "%.1f,%.1f ", x(static_cast<double>(i + 1)), y(losses[i]));
    svg += buffer;
  }
  svg += "\"/>\n";
  for (const auto& [step, l] : evals) {
    std::snprintf(buffer, sizeof buffer, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"#d62728\"/>\n",
                  x(static_cast<double>(step)), y(l));
    svg += buffer;
  }
  std::snprintf(buffer, sizeof buffer,
                "<text x=\"%.0f\" y=\"20\">loss (blue: train, red: eval) from %.4g to %.4g over %zu steps</text>\n",
                kMargin, high, low, losses.size());
  svg += buffer;
  return svg + "</svg>\n";
}

}  // namespace

int run_finetune(int argc, char** argv) {
  CLI::App app{"Train LoRA adapters on your own examples (the adapter folder uses the PEFT layout), or with --full "
               "every weight of the model (a Hugging Face model folder).",
               "finetune"};
  ModelOptions model_options;
  add_model_options(app, model_options);
  std::string data, eval_data, out, schedule = "cosine";
  LoraOptions lora;
  lora.targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  OptimizerOptions opt;
  int64_t epochs = 1, max_steps = 0, batch_size = 4, grad_accum = 1, seq_len = 512, eval_every = 0, save_every = 0;
  uint64_t seed = 0;
  std::string resume, save_dtype = "auto", chat_template;
  bool pack = false, full = false, checkpointing = false;
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
  CLI::Option* full_flag = app.add_flag(
      "--full", full, "train every weight (embeddings, linear layers, norms, lm_head) instead of LoRA adapters");
  app.add_option("--save-dtype", save_dtype, "with --full: weights written: auto (the base's), f32, f16 or bf16")
      ->check(CLI::IsMember({"auto", "f32", "f16", "bf16"}))
      ->needs(full_flag);
  app.add_flag("--grad-checkpointing", checkpointing,
               "keep only each layer's input and recompute the layer in backward: less memory, one more forward");
  app.add_option("--lora-r", lora.rank, "adapter rank")->check(CLI::PositiveNumber)->excludes(full_flag);
  app.add_option("--lora-alpha", lora.alpha, "scale numerator: the update is alpha/r · B·A")
      ->check(CLI::PositiveNumber)
      ->excludes(full_flag);
  app.add_option("--lora-dropout", lora.dropout, "dropout on the adapter input")
      ->check(CLI::Range(0.0, 0.99))
      ->excludes(full_flag);
  app.add_option("--lora-targets", lora.targets, "PEFT module names, comma-separated, or all-linear")
      ->delimiter(',')
      ->excludes(full_flag);
  app.add_option("--epochs", epochs, "passes over the data")->check(CLI::PositiveNumber);
  app.add_option("--max-steps", max_steps, "optimizer steps (overrides --epochs)")->check(CLI::PositiveNumber);
  app.add_option("--lr", opt.lr, "peak learning rate")->check(CLI::PositiveNumber);
  app.add_option("--lr-schedule", schedule, "cosine, linear or constant")
      ->check(CLI::IsMember({"cosine", "linear", "constant"}));
  app.add_option("--warmup-steps", opt.warmup_steps, "linear warmup from 0")->check(CLI::NonNegativeNumber);
  app.add_option("--batch-size", batch_size, "examples per micro-batch")->check(CLI::PositiveNumber);
  app.add_option("--grad-accum", grad_accum, "micro-batches per optimizer step")->check(CLI::PositiveNumber);
  app.add_option("--seq-len", seq_len, "longest example in tokens (longer ones are truncated)")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
  app.add_option("--weight-decay", opt.weight_decay, "AdamW decoupled weight decay")->check(CLI::NonNegativeNumber);
  app.add_option("--max-grad-norm", opt.max_grad_norm, "clip the global gradient norm (0: off)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--seed", seed, "adapter initialisation, data order and dropout");
  app.add_option("--eval-every", eval_every, "evaluate every N steps (0: only at the end)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--save-every", save_every, "save the adapter every N steps (0: only at the end)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--pack", pack, "several short examples per sequence (up to --seq-len tokens)");
  app.add_option("--resume", resume,
                 "continue from a checkpoint folder (an --out of an earlier run with the same options)");

  return run_command(app, argc, argv, [&] {
    if (full && std::filesystem::exists(out) && std::filesystem::exists(model_options.dir) &&
        std::filesystem::equivalent(out, model_options.dir)) {
      fail("--out ", out, " is the base model's folder; write the trained model elsewhere");
    }
    const auto started = std::chrono::steady_clock::now();
    // From the start, so a Ctrl-C while loading still ends with a checkpoint after one step.
    interrupted = 0;
    std::signal(SIGINT, on_interrupt);
    Model model = load_model(model_options);
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
    const int32_t pad = tokenizer.pad_id().value_or(tokenizer.eos_id().value_or(0));

    const int64_t batches_per_epoch = (static_cast<int64_t>(train.examples.size()) + batch_size - 1) / batch_size;
    const int64_t steps_per_epoch = std::max<int64_t>(1, batches_per_epoch / grad_accum);
    opt.schedule = parse_lr_schedule(schedule);
    opt.total_steps = max_steps > 0 ? max_steps : epochs * steps_per_epoch;
    lora.seed = seed;
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

    int64_t epoch = 0, cursor = 0, first_step = 0;
    if (!resume.empty()) {
      trainer.load_checkpoint(resume);
      const auto state_path = std::filesystem::path(resume) / "data_state.json";
      try {
        const nlohmann::json j = nlohmann::json::parse(read_text_file(state_path.string()));
        epoch = j.at("epoch").get<int64_t>();
        cursor = j.at("cursor").get<int64_t>();
      } catch (const nlohmann::json::exception& e) {
        fail(state_path.string(), ": expected {\"epoch\", \"cursor\"} (", e.what(), ")");
      }
      first_step = trainer.steps_done();
      std::fprintf(stderr, "resuming %s at step %lld\n", resume.c_str(), static_cast<long long>(first_step));
    }
    std::filesystem::create_directories(out);
    std::ofstream metrics(std::filesystem::path(out) / "metrics.jsonl",
                          resume.empty() ? std::ios::trunc : std::ios::app);
    if (!metrics) fail(out, ": cannot write metrics.jsonl");
    double best_eval = std::numeric_limits<double>::infinity();
    std::vector<double> losses;
    std::vector<std::pair<int64_t, double>> evals;
    auto run_eval = [&](int64_t step) {
      if (!eval) return;
      const double loss = evaluate(trainer, eval->examples, batch_size, pad);
      best_eval = std::min(best_eval, loss);
      evals.emplace_back(step, loss);
      std::fprintf(stderr, "step %lld: eval loss %.4f, perplexity %.3f\n", static_cast<long long>(step), loss,
                   std::exp(loss));
      metrics << nlohmann::json{{"step", step}, {"eval_loss", loss}, {"eval_perplexity", std::exp(loss)}}.dump()
              << std::endl;
    };

    const auto loop_started = std::chrono::steady_clock::now();
    int64_t tokens_seen = 0;
    std::vector<size_t> order = epoch_order(train.examples.size(), seed, epoch);
    auto save = [&] {
      trainer.save_checkpoint(out, model_options.dir);
      save_data_state(out, epoch, cursor);
    };
    for (int64_t step = first_step; step < opt.total_steps; ++step) {
      std::vector<TrainBatch> micro;
      int64_t counted = 0;
      for (int64_t m = 0; m < grad_accum; ++m) {
        if (cursor >= static_cast<int64_t>(order.size())) {
          order = epoch_order(train.examples.size(), seed, ++epoch);
          cursor = 0;
        }
        const auto end = std::min<int64_t>(static_cast<int64_t>(order.size()), cursor + batch_size);
        micro.push_back(make_batch(train.examples, {order.begin() + cursor, order.begin() + end}, pad));
        cursor = end;
        counted += micro.back().counted_tokens();
        tokens_seen += micro.back().batch * micro.back().seq;
      }
      double loss = 0.0;
      for (const TrainBatch& batch : micro) {
        loss += trainer.accumulate_gradients(batch, 1.0 / static_cast<double>(std::max<int64_t>(1, counted)));
      }
      loss /= static_cast<double>(std::max<int64_t>(1, counted));
      if (!std::isfinite(loss)) {
        fail("the loss became ", loss, " at step ", step + 1, "; stopped without saving (", out,
             " keeps the last --save-every checkpoint, if any)");
      }
      const StepStats stats = trainer.step();
      losses.push_back(loss);
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - loop_started).count();
      const double tokens_per_s = static_cast<double>(tokens_seen) / std::max(elapsed, 1e-9);
      const double left = elapsed / static_cast<double>(step + 1 - first_step) *
                          static_cast<double>(opt.total_steps - step - 1);
      std::fprintf(stderr, "step %lld/%lld  epoch %lld  loss %.4f  lr %.3g  %.1f tok/s  %s left\n",
                   static_cast<long long>(step + 1), static_cast<long long>(opt.total_steps),
                   static_cast<long long>(epoch + 1), loss, stats.lr, tokens_per_s, format_duration(left).c_str());
      metrics << nlohmann::json{{"step", step + 1},        {"epoch", epoch + 1},
                                {"loss", loss},            {"lr", stats.lr},
                                {"grad_norm", stats.grad_norm}, {"tokens_per_s", tokens_per_s}}
                     .dump()
              << std::endl;
      if (eval_every > 0 && (step + 1) % eval_every == 0) run_eval(step + 1);
      if (save_every > 0 && (step + 1) % save_every == 0) save();
      if (interrupted) {
        save();
        std::signal(SIGINT, SIG_DFL);
        std::fprintf(stderr, "interrupted: checkpoint of step %lld saved in %s (continue with --resume %s)\n",
                     static_cast<long long>(step + 1), out.c_str(), out.c_str());
        return 130;
      }
    }
    std::signal(SIGINT, SIG_DFL);
    if (eval_every == 0 || opt.total_steps % eval_every != 0) run_eval(opt.total_steps);
    save();
    write_text_atomically(std::filesystem::path(out) / "loss.svg", loss_svg(losses, evals));
    const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::fprintf(stderr, "saved %s after %lld steps in %s", out.c_str(), static_cast<long long>(opt.total_steps),
                 format_duration(total).c_str());
    if (std::isfinite(best_eval)) std::fprintf(stderr, "; best eval loss %.4f", best_eval);
    std::fprintf(stderr, "\n");
    return 0;
  });
}

}  // namespace slm::cli
