// What /metrics reports, in Prometheus' text format: requests by endpoint and
// status, prompt and generated tokens, and latency histograms. The gauges
// (running and queued sequences, KV cache use) are read when scraped.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace slm::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // The _bucket, _sum and _count lines of metric `name`.
  void write(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket; write() adds them up
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  void request_done(const std::string& path, int status);
  void tokens(int64_t prompt, int64_t generated);
  void time_to_first_token(double seconds);
  void time_per_output_token(double seconds);

  struct Gauges {
    int64_t running = 0, waiting = 0, kv_blocks_used = 0, kv_blocks = 0, reused_tokens = 0, adapters = 0;
  };
  std::string prometheus_text(const Gauges& gauges) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  int64_t prompt_tokens_ = 0, generated_tokens_ = 0;
  Histogram ttft_, tpot_;
};

}  // namespace slm::serve
