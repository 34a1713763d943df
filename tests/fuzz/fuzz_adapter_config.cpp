// libFuzzer target: PeftLoraConfig::from_json (adapter_config.json) on
// arbitrary text. The contract: either an slm::Error, or a config an adapter
// can be built from (a positive rank, a finite positive alpha, a dropout
// probability in [0, 1), at least one target module) whose to_json() reads
// back to the same config.
#include <slm/error.h>

#include "io/peft.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  slm::PeftLoraConfig c;
  try {
    c = slm::PeftLoraConfig::from_json(text, "fuzz/adapter_config.json");
  } catch (const slm::Error&) {
    return 0;
  }
  if (c.r <= 0 || !(c.lora_alpha > 0) || !std::isfinite(c.lora_alpha)) std::abort();
  if (!(c.lora_dropout >= 0) || !(c.lora_dropout < 1) || c.target_modules.empty()) std::abort();
  const slm::PeftLoraConfig again = slm::PeftLoraConfig::from_json(c.to_json(), "fuzz/round-trip");
  if (again.r != c.r || again.lora_alpha != c.lora_alpha || again.lora_dropout != c.lora_dropout ||
      again.target_modules != c.target_modules || again.base_model_name_or_path != c.base_model_name_or_path) {
    std::abort();
  }
  return 0;
}
