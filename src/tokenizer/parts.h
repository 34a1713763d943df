// A long text encoded in parts, one thread a part: how many parts, and
// running them. Where a text may be cut is each stage's own business (the
// leading split pattern's scan in tokenizer.cpp, the "▁" boundaries in
// bpe.cpp); this is what they share.
#pragma once

#include "tokenizer/function_ref.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string_view>
#include <thread>
#include <vector>

namespace slm::tok {

// A part is at least this long: shorter ones cost more to start than they save.
inline constexpr size_t kPartBytes = 64 << 10;

// How many parts a text of `bytes` is cut into on up to `threads` threads.
inline size_t parts_for(size_t bytes, int threads) {
  return threads > 1 ? std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(threads), bytes / kPartBytes)) : 1;
}

// Where to cut `text` into up to `parts_wanted` parts, each after a run of
// newlines near an even share: the parts' starts, 0 first, then text.size().
inline std::vector<size_t> cuts_after_newlines(std::string_view text, size_t parts_wanted) {
  std::vector<size_t> cuts{0};
  for (size_t k = 1; k < parts_wanted; ++k) {
    size_t cut = text.find('\n', k * text.size() / parts_wanted);
    if (cut == std::string_view::npos) break;
    while (cut < text.size() && text[cut] == '\n') ++cut;
    if (cut >= text.size()) break;
    if (cut > cuts.back()) cuts.push_back(cut);
  }
  cuts.push_back(text.size());
  return cuts;
}

// Runs part(0) .. part(parts - 1), part 0 on the calling thread and each
// other on a thread of its own; once all are done, rethrows the first error.
inline void run_parts(size_t parts, FunctionRef<void(size_t)> part) {
  std::vector<std::exception_ptr> errors(parts);
  auto run = [&](size_t k) {
    try {
      part(k);
    } catch (...) {
      errors[k] = std::current_exception();
    }
  };
  std::vector<std::thread> workers;
  workers.reserve(parts);
  for (size_t k = 1; k < parts; ++k) workers.emplace_back(run, k);
  run(0);
  for (std::thread& worker : workers) worker.join();
  for (const std::exception_ptr& error : errors) {
    if (error) std::rethrow_exception(error);
  }
}

// encode(k, ids) for each part as run_parts runs them, each into a list of
// its own, and those lists appended to `out` in order.
inline void encode_parts(size_t parts, FunctionRef<void(size_t, std::vector<int32_t>&)> encode,
                         std::vector<int32_t>& out) {
  std::vector<std::vector<int32_t>> ids(parts);
  run_parts(parts, [&](size_t k) { encode(k, ids[k]); });
  for (const std::vector<int32_t>& part : ids) out.insert(out.end(), part.begin(), part.end());
}

}  // namespace slm::tok
