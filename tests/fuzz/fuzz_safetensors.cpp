// libFuzzer target: SafetensorsFile::parse_header on arbitrary bytes. The
// contract: either an slm::Error, or entries that all lie inside the data
// section, do not overlap and hold exactly shape × dtype bytes. Anything else
// (another exception, a crash, a sanitizer report) is a finding.
#include "io/safetensors.h"

#include <slm/error.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::map<std::string, std::string> metadata;
  std::map<std::string, slm::TensorEntry> entries;
  try {
    entries = slm::SafetensorsFile::parse_header(data, size, "fuzz.safetensors", &metadata);
  } catch (const slm::Error&) {
    return 0;
  }
  uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = (header << 8) | data[i];
  const uint64_t data_size = size - 8 - header;
  std::vector<std::pair<size_t, size_t>> ranges;
  for (const auto& [name, e] : entries) {
    int64_t numel = 1;
    for (int64_t d : e.shape) {
      if (d < 0) std::abort();
      numel *= d;
    }
    if (e.begin > e.end || e.end > data_size) std::abort();
    if (e.end - e.begin != slm::dtype_bytes(e.dtype, numel)) std::abort();
    ranges.emplace_back(e.begin, e.end);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) std::abort();
  }
  return 0;
}
