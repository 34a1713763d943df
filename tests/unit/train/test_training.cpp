// slm::train, the loop slm finetune runs (include/slm/training.h): what it
// writes, its callbacks, and stopping, killing and resuming a run, which must
// end where an uninterrupted one ends, with every step logged once.
#include "trainer_fixture.h"

#include <slm/error.h>
#include <slm/training.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <set>
#include <stdexcept>

namespace {

namespace fs = std::filesystem;

constexpr int64_t kSteps = 12;

class TrainingLoop : public TrainerTest {
 protected:
  void SetUp() override {
    root_ = work_dir() / ("loop_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
    model_.emplace(tiny_model("llama"));
  }

  // Short random sequences, their first two labels masked.
  static std::vector<slm::TrainExample> examples(int count, uint64_t seed) {
    slm::Rng rng(seed);
    std::vector<slm::TrainExample> out(static_cast<size_t>(count));
    for (slm::TrainExample& e : out) {
      const size_t length = 4 + rng.next() % 9;
      for (size_t i = 0; i < length; ++i) e.tokens.push_back(static_cast<int32_t>(rng.next() % 50));
      e.labels = e.tokens;
      e.labels[0] = e.labels[1] = -100;
    }
    return out;
  }

  // Dropout on and a decaying schedule, so a resume that lost any state shows.
  slm::Trainer trainer() const {
    slm::LoraOptions lora;
    lora.rank = 4;
    lora.dropout = 0.1;
    lora.seed = 3;
    lora.targets = {"q_proj", "v_proj", "down_proj"};
    slm::OptimizerOptions opt;
    opt.lr = 1e-2;
    opt.schedule = slm::LrSchedule::Cosine;
    opt.total_steps = kSteps;
    return slm::Trainer(*model_, lora, opt);
  }

  slm::TrainingOptions options(const std::string& out) const {
    slm::TrainingOptions o;
    o.max_steps = kSteps;
    o.batch_size = 3;
    o.grad_accum = 2;
    o.seed = 5;
    o.eval_every = 4;
    o.out = root_ / out;
    o.base_model = "tiny";
    o.settings = {{"--lr", "0.01"}};
    return o;
  }

  slm::TrainingSummary run(const slm::TrainingOptions& o, const slm::TrainingCallbacks& callbacks = {}) {
    slm::Trainer t = trainer();
    return slm::train(t, data_, &eval_, o, callbacks);
  }

  // A run of `o` that stops after `steps` steps.
  void run_until(const slm::TrainingOptions& o, int64_t steps) {
    slm::TrainingCallbacks callbacks;
    int64_t done = 0;
    callbacks.on_progress = [&](const slm::ProgressInfo& p) { done = p.step; };
    callbacks.should_stop = [&] { return done == steps; };
    const slm::TrainingSummary summary = run(o, callbacks);
    ASSERT_TRUE(summary.stopped);
    ASSERT_EQ(summary.steps, steps);
  }

  // The finished run every interrupted one must end as.
  const fs::path& reference() {
    if (reference_.empty()) {
      reference_ = options("reference").out;
      run(options("reference"));
    }
    return reference_;
  }

  static std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    EXPECT_TRUE(in) << p;
    return {std::istreambuf_iterator<char>(in), {}};
  }
  static std::vector<nlohmann::json> metrics(const fs::path& out) {
    std::vector<nlohmann::json> lines;
    std::ifstream in(out / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
    return lines;
  }
  // (step, loss) of every training line and (step, eval_loss) of every eval line, in file order.
  static std::vector<std::pair<int64_t, double>> logged(const fs::path& out, const char* key) {
    std::vector<std::pair<int64_t, double>> values;
    for (const nlohmann::json& j : metrics(out)) {
      if (j.contains(key)) values.emplace_back(j["step"].get<int64_t>(), j[key].get<double>());
    }
    return values;
  }
  static std::set<std::string> entries(const fs::path& dir) {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
    return names;
  }
  static int64_t trainer_step(const fs::path& checkpoint) {
    return nlohmann::json::parse(read(checkpoint / "trainer_state.json"))["step"].get<int64_t>();
  }
  static std::string error_of(const std::function<void()>& f) {
    try {
      f();
    } catch (const slm::Error& e) {
      return e.what();
    }
    ADD_FAILURE() << "expected slm::Error";
    return "";
  }
  // The run in `out` ended exactly as the reference: the same adapter, the
  // same loss at every step, each step and evaluation logged once, the same plot.
  void expect_same_as_reference(const fs::path& out) {
    const fs::path& want = reference();
    EXPECT_EQ(read(out / "adapter_model.safetensors"), read(want / "adapter_model.safetensors"));
    EXPECT_EQ(logged(out, "loss"), logged(want, "loss"));
    EXPECT_EQ(logged(out, "eval_loss"), logged(want, "eval_loss"));
    EXPECT_EQ(read(out / "loss.svg"), read(want / "loss.svg"));
  }

  std::optional<slm::Model> model_;
  fs::path root_, reference_;
  const std::vector<slm::TrainExample> data_ = examples(16, 1), eval_ = examples(4, 2);
};

TEST_F(TrainingLoop, WritesTheResultTheCheckpointMetricsAndPlot) {
  slm::TrainingCallbacks callbacks;
  std::vector<int64_t> steps, evals, saves;
  callbacks.on_progress = [&](const slm::ProgressInfo& p) {
    steps.push_back(p.step);
    EXPECT_EQ(p.total_steps, kSteps);
    EXPECT_TRUE(std::isfinite(p.loss) && p.lr > 0 && p.tokens_per_s > 0) << p.step;
  };
  callbacks.on_eval = [&](const slm::EvalInfo& e) { evals.push_back(e.step); };
  callbacks.on_save = [&](const slm::SaveInfo& s) {
    saves.push_back(s.step);
    EXPECT_EQ(s.dir, options("run").out / "checkpoint");
  };
  const slm::TrainingSummary summary = run(options("run"), callbacks);
  const fs::path out = options("run").out;
  EXPECT_EQ(summary.steps, kSteps);
  EXPECT_FALSE(summary.stopped);
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));
  EXPECT_EQ(evals, (std::vector<int64_t>{4, 8, 12})) << "the last step's evaluation is the final one";
  EXPECT_EQ(saves, (std::vector<int64_t>{kSteps}));

  EXPECT_EQ(entries(out), (std::set<std::string>{"adapter_config.json", "adapter_model.safetensors", "checkpoint",
                                                 "loss.svg", "metrics.jsonl"}));
  EXPECT_EQ(entries(out / "checkpoint"),
            (std::set<std::string>{"adapter_config.json", "adapter_model.safetensors", "data_state.json",
                                   "optimizer.safetensors", "trainer_state.json"}));
  EXPECT_TRUE(fs::equivalent(out / "adapter_model.safetensors", out / "checkpoint" / "adapter_model.safetensors"));
  EXPECT_EQ(trainer_step(out / "checkpoint"), kSteps);

  const auto losses = logged(out, "loss"), eval_losses = logged(out, "eval_loss");
  ASSERT_EQ(losses.size(), static_cast<size_t>(kSteps));
  for (size_t i = 0; i < losses.size(); ++i) EXPECT_EQ(losses[i].first, static_cast<int64_t>(i + 1));
  EXPECT_LT(losses.back().second, losses.front().second);
  ASSERT_EQ(eval_losses.size(), 3u);
  ASSERT_TRUE(summary.best_eval_loss);
  EXPECT_EQ(*summary.best_eval_loss, std::min({eval_losses[0].second, eval_losses[1].second, eval_losses[2].second}));
  const std::string svg = read(out / "loss.svg");
  const size_t from = svg.find("points=\"", svg.find("class=\"train\"")), to = svg.find('"', from + 8);
  const std::string points = svg.substr(from + 8, to - from - 8);
  EXPECT_EQ(std::count(points.begin(), points.end(), ','), kSteps);
  // The title gives the final losses (not the lowest), the legend names eval because there is eval data.
  char title[96];
  std::snprintf(title, sizeof title, "training loss %.4f after 12 steps, eval loss %.4f", losses.back().second,
                eval_losses.back().second);
  EXPECT_NE(svg.find(title), std::string::npos) << svg;
  size_t circles = 0;
  for (size_t at = svg.find("class=\"eval\""); at != std::string::npos; at = svg.find("class=\"eval\"", at + 1)) ++circles;
  EXPECT_EQ(circles, eval_losses.size());
  EXPECT_NE(svg.find(">step</text>"), std::string::npos) << "an x axis label";
  EXPECT_NE(svg.find(">loss (nats per token)</text>"), std::string::npos) << "a y axis label";
  EXPECT_NE(svg.find(">eval</text>"), std::string::npos);
}

TEST_F(TrainingLoop, StoppedAndResumedEndsAsAnUninterruptedRun) {
  slm::TrainingOptions o = options("stopped");
  run_until(o, 5);
  EXPECT_EQ(trainer_step(o.out / "checkpoint"), 5);
  o.resume = o.out;
  slm::TrainingCallbacks callbacks;
  int64_t resumed_at = -1, first_step = -1;
  callbacks.on_resume = [&](const slm::ResumeInfo& r) {
    resumed_at = r.step;
    EXPECT_EQ(r.dir, o.out / "checkpoint");
    EXPECT_TRUE(r.overridden.empty());
  };
  callbacks.on_progress = [&](const slm::ProgressInfo& p) {
    if (first_step < 0) first_step = p.step;
  };
  run(o, callbacks);
  EXPECT_EQ(resumed_at, 5);
  EXPECT_EQ(first_step, 6);
  expect_same_as_reference(o.out);
}

// A kill (simulated by a callback that throws) after the step-8 checkpoint:
// steps 9 and 10 were logged, then trained again after the resume.
TEST_F(TrainingLoop, KilledAndResumedLogsEveryStepOnce) {
  slm::TrainingOptions o = options("killed");
  o.save_every = 4;
  slm::TrainingCallbacks callbacks;
  callbacks.on_progress = [](const slm::ProgressInfo& p) {
    if (p.step == 10) throw std::runtime_error("killed");
  };
  EXPECT_THROW(run(o, callbacks), std::runtime_error);
  EXPECT_EQ(logged(o.out, "loss").size(), 10u);
  EXPECT_EQ(trainer_step(o.out / "checkpoint"), 8);
  o.resume = o.out;
  run(o);
  expect_same_as_reference(o.out);
}

// The resume source may be another folder: its metrics up to the checkpoint
// start the new folder's, and the source is left as it was.
TEST_F(TrainingLoop, ResumesFromAnotherFolder) {
  slm::TrainingOptions o = options("source");
  o.save_every = 4;
  slm::TrainingCallbacks callbacks;
  callbacks.on_progress = [](const slm::ProgressInfo& p) {
    if (p.step == 6) throw std::runtime_error("killed");
  };
  EXPECT_THROW(run(o, callbacks), std::runtime_error);
  const std::string source_metrics = read(o.out / "metrics.jsonl");
  o.resume = o.out;
  o.out = root_ / "continued";
  run(o);
  expect_same_as_reference(o.out);
  EXPECT_EQ(read(o.resume / "metrics.jsonl"), source_metrics);
}

// Every save replaces checkpoint/ whole and leaves nothing beside it; a kill
// between the two renames of a save leaves the previous checkpoint as
// checkpoint.old-N (and the new one, whole or not, as checkpoint.tmp-N),
// which a resume reads and the next save clears away.
TEST_F(TrainingLoop, CheckpointIsReplacedAsOneFolder) {
  slm::TrainingOptions o = options("atomic");
  o.save_every = 3;
  slm::TrainingCallbacks callbacks;
  std::vector<int64_t> saved;
  callbacks.on_save = [&](const slm::SaveInfo& s) {
    saved.push_back(s.step);
    EXPECT_EQ(trainer_step(s.dir), s.step);
    EXPECT_EQ(entries(o.out), (std::set<std::string>{"adapter_config.json", "adapter_model.safetensors",
                                                     "checkpoint", "metrics.jsonl"}))
        << "step " << s.step;
  };
  int64_t done = 0;
  callbacks.on_progress = [&](const slm::ProgressInfo& p) { done = p.step; };
  callbacks.should_stop = [&] { return done == 6; };
  run(o, callbacks);
  EXPECT_EQ(saved, (std::vector<int64_t>{3, 6}));

  fs::rename(o.out / "checkpoint", o.out / "checkpoint.old-9");
  fs::create_directories(o.out / "checkpoint.tmp-9");
  std::ofstream(o.out / "checkpoint.tmp-9" / "adapter_config.json") << "{\"r\": ";
  o.resume = o.out;
  slm::TrainingCallbacks resumed;
  int64_t resumed_at = -1;
  resumed.on_resume = [&](const slm::ResumeInfo& r) {
    resumed_at = r.step;
    EXPECT_EQ(r.dir, o.out / "checkpoint.old-9");
  };
  run(o, resumed);
  EXPECT_EQ(resumed_at, 6);
  expect_same_as_reference(o.out);
  EXPECT_EQ(entries(o.out), (std::set<std::string>{"adapter_config.json", "adapter_model.safetensors", "checkpoint",
                                                   "loss.svg", "metrics.jsonl"}));
}

TEST_F(TrainingLoop, ResumeRefusesOtherSettingsUnlessOverridden) {
  slm::TrainingOptions o = options("settings");
  run_until(o, 4);
  o.resume = o.out;
  o.seed = 6;
  o.settings = {{"--lr", "0.02"}, {"--warmup-steps", "2"}};
  const std::string message = error_of([&] { run(o); });
  for (const char* part : {"--resume ", "other settings", "--seed 5 (this run: 6)", "--lr 0.01 (this run: 0.02)",
                           "--warmup-steps not recorded (this run: 2)", "--resume-override"}) {
    EXPECT_NE(message.find(part), std::string::npos) << part << " in: " << message;
  }
  EXPECT_EQ(message.find("--batch-size"), std::string::npos) << message;

  // Other data: the examples' count and fingerprint both ways.
  slm::TrainingOptions same = options("settings");
  same.resume = same.out;
  const std::vector<slm::TrainExample> other = examples(17, 1);
  const std::string data_message = error_of([&] {
    slm::Trainer t = trainer();
    slm::train(t, other, &eval_, same);
  });
  EXPECT_NE(data_message.find("--data 16 examples, fingerprint "), std::string::npos) << data_message;
  EXPECT_NE(data_message.find("(this run: 17 examples, fingerprint "), std::string::npos) << data_message;

  o.resume_override = true;
  std::vector<std::string> overridden;
  slm::TrainingCallbacks callbacks;
  callbacks.on_resume = [&](const slm::ResumeInfo& r) { overridden = r.overridden; };
  run(o, callbacks);
  EXPECT_EQ(overridden.size(), 3u);
  const nlohmann::json state = nlohmann::json::parse(read(o.out / "checkpoint" / "data_state.json"));
  EXPECT_EQ(state["settings"]["--lr"], "0.02") << "the checkpoint records the settings it was trained on last";
  EXPECT_EQ(state["settings"]["--seed"], "6");
}

TEST_F(TrainingLoop, ResumeRefusesARunThatEndsBeforeTheCheckpoint) {
  slm::TrainingOptions o = options("short");
  run_until(o, 8);
  o.resume = o.out;
  o.max_steps = 6;
  o.settings = {{"--lr", "0.02"}};  // refused first for the steps, which no override allows
  o.resume_override = true;
  const std::string message = error_of([&] { run(o); });
  EXPECT_NE(message.find("the checkpoint is at step 8, past this run's last step 6"), std::string::npos) << message;
  EXPECT_NE(message.find("--max-steps"), std::string::npos) << message;
  // Ending at the checkpoint's step trains nothing more and finishes the run.
  o = options("short");
  o.resume = o.out;
  o.max_steps = 8;
  slm::TrainingCallbacks callbacks;
  callbacks.on_progress = [](const slm::ProgressInfo& p) { ADD_FAILURE() << "step " << p.step; };
  EXPECT_EQ(run(o, callbacks).steps, 8);
  EXPECT_TRUE(fs::exists(o.out / "loss.svg"));
  EXPECT_EQ(logged(o.out, "loss").size(), 8u);
  EXPECT_EQ(logged(o.out, "eval_loss").size(), 2u) << "steps 4 and 8: the final evaluation, at 8, is not repeated";
}

TEST_F(TrainingLoop, TotalStepsFollowEpochsBatchesAndAccumulation) {
  slm::TrainingOptions o;
  o.epochs = 3;
  o.batch_size = 3;
  o.grad_accum = 2;
  EXPECT_EQ(slm::total_training_steps(o, 10), 6) << "4 micro-batches an epoch, 2 steps";
  EXPECT_EQ(slm::total_training_steps(o, 13), 9) << "5 micro-batches an epoch: 2 steps of 2, 1 of the one left";
  EXPECT_EQ(slm::total_training_steps(o, 1), 3) << "at least one step an epoch";
  o.max_steps = 7;
  EXPECT_EQ(slm::total_training_steps(o, 10), 7);
}

TEST_F(TrainingLoop, AStepNeverReachesIntoTheNextEpoch) {
  // 13 examples in micro-batches of 3: 5 an epoch, so steps of 2, 2 and the 1 left.
  slm::TrainingOptions o = options("epochs");
  o.max_steps = 0;
  o.epochs = 2;
  std::vector<int64_t> epochs;
  slm::TrainingCallbacks callbacks;
  callbacks.on_progress = [&](const slm::ProgressInfo& p) { epochs.push_back(p.epoch); };
  slm::Trainer t = trainer();
  EXPECT_EQ(slm::train(t, examples(13, 1), nullptr, o, callbacks).steps, 6);
  EXPECT_EQ(epochs, (std::vector<int64_t>{1, 1, 1, 2, 2, 2}));
}

TEST_F(TrainingLoop, RejectsBadOptionsAndAMissingCheckpoint) {
  slm::TrainingOptions o = options("bad");
  o.batch_size = 0;
  EXPECT_NE(error_of([&] { run(o); }).find("--batch-size"), std::string::npos);
  o = options("bad");
  o.out.clear();
  EXPECT_NE(error_of([&] { run(o); }).find("--out"), std::string::npos);
  o = options("bad");
  const std::string empty = error_of([&] {
    slm::Trainer t = trainer();
    slm::train(t, {}, nullptr, o);
  });
  EXPECT_NE(empty.find("no examples"), std::string::npos) << empty;
  o.resume = root_ / "nowhere";
  const std::string missing = error_of([&] { run(o); });
  EXPECT_NE(missing.find((root_ / "nowhere" / "checkpoint").string()), std::string::npos) << missing;
}

}  // namespace
