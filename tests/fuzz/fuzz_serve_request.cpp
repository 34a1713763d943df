// libFuzzer target: an HTTP request body as slm serve reads it (JSON, then
// parse_completion_request for both endpoints). The contract: either a
// RequestError with an HTTP status of 4xx, or a request within the limits the
// server relies on.
#include "serve/request.h"

#include <cstdint>
#include <cstdlib>
#include <string>

namespace {

void check(const slm::ChatJson& body, slm::serve::Endpoint endpoint) {
  slm::serve::CompletionRequest r;
  try {
    r = slm::serve::parse_completion_request(body, endpoint);
  } catch (const slm::serve::RequestError& e) {
    if (e.status() < 400 || e.status() >= 500) std::abort();
    return;
  }
  if (r.n < 1 || r.n > 128 || r.top_logprobs < 0 || r.top_logprobs > 20) std::abort();
  if (r.max_tokens && *r.max_tokens < 0) std::abort();
  if (r.temperature && !(*r.temperature >= 0 && *r.temperature <= 2)) std::abort();
  if (r.top_p && !(*r.top_p > 0 && *r.top_p <= 1)) std::abort();
  if (r.top_k && *r.top_k < 0) std::abort();
  if (endpoint == slm::serve::Endpoint::Chat) {
    if (r.messages.empty()) std::abort();
    for (const auto& m : r.messages) {
      if (!m["role"].is_string() || !m["content"].is_string()) std::abort();
    }
  } else if (r.prompts.empty()) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const slm::ChatJson body = slm::ChatJson::parse(data, data + size, nullptr, false);
  if (body.is_discarded()) return 0;
  check(body, slm::serve::Endpoint::Chat);
  check(body, slm::serve::Endpoint::Completion);
  return 0;
}
