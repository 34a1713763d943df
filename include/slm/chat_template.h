// Chat templates: the Jinja templates Hugging Face models carry in
// tokenizer_config.json ("chat_template"), rendered as transformers'
// apply_chat_template renders them (trim_blocks and lstrip_blocks on). The
// reference is @huggingface/jinja; docs/chat-templates.md lists what is
// supported and where slm follows Python Jinja instead.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>

namespace slm {

// Objects keep their key order (tojson of a tool schema must print the keys
// as written).
using ChatJson = nlohmann::ordered_json;

class Tokenizer;

class ChatTemplate {
 public:
  // Parses `source` once. `origin` names it in every error, e.g.
  // "DIR/tokenizer_config.json: chat_template"; errors carry line:column.
  ChatTemplate(std::string_view source, std::string origin);
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;
  ~ChatTemplate();

  // `context` is a JSON object whose members become the template's
  // variables (messages, add_generation_prompt, bos_token, tools, ...).
  // A failure, raise_exception(msg) included, is an slm::Error naming the
  // origin and the line:column where it happened.
  std::string render(const ChatJson& context) const;

  const std::string& origin() const { return origin_; }

 private:
  struct Program;
  std::unique_ptr<const Program> program_;
  std::string origin_;
};

// The variables apply_chat_template passes: `messages`,
// `add_generation_prompt` and the tokenizer's special tokens (bos_token,
// eos_token, unk_token, pad_token, as strings) when it has them.
ChatJson chat_template_context(const Tokenizer& tokenizer, const ChatJson& messages, bool add_generation_prompt);

}  // namespace slm
