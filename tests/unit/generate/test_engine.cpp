// The batched decoder and the engine against one sequence at a time, on the
// default model in f32 with two random LoRA adapters: a batch of sequences
// at different stages and with different adapters gives each what it gives
// alone (logits within 1e-5 relative, greedy tokens identical); a paged cache
// equals one contiguous block; prefix reuse equals recomputation; a cancelled
// request leaves the others unchanged; a full pool queues and then completes
// every request; a request too long for the context or the pool fails alone.
#include <slm/engine.h>
#include <slm/error.h>
#include <slm/generate.h>
#include <slm/model.h>
#include <slm/tokenizer.h>
#include <slm/train.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;

const fs::path kModelDir = fs::path(SLM_SOURCE_DIR) / "models/slm-tiny";

double relative_error(std::span<const float> got, std::span<const float> want) {
  double error = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    error = std::max(error, double(std::fabs(got[i] - want[i])));
    scale = std::max(scale, double(std::fabs(want[i])));
  }
  return error / scale;
}

// n token ids in the default model's vocabulary, different for each salt.
std::vector<int32_t> prompt(int n, int salt) {
  std::vector<int32_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back(static_cast<int32_t>(5 + (i * 37 + salt * 101) % 4000));
  return ids;
}

class Engine : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    slm::LoadOptions load;
    load.dtype = slm::DType::F32;
    model_ = std::make_unique<slm::Model>(slm::Model::load(kModelDir, load));
    tokenizer_ = std::make_unique<slm::Tokenizer>(slm::Tokenizer::from_dir(kModelDir));
    const fs::path dir = fs::temp_directory_path() / ("slm_engine_" + std::to_string(::getpid()));
    for (int i = 0; i < 2; ++i) {
      slm::LoraOptions lora;
      lora.rank = 4 + 4 * i;
      lora.targets = i == 0 ? std::vector<std::string>{"all-linear"} : std::vector<std::string>{"q_proj", "down_proj"};
      lora.seed = 5 + static_cast<uint64_t>(i);
      slm::Trainer trainer(*model_, lora, {});
      for (auto& [name, t] : trainer.parameter_tensors()) {
        if (name.find("lora_B") == std::string::npos) continue;
        for (int64_t k = 0; k < t.numel(); ++k) t.data_as<float>()[k] = 0.05f * static_cast<float>((k * (i + 3)) % 9 - 4);
      }
      trainer.save_adapter(dir / std::to_string(i), "slm-tiny");
      adapters_.push_back(std::make_shared<const slm::Adapter>(slm::load_adapter(*model_, dir / std::to_string(i))));
    }
    fs::remove_all(dir);
  }
  static void TearDownTestSuite() {
    adapters_.clear();
    model_.reset();
    tokenizer_.reset();
  }

  static slm::GenerateOptions greedy(int64_t n) {
    slm::GenerateOptions o;
    o.max_new_tokens = n;
    o.sampling.temperature = 0;
    o.logprobs = 3;
    return o;
  }

  static inline std::unique_ptr<slm::Model> model_;
  static inline std::unique_ptr<slm::Tokenizer> tokenizer_;
  static inline std::vector<std::shared_ptr<const slm::Adapter>> adapters_;
};

// Rows of several sequences in one forward, each at its own stage and with
// its own adapter or none, against each sequence run alone.
void check_batched_forward(const slm::Model& model, const std::vector<std::shared_ptr<const slm::Adapter>>& adapters,
                           double tolerance) {
  const int64_t V = model.config().vocab_size;
  struct Seq {
    std::vector<int32_t> tokens;
    int64_t cached;  // run before the batch
    const slm::Adapter* adapter;
  };
  const std::vector<Seq> seqs{{prompt(70, 1), 69, adapters[0].get()}, {prompt(9, 2), 0, nullptr},
                              {prompt(130, 3), 100, adapters[1].get()}, {prompt(1, 4), 0, adapters[0].get()},
                              {prompt(40, 5), 39, nullptr}};
  slm::KVCache together(model.config(), 512, slm::DType::F32, 16);
  slm::Batch batch;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const auto& q = seqs[s];
    if (q.cached > 0) model.forward(std::span(q.tokens).first(size_t(q.cached)), together, q.adapter, int32_t(s));
    for (size_t t = size_t(q.cached); t < q.tokens.size(); ++t) {
      batch.add(q.tokens[t], int32_t(t), int32_t(s), t + 1 == q.tokens.size(), q.adapter);
    }
  }
  const auto logits = model.forward_logits(batch, together);
  ASSERT_EQ(logits.size(), seqs.size() * size_t(V));
  for (size_t s = 0; s < seqs.size(); ++s) {
    slm::KVCache alone(model.config(), 256);
    const auto want = model.forward_last_logits(seqs[s].tokens, alone, seqs[s].adapter);
    EXPECT_LT(relative_error(logits.subspan(s * size_t(V), size_t(V)), want), tolerance) << "sequence " << s;
  }
  // An adapter changes the answer: the comparison above can fail.
  slm::KVCache base(model.config(), 256);
  slm::KVCache adapted(model.config(), 256);
  EXPECT_GT(relative_error(model.forward_last_logits(seqs[0].tokens, base),
                           model.forward_last_logits(seqs[0].tokens, adapted, adapters[0].get())),
            2 * tolerance);
}

// f32: 1e-5 relative (summation order alone differs).
TEST_F(Engine, BatchedForwardEqualsEachSequenceAlone) { check_batched_forward(*model_, adapters_, 1e-5); }

// bf16 weights as the file holds them: the parity suite's bf16 bound (prefill
// chunks may round activations to bf16 on CPUs with bf16 dot products).
TEST_F(Engine, BatchedForwardEqualsEachSequenceAloneBf16) {
  const slm::Model bf16 = slm::Model::load(kModelDir);
  ASSERT_EQ(bf16.dtype(), slm::DType::BF16);
  check_batched_forward(bf16, adapters_, 1e-2);
}

// Blocks of 16 tokens scattered through the pool give what one contiguous block gives.
TEST_F(Engine, PagedCacheEqualsContiguous) {
  const auto tokens = prompt(150, 7);
  slm::KVCache contiguous(model_->config(), 200, slm::DType::F32, 200);
  slm::KVCache paged(model_->config(), 4096, slm::DType::F32, 16);
  // Another sequence takes blocks first, so sequence 1's blocks are not the first ones.
  model_->forward(std::span(tokens).first(40), paged, nullptr, 0);
  EXPECT_EQ(contiguous.block_count(), 1);
  for (size_t at : {size_t(0), size_t(100), size_t(101), size_t(149)}) {
    const size_t n = at == 0 ? 100 : 1;
    const auto want = model_->forward_last_logits(std::span(tokens).subspan(at, n), contiguous);
    const std::vector<float> w(want.begin(), want.end());
    const auto got = model_->forward_last_logits(std::span(tokens).subspan(at, n), paged, nullptr, 1);
    EXPECT_LT(relative_error(got, w), 1e-5) << at;
    if (at == 101) {  // skip ahead in both
      model_->forward(std::span(tokens).subspan(102, 47), contiguous);
      model_->forward(std::span(tokens).subspan(102, 47), paged, nullptr, 1);
    }
  }
  EXPECT_EQ(paged.length(1), 150);
}

struct Outcome {
  std::vector<int32_t> tokens;
  std::vector<std::vector<slm::TokenLogprob>> logprobs;
  slm::FinishReason reason;
  std::string text;
};

// Runs requests through one engine; `late` ones join after `late_after` steps.
std::map<int, Outcome> run_engine(const slm::Model& model, const slm::Tokenizer& tokenizer,
                                  const std::vector<slm::Request>& requests, const slm::EngineOptions& options,
                                  size_t late_from = SIZE_MAX, int late_after = 0, slm::Engine** out = nullptr) {
  slm::Engine engine(model, tokenizer, options);
  if (out) *out = &engine;
  std::map<int, Outcome> results;
  auto add = [&](size_t i) {
    slm::Request r = requests[i];
    r.on_done = [&results, i](const slm::GenerationResult& g) {
      results[int(i)] = {g.tokens, g.logprobs, g.finish_reason, g.text};
    };
    engine.add_request(std::move(r));
  };
  for (size_t i = 0; i < std::min(late_from, requests.size()); ++i) add(i);
  for (int s = 0; s < late_after; ++s) engine.step();
  for (size_t i = late_from; i < requests.size(); ++i) add(i);
  engine.run();
  EXPECT_EQ(engine.cache().free_blocks(), engine.cache().block_count()) << "every block is free at the end";
  return results;
}

void expect_same(const Outcome& got, const Outcome& want, const std::string& what) {
  EXPECT_EQ(got.tokens, want.tokens) << what;
  EXPECT_EQ(got.reason, want.reason) << what;
  ASSERT_EQ(got.logprobs.size(), want.logprobs.size()) << what;
  for (size_t t = 0; t < want.logprobs.size(); ++t) {
    for (size_t k = 0; k < want.logprobs[t].size(); ++k) {
      EXPECT_EQ(got.logprobs[t][k].id, want.logprobs[t][k].id) << what << " step " << t;
      EXPECT_NEAR(got.logprobs[t][k].logprob, want.logprobs[t][k].logprob, 1e-5) << what << " step " << t;
    }
  }
}

std::vector<slm::Request> mixed_requests(const std::vector<std::shared_ptr<const slm::Adapter>>& adapters) {
  std::vector<slm::Request> requests;
  const std::vector<int32_t> shared = [] {
    std::vector<int32_t> p;
    for (int i = 0; i < 150; ++i) p.push_back(static_cast<int32_t>(7 + (i * 53) % 4000));
    return p;
  }();
  for (int i = 0; i < 9; ++i) {
    slm::Request r;
    if (i < 2) {  // two requests sharing a long prefix
      r.prompt = shared;
      r.prompt.push_back(100 + i);
    } else {
      for (int t = 0; t < 3 + 23 * (i % 4); ++t) r.prompt.push_back(static_cast<int32_t>(9 + (t * 31 + i * 211) % 4000));
    }
    r.options.max_new_tokens = 6 + i;
    r.options.sampling.temperature = 0;
    r.options.logprobs = 3;
    r.adapter = i % 3 == 0 ? nullptr : adapters[size_t(i % 2)];
    requests.push_back(std::move(r));
  }
  return requests;
}

// Nine requests (lengths 1..~150, two adapters and none, two sharing a long
// prefix, three joining while the others decode) give each what it gives alone.
TEST_F(Engine, BatchOfRequestsEqualsEachAlone) {
  const auto requests = mixed_requests(adapters_);
  slm::EngineOptions options;
  options.kv_block_tokens = 16;
  options.max_batch_tokens = 64;  // long prompts go in chunks beside the decoding ones
  const auto together = run_engine(*model_, *tokenizer_, requests, options, 6, 3);
  ASSERT_EQ(together.size(), requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const slm::GenerationResult alone =
        slm::generate(*model_, *tokenizer_, requests[i].prompt, requests[i].options, {}, requests[i].adapter);
    expect_same(together.at(int(i)), {alone.tokens, alone.logprobs, alone.finish_reason, alone.text},
                "request " + std::to_string(i));
    EXPECT_EQ(together.at(int(i)).text, alone.text) << i;
  }
}

// The second request with the same 150-token start takes its cached blocks
// and still predicts exactly what recomputing them predicts.
TEST_F(Engine, PrefixReuseEqualsRecomputation) {
  auto requests = mixed_requests(adapters_);
  requests.resize(2);
  requests[1].adapter = requests[0].adapter;  // blocks are reused within one adapter only
  slm::EngineOptions options;
  options.kv_block_tokens = 16;
  options.max_sequences = 1;  // the second starts after the first has filled its blocks
  slm::EngineOptions no_reuse = options;
  no_reuse.prefix_caching = false;
  const auto reused = run_engine(*model_, *tokenizer_, requests, options);
  const auto recomputed = run_engine(*model_, *tokenizer_, requests, no_reuse);
  for (int i = 0; i < 2; ++i) expect_same(reused.at(i), recomputed.at(i), "request " + std::to_string(i));
}

// Reuse is counted: the second request skips 144 of its 151 prompt tokens (nine blocks of 16).
TEST_F(Engine, PrefixReuseSkipsTheSharedBlocks) {
  auto requests = mixed_requests(adapters_);
  requests[1].adapter = requests[0].adapter;
  slm::EngineOptions options;
  options.kv_block_tokens = 16;
  options.max_sequences = 1;
  slm::Engine engine(*model_, *tokenizer_, options);
  engine.add_request(requests[0]);
  engine.run();
  EXPECT_EQ(engine.cache().reused_tokens(), 0);
  engine.add_request(requests[1]);
  engine.run();
  EXPECT_EQ(engine.cache().reused_tokens(), 144);
}

// Keys computed with one adapter are never reused for another (or the base):
// the same 150-token start under another adapter computes its own blocks.
// Requests that arrive together with one prompt (n choices, one system
// prompt) compute its full blocks once: the others wait for that prefill
// and take its blocks, and each still gets what it gets alone.
TEST_F(Engine, RequestsArrivingTogetherComputeASharedPromptOnce) {
  std::vector<slm::Request> requests;
  for (int i = 0; i < 4; ++i) {
    slm::Request r;
    r.prompt = prompt(100, 6);
    if (i == 3) r.prompt.push_back(42);  // a different end is fine: the start is shared
    r.options.max_new_tokens = 5;
    r.options.sampling.temperature = 0;
    r.options.logprobs = 2;
    requests.push_back(std::move(r));
  }
  slm::EngineOptions options;
  options.kv_block_tokens = 16;
  slm::Engine engine(*model_, *tokenizer_, options);
  std::map<int, Outcome> together;
  for (size_t i = 0; i < requests.size(); ++i) {
    slm::Request r = requests[i];
    r.on_done = [&together, i](const slm::GenerationResult& g) {
      together[int(i)] = {g.tokens, g.logprobs, g.finish_reason, g.text};
    };
    engine.add_request(std::move(r));
  }
  engine.run();
  // Six full blocks of 16 positions for each of the three later requests.
  EXPECT_EQ(engine.cache().reused_tokens(), 3 * 96);
  slm::EngineOptions no_reuse = options;
  no_reuse.prefix_caching = false;
  const auto alone = run_engine(*model_, *tokenizer_, requests, no_reuse);
  for (int i = 0; i < 4; ++i) expect_same(together.at(i), alone.at(i), "request " + std::to_string(i));
}

TEST_F(Engine, PrefixIsReusedOnlyUnderTheSameAdapter) {
  auto requests = mixed_requests(adapters_);
  requests.resize(2);
  requests[0].adapter = adapters_[0];
  requests[1].adapter = adapters_[1];
  slm::EngineOptions options;
  options.kv_block_tokens = 16;
  options.max_sequences = 1;
  slm::Engine engine(*model_, *tokenizer_, options);
  std::vector<slm::GenerationResult> results;
  for (auto& r : requests) {
    r.on_done = [&](const slm::GenerationResult& g) { results.push_back(g); };
    engine.add_request(r);
  }
  engine.run();
  EXPECT_EQ(engine.cache().reused_tokens(), 0);
  const slm::GenerationResult alone =
      slm::generate(*model_, *tokenizer_, requests[1].prompt, requests[1].options, {}, requests[1].adapter);
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[1].tokens, alone.tokens);
}

// A request cancelled mid-stream frees its blocks at once and changes nothing for the others.
TEST_F(Engine, CancelLeavesTheOthersUnchanged) {
  auto requests = mixed_requests(adapters_);
  requests.resize(4);
  for (auto& r : requests) r.options.max_new_tokens = 12;
  slm::EngineOptions options;
  options.kv_block_tokens = 16;
  const auto without = [&] {
    std::vector<slm::Request> others{requests[0], requests[1], requests[3]};
    auto r = run_engine(*model_, *tokenizer_, others, options);
    return std::vector<Outcome>{r.at(0), r.at(1), r.at(2)};
  }();
  slm::Engine engine(*model_, *tokenizer_, options);
  std::map<int, Outcome> results;
  slm::RequestId victim = -1;
  int pieces = 0;
  int64_t free_before = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    slm::Request r = requests[i];
    r.on_done = [&results, i](const slm::GenerationResult& g) {
      results[int(i)] = {g.tokens, g.logprobs, g.finish_reason, g.text};
    };
    if (i == 2) {
      r.on_text = [&](std::string_view) {
        if (++pieces == 2) {
          free_before = engine.cache().free_blocks();
          engine.cancel(victim);
          EXPECT_GT(engine.cache().free_blocks(), free_before) << "its blocks are free at once";
        }
      };
    }
    const slm::RequestId id = engine.add_request(std::move(r));
    if (i == 2) victim = id;
  }
  engine.run();
  ASSERT_GE(pieces, 2) << "the cancelled request streamed text before the cancel";
  EXPECT_EQ(results.at(2).reason, slm::FinishReason::Cancelled);
  expect_same(results.at(0), without[0], "request 0");
  expect_same(results.at(1), without[1], "request 1");
  expect_same(results.at(3), without[2], "request 3");
}

// A pool that holds a few requests at a time queues the rest; every one
// completes with what it gives alone.
TEST_F(Engine, FullPoolQueuesThenCompletesEveryRequest) {
  auto requests = mixed_requests(adapters_);
  slm::EngineOptions options;
  options.kv_block_tokens = 16;
  options.kv_cache_tokens = 2 * 176;
  options.prefix_caching = false;
  slm::Engine* engine = nullptr;
  int64_t most_running = 0, most_waiting = 0;
  for (auto& r : requests) {
    r.on_text = [&](std::string_view) {
      most_running = std::max(most_running, engine->running());
      most_waiting = std::max(most_waiting, engine->waiting());
    };
  }
  const auto results = run_engine(*model_, *tokenizer_, requests, options, SIZE_MAX, 0, &engine);
  ASSERT_EQ(results.size(), requests.size());
  EXPECT_LT(most_running, int64_t(requests.size()));
  EXPECT_GT(most_waiting, 0) << "some requests waited for blocks";
  for (size_t i = 0; i < requests.size(); ++i) {
    const slm::GenerationResult alone =
        slm::generate(*model_, *tokenizer_, requests[i].prompt, requests[i].options, {}, requests[i].adapter);
    expect_same(results.at(int(i)), {alone.tokens, alone.logprobs, alone.finish_reason, alone.text},
                "request " + std::to_string(i));
  }
}

// Too long for the context, or for the whole pool: that request fails, the engine keeps serving.
TEST_F(Engine, RequestThatCannotFitFailsAlone) {
  slm::EngineOptions options;
  options.kv_cache_tokens = 64;
  options.kv_block_tokens = 16;
  slm::Engine engine(*model_, *tokenizer_, options);
  slm::Request too_long;
  too_long.prompt = prompt(int(model_->config().max_position_embeddings) + 1, 1);
  try {
    engine.add_request(too_long);
    FAIL() << "accepted a prompt longer than the context";
  } catch (const slm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("context"), std::string::npos) << e.what();
  }
  slm::Request too_big;
  too_big.prompt = prompt(60, 2);
  too_big.options.max_new_tokens = 10;
  try {
    engine.add_request(too_big);
    FAIL() << "accepted a request larger than the pool";
  } catch (const slm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("whole pool holds 64"), std::string::npos) << e.what();
  }
  slm::Request fits;
  fits.prompt = prompt(20, 3);
  fits.options = greedy(5);
  slm::GenerationResult done;
  fits.on_done = [&](const slm::GenerationResult& g) { done = g; };
  engine.add_request(fits);
  engine.run();
  EXPECT_EQ(done.tokens.size(), 5u);
}

// A prompt that fills the context ends with finish reason "context".
TEST_F(Engine, ContextFullIsItsOwnFinishReason) {
  const int64_t context = model_->config().max_position_embeddings;
  const slm::GenerationResult r = slm::generate(*model_, *tokenizer_, prompt(int(context - 3), 4), greedy(50));
  EXPECT_EQ(r.finish_reason, slm::FinishReason::Context);
  EXPECT_EQ(r.tokens.size(), 4u);  // positions context-3 .. context-1 forwarded, one more sampled
}

}  // namespace
