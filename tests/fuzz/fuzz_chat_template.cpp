// libFuzzer target: the chat-template engine on arbitrary template text
// (templates come from untrusted model folders). The contract: parsing and
// rendering over a fixed conversation either throw slm::Error or return a
// render; never a crash, a hang or unbounded memory (the engine bounds the
// text it builds and the loop iterations it runs).
#include <slm/chat_template.h>
#include <slm/error.h>

#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const slm::ChatJson context = slm::ChatJson::parse(R"({
    "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image"}]},
      {"role": "assistant", "content": "<think>x</think>Hello", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": {"a": 1, "b": [true, null, 2.5]}}}]},
      {"role": "tool", "content": "{\"ok\": 1}"}
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>", "enable_thinking": false
  })");
  const std::string source(reinterpret_cast<const char*>(data), size);
  try {
    const slm::ChatTemplate chat_template(source, "fuzz");
    (void)chat_template.render(context);
  } catch (const slm::Error&) {
  }
  return 0;
}
