// libFuzzer target: GgufFile::parse on arbitrary bytes. The contract: either
// an slm::Error, or metadata and tensor infos whose every tensor lies inside
// the data section, aligned, not overlapping another, holding exactly its
// type × dimensions. Anything else (another exception, a crash, a sanitizer
// report, an allocation past the input's size) is a finding.
#include "io/gguf.h"

#include <slm/error.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <utility>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const slm::GgufFile f = slm::GgufFile::parse(data, size, "fuzz.gguf");
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (const slm::GgufTensorInfo& t : f.tensors()) {
      const auto traits = slm::ggml_type_traits(t.type);
      if (!traits || t.offset % f.alignment() != 0) std::abort();
      if (t.bytes != t.elements() / static_cast<uint64_t>(traits->block_elements) * traits->block_bytes) std::abort();
      const uint8_t* begin = f.tensor_data(t);
      if (begin < data || begin + t.bytes > data + size) std::abort();
      ranges.emplace_back(t.offset, t.offset + t.bytes);
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i) {
      if (ranges[i].first < ranges[i - 1].second) std::abort();
    }
  } catch (const slm::Error&) {
  }
  return 0;
}
