// slm bench: prefill and decode speed of a model on this machine.
#include "commands.h"
#include "common.h"

#include <slm/error.h>
#include <slm/machine.h>
#include <slm/random.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <iostream>

namespace slm::cli {

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Decode steps of `sequences` sequences at once, each after a prompt of
// depth + 1 tokens: returns the aggregate tokens/s.
double concurrent_decode_rate(const Model& model, int64_t sequences, int64_t depth, int64_t steps, DType kv_dtype,
                              const std::vector<int32_t>& tokens) {
  const ModelConfig& c = model.config();
  constexpr int64_t kBlock = 16;
  KVCache cache(c, sequences * ((depth + steps + kBlock) / kBlock) * kBlock, kv_dtype, kBlock);
  Batch batch;
  for (int64_t s = 0; s < sequences; ++s) {
    for (int64_t t = 0; t <= depth; ++t) {
      batch.add(tokens[static_cast<size_t>((t + s) % static_cast<int64_t>(tokens.size()))], static_cast<int32_t>(t),
                static_cast<int32_t>(s), t == depth);
    }
  }
  std::span<const float> logits = model.forward_logits(batch, cache);
  const double t0 = now_seconds();
  for (int64_t step = 0; step < steps; ++step) {
    std::vector<int32_t> next(static_cast<size_t>(sequences));
    for (int64_t s = 0; s < sequences; ++s) {
      const auto row = logits.subspan(static_cast<size_t>(s * c.vocab_size), static_cast<size_t>(c.vocab_size));
      next[static_cast<size_t>(s)] = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
    }
    batch.clear();
    for (int64_t s = 0; s < sequences; ++s) {
      batch.add(next[static_cast<size_t>(s)], static_cast<int32_t>(depth + 1 + step), static_cast<int32_t>(s), true);
    }
    logits = model.forward_logits(batch, cache);
  }
  return static_cast<double>(sequences * steps) / (now_seconds() - t0);
}

}  // namespace

int run_bench(int argc, char** argv) {
  CLI::App app{"Measure prefill and decode speed (tokens/s) and the weight bandwidth decode achieves.", "bench"};
  ModelOptions model_options;
  add_model_options(app, model_options);
  bool probe = false;
  app.add_flag("--probe", probe, "also measure the machine's read bandwidth and peak matrix throughput");
  int64_t prompt_len = 128, decode_len = 64, depth = 0, repetitions = 3;
  std::string output_format = "text";
  app.add_option("-p,--prompt-tokens", prompt_len, "prefill length")->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_option("-n,--decode-tokens", decode_len, "tokens decoded one at a time")->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_option("--depth", depth, "tokens already in the KV cache when decoding starts")->check(non_negative_number());
  app.add_option("-r,--repetitions", repetitions, "runs of each measurement (the median is reported)")->check(CLI::Range(1, 100));
  app.add_option("--output-format", output_format, "text or json")->check(CLI::IsMember({"text", "json"}));
  std::vector<int64_t> concurrency;
  app.add_option("--concurrency", concurrency,
                 "also decode this many sequences together (comma-separated levels, e.g. 1,4,16,64): aggregate and "
                 "per-sequence tokens/s")
      ->delimiter(',')
      ->check(CLI::Range(int64_t{1}, int64_t{4096}));

  return run_command(app, argc, argv, [&] {
    if (model_options.threads > 0) set_num_threads(model_options.threads);
    nlohmann::json limits_json = nullptr;
    std::optional<MachineLimits> limits;
    if (probe) {
      limits = probe_machine();
      limits_json = {{"threads", limits->threads},
                     {"isa", limits->isa},
                     {"read_gb_per_s", limits->read_gb_per_s},
                     {"f32_fma_gflops", limits->f32_fma_gflops},
                     {"bf16_dot_gflops", limits->bf16_dot_gflops ? nlohmann::json(*limits->bf16_dot_gflops) : nullptr},
                     {"int8_dot_gops", limits->int8_dot_gops ? nlohmann::json(*limits->int8_dot_gops) : nullptr},
                     {"amx_bf16_gflops", limits->amx_bf16_gflops ? nlohmann::json(*limits->amx_bf16_gflops) : nullptr},
                     {"amx_int8_gops", limits->amx_int8_gops ? nlohmann::json(*limits->amx_int8_gops) : nullptr},
                     {"int8_gemm", limits->int8_gemm},
                     {"sgemm_gflops", limits->sgemm_gflops}};
      if (output_format == "text") {
        std::printf("machine    %d threads, %s kernels: read %.1f GB/s, f32 FMA peak %.0f GFLOP/s, ", limits->threads,
                    limits->isa.c_str(), limits->read_gb_per_s, limits->f32_fma_gflops);
        if (limits->bf16_dot_gflops) std::printf("bf16 dot peak %.0f GFLOP/s, ", *limits->bf16_dot_gflops);
        if (limits->int8_dot_gops) std::printf("int8 dot peak %.0f GOP/s, ", *limits->int8_dot_gops);
        if (limits->amx_bf16_gflops) std::printf("AMX bf16 peak %.0f GFLOP/s, ", *limits->amx_bf16_gflops);
        if (limits->amx_int8_gops) std::printf("AMX int8 peak %.0f GOP/s, ", *limits->amx_int8_gops);
        std::printf("OpenBLAS sgemm %.0f GFLOP/s\n", limits->sgemm_gflops);
      }
    }
    reset_peak_rss();  // the probe's buffers are not the model's
    const double load_start = now_seconds();
    Model model = load_model(model_options);
    const double load_seconds = now_seconds() - load_start;
    const ModelConfig& c = model.config();
    const int64_t capacity = std::max(prompt_len, depth + decode_len + 1);
    if (capacity > c.max_position_embeddings) {
      fail("the benchmark needs ", capacity, " positions but the model's context is ", c.max_position_embeddings);
    }
    Rng rng(1234);
    std::vector<int32_t> tokens(static_cast<size_t>(std::max(prompt_len, depth + 1)));
    for (int32_t& t : tokens) t = static_cast<int32_t>(rng.next() % static_cast<uint64_t>(c.vocab_size));
    KVCache cache(c, capacity, *parse_dtype(model_options.kv_dtype));

    // The first pass is the time to first token of a fresh process (model
    // loaded, nothing warm but the page cache); it is not counted below.
    cache.clear();
    model.forward_last_logits(std::span(tokens).first(static_cast<size_t>(prompt_len)), cache);
    const double first_token_seconds = now_seconds() - load_start;

    std::vector<double> prefill, decode;
    for (int64_t r = 0; r < repetitions; ++r) {
      cache.clear();
      const double t0 = now_seconds();
      model.forward_last_logits(std::span(tokens).first(static_cast<size_t>(prompt_len)), cache);
      prefill.push_back(static_cast<double>(prompt_len) / (now_seconds() - t0));

      cache.clear();
      std::span<const float> logits = model.forward_last_logits(std::span(tokens).first(static_cast<size_t>(depth + 1)), cache);
      const double t1 = now_seconds();
      for (int64_t i = 0; i < decode_len; ++i) {
        const int32_t next[1] = {static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin())};
        logits = model.forward_last_logits(next, cache);
      }
      decode.push_back(static_cast<double>(decode_len) / (now_seconds() - t1));
    }
    const double prefill_rate = median(prefill), decode_rate = median(decode);
    const double weight_gb = static_cast<double>(model.weight_bytes()) / 1e9;
    // Matrix-product work of one prefill token: every linear layer once (the
    // lm_head runs for the last token only).
    const double q = static_cast<double>(c.num_attention_heads * c.head_dim), kv = static_cast<double>(c.num_key_value_heads * c.head_dim);
    const double H = static_cast<double>(c.hidden_size), I = static_cast<double>(c.intermediate_size);
    const double flops_per_token = 2.0 * static_cast<double>(c.num_hidden_layers) * (H * (q + 2 * kv) + q * H + 3 * H * I);
    const double prefill_gflops = flops_per_token * prefill_rate / 1e9;
    nlohmann::json out = {{"model_type", c.model_type},
                                {"parameters", c.parameter_count()},
                                {"dtype", dtype_name(model.dtype())},
                                {"kv_dtype", model_options.kv_dtype},
                                {"threads", num_threads()},
                                {"prompt_tokens", prompt_len},
                                {"decode_tokens", decode_len},
                                {"depth", depth},
                                {"prefill_tokens_per_s", prefill_rate},
                                {"decode_tokens_per_s", decode_rate},
                                {"decode_weight_gb_per_s", decode_rate * weight_gb},
                                {"prefill_gflops", prefill_gflops},
                                {"load_seconds", load_seconds},
                                {"first_token_seconds", first_token_seconds},
                                {"peak_rss_mib", peak_rss_mib()}};
    double peak_gflops = 0;
    if (limits) {
      // The peak of the instructions the prompt's products run on.
      peak_gflops = limits->f32_fma_gflops;
      if (model.dtype() == DType::BF16 && limits->bf16_dot_gflops) peak_gflops = *limits->bf16_dot_gflops;
      if (model.dtype() == DType::BF16 && limits->amx_bf16_gflops) peak_gflops = *limits->amx_bf16_gflops;
      if (is_quantized(model.dtype()) && limits->int8_gemm && limits->int8_dot_gops) peak_gflops = *limits->int8_dot_gops;
      if (is_quantized(model.dtype()) && limits->amx_int8_gops) peak_gflops = *limits->amx_int8_gops;
      out["machine"] = limits_json;
      out["decode_bandwidth_percent"] = 100.0 * decode_rate * weight_gb / limits->read_gb_per_s;
      out["prefill_peak_percent"] = peak_gflops > 0 ? nlohmann::json(100.0 * prefill_gflops / peak_gflops) : nullptr;
    }
    nlohmann::json levels = nlohmann::json::array();
    for (int64_t level : concurrency) {
      std::vector<double> rates;
      for (int64_t r = 0; r < repetitions; ++r) {
        rates.push_back(concurrent_decode_rate(model, level, depth, decode_len, *parse_dtype(model_options.kv_dtype),
                                               tokens));
      }
      const double aggregate = median(rates);
      levels.push_back({{"concurrency", level},
                        {"aggregate_decode_tokens_per_s", aggregate},
                        {"per_sequence_decode_tokens_per_s", aggregate / static_cast<double>(level)}});
    }
    if (!concurrency.empty()) out["concurrency"] = levels;
    if (output_format == "json") {
      std::cout << out.dump() << "\n";
    } else {
      std::printf("model      %s, %.1f M parameters, %s weights (%.1f MB), %d threads\n", c.model_type.c_str(),
                  static_cast<double>(c.parameter_count()) / 1e6, dtype_name(model.dtype()).data(), weight_gb * 1e3,
                  num_threads());
      std::printf("prefill    %lld tokens: %.1f tokens/s (%.0f GFLOP/s", static_cast<long long>(prompt_len), prefill_rate,
                  prefill_gflops);
      if (peak_gflops > 0) std::printf(", %.0f%% of peak", 100.0 * prefill_gflops / peak_gflops);
      std::printf(")\ndecode     %lld tokens at depth %lld: %.1f tokens/s (weights streamed at %.1f GB/s",
                  static_cast<long long>(decode_len), static_cast<long long>(depth), decode_rate, decode_rate * weight_gb);
      if (limits) std::printf(", %.0f%% of read bandwidth", 100.0 * decode_rate * weight_gb / limits->read_gb_per_s);
      std::printf(")\n");
      std::printf("start      model loaded in %.3f s, first token of a %lld-token prompt after %.3f s\n", load_seconds,
                  static_cast<long long>(prompt_len), first_token_seconds);
      for (const auto& level : levels) {
        std::printf("batch      %3lld sequences decoding together: %.1f tokens/s in all, %.1f per sequence\n",
                    static_cast<long long>(level["concurrency"].get<int64_t>()),
                    level["aggregate_decode_tokens_per_s"].get<double>(),
                    level["per_sequence_decode_tokens_per_s"].get<double>());
      }
      std::printf("peak RSS   %.1f MiB\n", peak_rss_mib());
    }
    return 0;
  });
}

}  // namespace slm::cli
