// What the Trainer tests share: tiny random models written by
// create_random_model, a fixed batch with masked labels, and the batch's loss
// and logits computed by the inference forward (Model::forward), which the
// training forward is held to.
#pragma once

#include <slm/model.h>
#include <slm/random.h>
#include <slm/train.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

class TrainerTest : public ::testing::Test {
 protected:
  static slm::Model tiny_model(const std::string& arch, double init_std = 0.2, slm::LoadOptions load = {}) {
    return slm::Model::load(tiny_model_dir(arch, init_std), load);
  }
  static std::filesystem::path tiny_model_dir(const std::string& arch, double init_std = 0.2) {
    slm::ModelConfig c;
    c.model_type = arch;
    c.hidden_size = 24;
    c.intermediate_size = 40;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 6;
    c.vocab_size = 50;
    c.max_position_embeddings = 64;
    c.rope_theta = 10000;
    c.qk_norm = arch == "qwen3";
    c.attention_bias = arch == "qwen2";
    const auto dir = work_dir() / (arch + std::to_string(init_std));
    slm::CreateOptions options;
    options.init_std = init_std;
    slm::create_random_model(slm::ModelConfig::from_json(c.to_json(), "tiny"), options, dir);
    return dir;
  }
  static std::filesystem::path work_dir() { return std::filesystem::path(SLM_BINARY_DIR) / "tests" / "train_tiny"; }
  static slm::TrainBatch batch() {
    slm::TrainBatch b;
    b.batch = 2;
    b.seq = 9;
    slm::Rng rng(11);
    for (int i = 0; i < 18; ++i) b.tokens.push_back(static_cast<int32_t>(rng.next() % 50));
    b.labels = b.tokens;
    b.labels[0] = b.labels[1] = -100;
    return b;
  }
  // The logits of every position of the batch, [batch·seq, vocab], by Model::forward.
  // Every sequence of the batch in one inference forward (sequence s is the
  // KV cache's sequence s), every row's logits.
  static std::vector<float> forward_logits(const slm::Model& model, const slm::TrainBatch& b,
                                           const slm::Adapter* adapter = nullptr) {
    slm::KVCache cache(model.config(), b.batch * b.seq, slm::DType::F32, 16);
    slm::Batch batch;
    for (int64_t s = 0; s < b.batch; ++s) {
      for (int64_t t = 0; t < b.seq; ++t) {
        batch.add(b.tokens[static_cast<size_t>(s * b.seq + t)], static_cast<int32_t>(t), static_cast<int32_t>(s), true,
                  adapter);
      }
    }
    const auto logits = model.forward_logits(batch, cache);
    return {logits.begin(), logits.end()};
  }
  // The summed next-token loss over the batch's counted positions, by Model::forward.
  static double forward_loss(const slm::Model& model, const slm::TrainBatch& b, const slm::Adapter* adapter = nullptr) {
    const int64_t V = model.config().vocab_size;
    const std::vector<float> logits = forward_logits(model, b, adapter);
    double loss = 0;
    for (int64_t r = 0; r + 1 < b.batch * b.seq; ++r) {
      const int32_t target = b.labels[static_cast<size_t>(r + 1)];
      if ((r + 1) % b.seq == 0 || target < 0) continue;
      const float* row = logits.data() + r * V;
      double m = row[0], sum = 0;
      for (int64_t c = 0; c < V; ++c) m = std::max(m, double(row[c]));
      for (int64_t c = 0; c < V; ++c) sum += std::exp(row[c] - m);
      loss += m + std::log(sum) - row[target];
    }
    return loss;
  }
};
