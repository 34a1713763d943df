// slm::train: the loop over steps (batching, gradient accumulation, eval
// cadence), the checkpoint folder replaced as one unit, resume with its
// settings checked, metrics.jsonl and loss.svg (include/slm/training.h).
#include <slm/error.h>
#include <slm/training.h>

#include "core/atomic_file.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <string_view>
#include <utility>

namespace slm {

namespace {

namespace fs = std::filesystem;

using Settings = std::vector<std::pair<std::string, std::string>>;

constexpr std::string_view kCheckpoint = "checkpoint";
constexpr std::string_view kFreshPrefix = "checkpoint.tmp-";
constexpr std::string_view kOldPrefix = "checkpoint.old-";
// The files of a checkpoint only resuming reads; the rest is the trained
// result, published beside the checkpoint.
constexpr std::array<std::string_view, 3> kResumeState = {"optimizer.safetensors", "trainer_state.json",
                                                          "data_state.json"};

void check_options(const TrainingOptions& o, const std::vector<TrainExample>& train_data,
                   const std::vector<TrainExample>* eval_data) {
  if (o.epochs < 1 && o.max_steps < 1) fail("--epochs: must be positive, got ", o.epochs);
  if (o.max_steps < 0) fail("--max-steps: must be positive, got ", o.max_steps);
  if (o.batch_size < 1) fail("--batch-size: must be positive, got ", o.batch_size);
  if (o.grad_accum < 1) fail("--grad-accum: must be positive, got ", o.grad_accum);
  if (o.eval_every < 0) fail("--eval-every: must be 0 or more, got ", o.eval_every);
  if (o.save_every < 0) fail("--save-every: must be 0 or more, got ", o.save_every);
  if (o.out.empty()) fail("--out: no folder given");
  if (train_data.empty()) fail("training data: no examples");
  if (eval_data && eval_data->empty()) fail("evaluation data: no examples");
}

// The examples' ids and labels, FNV-1a: a changed data file, --seq-len,
// --pack or chat template all change it.
std::string fingerprint(const std::vector<TrainExample>& examples) {
  uint64_t hash = 14695981039346656037ull;
  const auto mix = [&](int64_t value) {
    for (int byte = 0; byte < 8; ++byte) {
      hash ^= static_cast<uint64_t>(value) >> (8 * byte) & 0xff;
      hash *= 1099511628211ull;
    }
  };
  for (const TrainExample& e : examples) {
    mix(static_cast<int64_t>(e.tokens.size()));
    for (int32_t id : e.tokens) mix(id);
    for (int32_t label : e.labels) mix(label);
  }
  char text[64];
  std::snprintf(text, sizeof text, "%zu examples, fingerprint %016llx", examples.size(),
                static_cast<unsigned long long>(hash));
  return text;
}

Settings recorded_settings(const TrainingOptions& o, const std::vector<TrainExample>& train_data) {
  Settings settings = {{"--seed", std::to_string(o.seed)},
                       {"--batch-size", std::to_string(o.batch_size)},
                       {"--grad-accum", std::to_string(o.grad_accum)},
                       {"--data", fingerprint(train_data)}};
  settings.insert(settings.end(), o.settings.begin(), o.settings.end());
  return settings;
}

// What data_state.json holds beside the Trainer's own files.
struct DataState {
  int64_t step = 0;  // the Trainer's, here too so that resuming can check it before loading
  int64_t epoch = 0;
  int64_t cursor = 0;  // examples of the epoch's order already trained on
  nlohmann::json settings = nlohmann::json::object();
};

void write_data_state(const fs::path& dir, const DataState& state) {
  const nlohmann::json j = {
      {"step", state.step}, {"epoch", state.epoch}, {"cursor", state.cursor}, {"settings", state.settings}};
  write_text_atomically(dir / "data_state.json", j.dump(2) + "\n");
}

DataState read_data_state(const fs::path& dir) {
  const fs::path path = dir / "data_state.json";
  std::ifstream in(path);
  if (!in) fail(path.string(), ": cannot read");
  DataState state;
  try {
    const nlohmann::json j = nlohmann::json::parse(in);
    state.step = j.at("step").get<int64_t>();
    state.epoch = j.at("epoch").get<int64_t>();
    state.cursor = j.at("cursor").get<int64_t>();
    state.settings = j.at("settings");
  } catch (const nlohmann::json::exception& e) {
    fail(path.string(), ": expected {\"step\", \"epoch\", \"cursor\", \"settings\"} (", e.what(), ")");
  }
  if (!state.settings.is_object()) fail(path.string(), ": \"settings\" must be an object of option names");
  return state;
}

nlohmann::json to_json(const Settings& settings) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [name, value] : settings) j[name] = value;
  return j;
}

// Each setting whose value differs from the checkpoint's, as "--lr 0.01 (this run: 0.02)".
std::vector<std::string> differences(const nlohmann::json& recorded, const Settings& now) {
  const auto text = [](const nlohmann::json& value) {
    return value.is_string() ? value.get<std::string>() : value.dump();
  };
  std::vector<std::string> changed;
  for (const auto& [name, value] : now) {
    const auto it = recorded.find(name);
    const std::string then = it == recorded.end() ? "not recorded" : text(*it);
    if (then != value) changed.push_back(name + " " + then + " (this run: " + value + ")");
  }
  for (const auto& [name, value] : recorded.items()) {
    const bool known = std::any_of(now.begin(), now.end(), [&](const auto& s) { return s.first == name; });
    if (!known) changed.push_back(name + " " + text(value) + " (this run: not set)");
  }
  return changed;
}

// The checkpoint of an earlier run's folder. A save killed between its two
// renames leaves no checkpoint/, but the previous one whole as checkpoint.old-N.
fs::path find_checkpoint(const fs::path& run) {
  if (fs::is_directory(run / kCheckpoint)) return run / kCheckpoint;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(run, ec)) {
    if (entry.is_directory() && entry.path().filename().string().starts_with(kOldPrefix)) return entry.path();
  }
  fail("--resume ", run.string(), ": no checkpoint in it (expected the folder ", (run / kCheckpoint).string(),
       ", which a run writes every --save-every steps, when stopped and at the end)");
}

void rename_into_place(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) fail(to.string(), ": cannot rename ", from.string(), " to it: ", ec.message());
}

// Folders of saves that did not finish: killed while writing, or between the renames.
void remove_unfinished_saves(const fs::path& out) {
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(out)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(kFreshPrefix) || name.starts_with(kOldPrefix)) stale.push_back(entry.path());
  }
  // A folder that cannot be removed now is tried again at the next save.
  std::error_code ignored;
  for (const fs::path& dir : stale) fs::remove_all(dir, ignored);
}

// out/checkpoint replaced as one unit (include/slm/training.h), then its
// trained result published in `out`.
fs::path save_checkpoint_folder(const Trainer& trainer, const TrainingOptions& options, DataState state) {
  state.step = trainer.steps_done();
  const std::string step = std::to_string(state.step);
  const fs::path fresh = options.out / (std::string(kFreshPrefix) + step);
  const fs::path old = options.out / (std::string(kOldPrefix) + step);
  const fs::path current = options.out / kCheckpoint;
  std::error_code ec;
  fs::remove_all(fresh, ec);  // a run killed while writing this very step
  fs::create_directories(fresh, ec);
  if (ec) fail(fresh.string(), ": cannot create folder: ", ec.message());
  trainer.save_checkpoint(fresh, options.base_model);
  write_data_state(fresh, state);
  // A directory cannot be renamed over a non-empty one: the old one goes aside first.
  if (fs::exists(current)) rename_into_place(current, old);
  rename_into_place(fresh, current);
  remove_unfinished_saves(options.out);
  for (const auto& entry : fs::directory_iterator(current)) {
    const std::string name = entry.path().filename().string();
    if (std::find(kResumeState.begin(), kResumeState.end(), name) == kResumeState.end()) {
      link_file_atomically(entry.path(), options.out / name);
    }
  }
  return current;
}

// About six round values (1, 2 or 5 times a power of ten apart) spanning [low, high].
std::vector<double> nice_ticks(double low, double high) {
  const double raw = (high - low) / 5;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  const double unit = raw / power;
  const double step = (unit < 1.5 ? 1 : unit < 3.5 ? 2 : unit < 7.5 ? 5 : 10) * power;
  std::vector<double> ticks;
  for (double t = std::floor(low / step) * step; t <= high + step * 1e-9; t += step) ticks.push_back(t);
  if (ticks.empty() || ticks.back() < high) ticks.push_back(ticks.empty() ? high : ticks.back() + step);
  return ticks;
}

std::string format_loss(double loss) {
  char text[32];
  std::snprintf(text, sizeof text, "%.4f", loss);
  return text;
}

// metrics.jsonl and what loss.svg plots from it.
class Metrics {
 public:
  // A resumed run starts from the earlier run's lines up to the checkpoint's
  // step: the steps after it are trained again and would otherwise be logged
  // twice. A line cut short by a kill is not JSON and is dropped; a run
  // folder without metrics.jsonl starts an empty one.
  Metrics(const fs::path& out, const fs::path& resumed_run, int64_t resumed_step) {
    const fs::path path = out / "metrics.jsonl";
    std::string kept;
    if (!resumed_run.empty()) {
      std::ifstream in(resumed_run / "metrics.jsonl");
      for (std::string line; std::getline(in, line);) {
        const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
        if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer() ||
            j["step"].get<int64_t>() > resumed_step) {
          continue;
        }
        remember(j);
        kept += line + "\n";
      }
    }
    write_text_atomically(path, kept);
    file_.open(path, std::ios::app);
    if (!file_) fail(out.string(), ": cannot write metrics.jsonl");
  }

  void write(const nlohmann::json& line) {
    file_ << line.dump() << std::endl;
    remember(line);
  }

  int64_t last_eval_step() const { return evals_.empty() ? -1 : evals_.back().first; }

  std::optional<double> best_eval_loss() const {
    if (evals_.empty()) return std::nullopt;
    double best = std::numeric_limits<double>::infinity();
    for (const auto& [step, loss] : evals_) best = std::min(best, loss);
    return best;
  }

  // loss.svg: the training loss per step and the eval points (when there is
  // eval data), on axes with ticks and labels, the final losses in the title:
  // a plain SVG any browser shows and a report can take.
  std::string svg() const {
    constexpr double kWidth = 640, kHeight = 380, kLeft = 64, kRight = 24, kTop = 44, kBottom = 52;
    double low = std::numeric_limits<double>::infinity(), high = -low;
    for (const auto& [step, l] : losses_) low = std::min(low, l), high = std::max(high, l);
    for (const auto& [step, l] : evals_) low = std::min(low, l), high = std::max(high, l);
    if (!std::isfinite(low)) low = 0, high = 1;
    if (!(high > low)) high = low + 1.0;
    const int64_t last_step = losses_.empty() ? 1 : std::max<int64_t>(1, losses_.back().first);
    const std::vector<double> y_ticks = nice_ticks(low, high);
    std::vector<double> x_ticks = nice_ticks(1, static_cast<double>(last_step));
    std::erase_if(x_ticks, [](double t) { return t < 1; });  // steps count from 1
    low = std::min(low, y_ticks.front());
    high = std::max(high, y_ticks.back());
    const double x_low = 1, x_high = std::max({2.0, static_cast<double>(last_step), x_ticks.empty() ? 1.0 : x_ticks.back()});
    auto x = [&](double step) { return kLeft + (step - x_low) / (x_high - x_low) * (kWidth - kLeft - kRight); };
    auto y = [&](double loss) { return kHeight - kBottom - (loss - low) / (high - low) * (kHeight - kTop - kBottom); };
    std::string svg;
    char buffer[256];
    auto add = [&](const char* format, auto... values) {
      std::snprintf(buffer, sizeof buffer, format, values...);
      svg += buffer;
    };
    add("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" "
        "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
        kWidth, kHeight);
    for (double t : y_ticks) {
      add("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n", kLeft, y(t), kWidth - kRight, y(t));
      add("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", kLeft - 6, y(t) + 4, t);
    }
    for (double t : x_ticks) {
      add("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", x(t), kHeight - kBottom, x(t),
          kHeight - kBottom + 5);
      add("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", x(t), kHeight - kBottom + 18, t);
    }
    add("<polyline fill=\"none\" stroke=\"#333\" points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f\"/>\n", kLeft, kTop, kLeft,
        kHeight - kBottom, kWidth - kRight, kHeight - kBottom);
    add("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step</text>\n", (kLeft + kWidth - kRight) / 2, kHeight - 12);
    add("<text transform=\"translate(16 %.1f) rotate(-90)\" text-anchor=\"middle\">loss (nats per token)</text>\n",
        (kTop + kHeight - kBottom) / 2);
    svg += "<polyline class=\"train\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"";
    for (const auto& [step, l] : losses_) add("%.1f,%.1f ", x(static_cast<double>(step)), y(l));
    svg += "\"/>\n";
    for (const auto& [step, l] : evals_) {
      add("<circle class=\"eval\" cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"#d62728\"/>\n", x(static_cast<double>(step)), y(l));
    }
    std::string title = losses_.empty() ? std::string("no training steps yet") : "training loss " +
                                                                                        format_loss(losses_.back().second) +
                                                                                        " after " + std::to_string(last_step) +
                                                                                        " steps";
    if (!evals_.empty()) title += ", eval loss " + format_loss(evals_.back().second);
    add("<text x=\"%.1f\" y=\"20\" font-size=\"14\">%s</text>\n", kLeft, title.c_str());
    // The legend names what is drawn: eval only where there is eval data.
    add("<line x1=\"%.1f\" y1=\"34\" x2=\"%.1f\" y2=\"34\" stroke=\"#1f77b4\" stroke-width=\"1.5\"/>"
        "<text x=\"%.1f\" y=\"38\">train</text>\n",
        kWidth - kRight - 150, kWidth - kRight - 130, kWidth - kRight - 124);
    if (!evals_.empty()) {
      add("<circle cx=\"%.1f\" cy=\"34\" r=\"4\" fill=\"#d62728\"/><text x=\"%.1f\" y=\"38\">eval</text>\n",
          kWidth - kRight - 70, kWidth - kRight - 62);
    }
    return svg + "</svg>\n";
  }

 private:
  void remember(const nlohmann::json& line) {
    const int64_t step = line.at("step").get<int64_t>();
    if (line.contains("loss") && line["loss"].is_number()) losses_.emplace_back(step, line["loss"].get<double>());
    if (line.contains("eval_loss") && line["eval_loss"].is_number()) {
      evals_.emplace_back(step, line["eval_loss"].get<double>());
    }
  }

  std::ofstream file_;
  std::vector<std::pair<int64_t, double>> losses_, evals_;  // by step
};

}  // namespace

int64_t total_training_steps(const TrainingOptions& options, size_t examples) {
  if (options.max_steps > 0) return options.max_steps;
  const int64_t batches_per_epoch = (static_cast<int64_t>(examples) + options.batch_size - 1) / options.batch_size;
  return options.epochs * ((batches_per_epoch + options.grad_accum - 1) / options.grad_accum);
}

double evaluate_loss(Trainer& trainer, const std::vector<TrainExample>& examples, int64_t batch_size, int32_t pad_id) {
  double total = 0.0;
  int64_t counted = 0;
  for (size_t start = 0; start < examples.size(); start += static_cast<size_t>(batch_size)) {
    std::vector<size_t> indices;
    for (size_t i = start; i < std::min(examples.size(), start + static_cast<size_t>(batch_size)); ++i) {
      indices.push_back(i);
    }
    const TrainBatch batch = make_batch(examples, indices, pad_id);
    total += trainer.evaluate(batch);
    counted += batch.counted_tokens();
  }
  return total / static_cast<double>(std::max<int64_t>(1, counted));
}

TrainingSummary train(Trainer& trainer, const std::vector<TrainExample>& train_data,
                      const std::vector<TrainExample>* eval_data, const TrainingOptions& options,
                      const TrainingCallbacks& callbacks) {
  check_options(options, train_data, eval_data);
  const int64_t total_steps = total_training_steps(options, train_data.size());
  const Settings settings = recorded_settings(options, train_data);
  DataState state;
  state.settings = to_json(settings);
  if (!options.resume.empty()) {
    const fs::path checkpoint = find_checkpoint(options.resume);
    const DataState resumed = read_data_state(checkpoint);
    // First: no setting lets a run end before the step it resumes from.
    if (resumed.step > total_steps) {
      fail("--resume ", options.resume.string(), ": the checkpoint is at step ", resumed.step,
           ", past this run's last step ", total_steps, " (--max-steps or --epochs must give at least ", resumed.step,
           " steps)");
    }
    const std::vector<std::string> changed = differences(resumed.settings, settings);
    if (!changed.empty() && !options.resume_override) {
      std::string list;
      for (const std::string& c : changed) list += (list.empty() ? "" : "; ") + c;
      fail("--resume ", options.resume.string(), ": the checkpoint was made with other settings: ", list,
           ". Resume with the checkpoint's settings, or add --resume-override to continue with this run's");
    }
    trainer.load_checkpoint(checkpoint);
    state.epoch = resumed.epoch;
    state.cursor = resumed.cursor;
    if (callbacks.on_resume) callbacks.on_resume({trainer.steps_done(), checkpoint, changed});
  }
  std::error_code ec;
  fs::create_directories(options.out, ec);
  if (ec) fail(options.out.string(), ": cannot create folder: ", ec.message());
  Metrics metrics(options.out, options.resume, trainer.steps_done());

  TrainingSummary summary;
  int64_t saved_step = -1;
  const auto save = [&] {
    const fs::path dir = save_checkpoint_folder(trainer, options, state);
    saved_step = trainer.steps_done();
    if (callbacks.on_save) callbacks.on_save({saved_step, dir});
  };
  const auto run_eval = [&](int64_t step) {
    const double loss = evaluate_loss(trainer, *eval_data, options.batch_size, options.pad_id);
    metrics.write({{"step", step}, {"eval_loss", loss}, {"eval_perplexity", std::exp(loss)}});
    if (callbacks.on_eval) callbacks.on_eval({step, loss});
  };

  const auto started = std::chrono::steady_clock::now();
  const int64_t first_step = trainer.steps_done();
  int64_t tokens_seen = 0;
  std::vector<size_t> order = epoch_order(train_data.size(), options.seed, state.epoch);
  for (int64_t step = first_step; step < total_steps; ++step) {
    if (state.cursor >= static_cast<int64_t>(order.size())) {
      order = epoch_order(train_data.size(), options.seed, ++state.epoch);
      state.cursor = 0;
    }
    // A step never reaches into the next epoch: the last one of an epoch
    // accumulates what is left (as transformers' Trainer), so --epochs N is N
    // whole passes and each step's examples come from one epoch's order.
    std::vector<TrainBatch> micro;
    int64_t counted = 0;
    for (int64_t m = 0; m < options.grad_accum && state.cursor < static_cast<int64_t>(order.size()); ++m) {
      const auto end = std::min<int64_t>(static_cast<int64_t>(order.size()), state.cursor + options.batch_size);
      micro.push_back(make_batch(train_data, {order.begin() + state.cursor, order.begin() + end}, options.pad_id));
      state.cursor = end;
      counted += micro.back().counted_tokens();
      tokens_seen += micro.back().batch * micro.back().seq;
    }
    double loss = 0.0;
    for (const TrainBatch& batch : micro) {
      loss += trainer.accumulate_gradients(batch, 1.0 / static_cast<double>(std::max<int64_t>(1, counted)));
    }
    loss /= static_cast<double>(std::max<int64_t>(1, counted));
    if (!std::isfinite(loss)) {
      fail("the loss became ", loss, " at step ", step + 1, "; stopped without saving (", options.out.string(),
           " keeps the last --save-every checkpoint, if any)");
    }
    const StepStats stats = trainer.step();
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    ProgressInfo progress;
    progress.step = step + 1;
    progress.total_steps = total_steps;
    progress.epoch = state.epoch + 1;
    progress.loss = loss;
    progress.lr = stats.lr;
    progress.grad_norm = stats.grad_norm;
    progress.tokens_per_s = static_cast<double>(tokens_seen) / std::max(elapsed, 1e-9);
    progress.seconds_left =
        elapsed / static_cast<double>(step + 1 - first_step) * static_cast<double>(total_steps - step - 1);
    metrics.write({{"step", progress.step},
                   {"epoch", progress.epoch},
                   {"loss", loss},
                   {"lr", stats.lr},
                   {"grad_norm", stats.grad_norm},
                   {"tokens_per_s", progress.tokens_per_s}});
    if (callbacks.on_progress) callbacks.on_progress(progress);
    if (eval_data && options.eval_every > 0 && (step + 1) % options.eval_every == 0) run_eval(step + 1);
    const bool stop = callbacks.should_stop && callbacks.should_stop();
    if (stop || (options.save_every > 0 && (step + 1) % options.save_every == 0)) save();
    if (stop) {
      summary.steps = step + 1;
      summary.stopped = true;
      summary.best_eval_loss = metrics.best_eval_loss();
      return summary;
    }
  }
  // Once per step, a resumed run included: the checkpoint of a finished run
  // follows its last evaluation.
  if (eval_data && metrics.last_eval_step() != total_steps) run_eval(total_steps);
  if (saved_step != total_steps) save();
  write_text_atomically(options.out / "loss.svg", metrics.svg());
  summary.steps = total_steps;
  summary.best_eval_loss = metrics.best_eval_loss();
  return summary;
}

}  // namespace slm
