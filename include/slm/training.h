// The training loop as a library function, in the spirit of mlx-lm's
// tuner.trainer.train: slm::train owns epochs, batching, gradient
// accumulation, the eval cadence, checkpoints and resume, metrics.jsonl and
// loss.svg; the caller builds the Trainer and the data, and hears about the
// run through callbacks (printing, stopping on a signal).
//
// What a run writes in TrainingOptions::out:
//   checkpoint/        the last checkpoint, replaced as one unit (below)
//   adapter files      (LoRA) or a model folder (full): the trained result of
//                      the last checkpoint, hard links to checkpoint/'s files
//   metrics.jsonl      one line per step and per evaluation
//   loss.svg           the whole run's loss, written at the end
// A checkpoint is written into checkpoint.tmp-STEP; the previous one is then
// renamed to checkpoint.old-STEP, the new one to checkpoint, and the old one
// removed, so checkpoint/ always holds one step whole (Trainer's files plus
// data_state.json: the position in the data and the settings).
#pragma once

#include <slm/train.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace slm {

struct TrainingOptions {
  int64_t epochs = 1;      // passes over the data, unless max_steps is set
  int64_t max_steps = 0;   // > 0: optimizer steps in all, whatever the epochs
  int64_t batch_size = 4;  // examples per micro-batch
  int64_t grad_accum = 1;  // micro-batches per optimizer step
  uint64_t seed = 0;       // the data order (epoch_order)
  int32_t pad_id = 0;      // pads a micro-batch to its longest example
  int64_t eval_every = 0;  // evaluate every N steps; 0: only at the end
  int64_t save_every = 0;  // checkpoint every N steps; 0: only at the end (and when stopped)
  std::filesystem::path out;
  // base_model_name_or_path of a LoRA checkpoint; the folder whose tokenizer
  // and generation config files a full checkpoint copies.
  std::string base_model;
  // An earlier run's `out` to continue: its checkpoint is loaded and its
  // metrics.jsonl, up to the checkpoint's step, starts this run's. Empty: a
  // fresh run.
  std::filesystem::path resume;
  // Resume even where the checkpoint's settings differ from this run's.
  bool resume_override = false;
  // The settings beyond these options that change what training computes
  // (learning rate, schedule, base model, LoRA shape, ...), as name and
  // value, named as the user gives them ("--lr"). Every checkpoint records
  // them with the loop's own (--seed, --batch-size, --grad-accum and the
  // training examples' fingerprint as --data); resuming with any of them
  // different fails, naming each with both values, unless resume_override.
  std::vector<std::pair<std::string, std::string>> settings;
};

struct ProgressInfo {
  int64_t step = 0;  // steps done, resumed ones included
  int64_t total_steps = 0;
  int64_t epoch = 0;  // 1-based
  double loss = 0.0;  // mean over the step's counted tokens
  double lr = 0.0;
  double grad_norm = 0.0;  // before clipping
  double tokens_per_s = 0.0;  // training tokens (padding included) since this call started
  double seconds_left = 0.0;  // at this call's pace so far
};

struct EvalInfo {
  int64_t step = 0;
  double loss = 0.0;  // mean per counted token
};

struct SaveInfo {
  int64_t step = 0;
  std::filesystem::path dir;  // the checkpoint folder
};

struct ResumeInfo {
  int64_t step = 0;
  std::filesystem::path dir;  // the checkpoint folder loaded
  // The settings that differ from the checkpoint's, as "--lr 0.01 (this
  // run: 0.02)"; not empty only with resume_override.
  std::vector<std::string> overridden;
};

struct TrainingCallbacks {
  std::function<void(const ResumeInfo&)> on_resume;
  std::function<void(const ProgressInfo&)> on_progress;  // after every step
  std::function<void(const EvalInfo&)> on_eval;
  std::function<void(const SaveInfo&)> on_save;
  // Asked after every step (so a request while loading still trains one):
  // true saves a checkpoint and returns with TrainingSummary::stopped.
  std::function<bool()> should_stop;
};

struct TrainingSummary {
  int64_t steps = 0;  // steps done, resumed ones included
  bool stopped = false;  // should_stop ended the run early; a checkpoint of `steps` is saved
  std::optional<double> best_eval_loss;  // over the whole run, earlier metrics of a resumed one included
};

// Optimizer steps a run of these options takes over `examples` examples:
// max_steps, or epochs × ⌈⌈examples / batch_size⌉ / grad_accum⌉ (a step
// accumulates grad_accum micro-batches, the last of an epoch those left).
// What OptimizerOptions::total_steps of a linear or cosine schedule should be.
int64_t total_training_steps(const TrainingOptions& options, size_t examples);

// Mean loss per counted token over `examples`, in batches of `batch_size`,
// without gradients.
double evaluate_loss(Trainer& trainer, const std::vector<TrainExample>& examples, int64_t batch_size, int32_t pad_id);

// Trains `trainer` on `train_data` until total_training_steps (evaluating on
// `eval_data` when given), writing `options.out` as described above. A
// non-finite loss fails without saving. Resuming fails when the checkpoint's
// settings differ (unless resume_override) or its step is past the run's last.
TrainingSummary train(Trainer& trainer, const std::vector<TrainExample>& train_data,
                      const std::vector<TrainExample>* eval_data, const TrainingOptions& options,
                      const TrainingCallbacks& callbacks = {});

}  // namespace slm
