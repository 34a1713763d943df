// Chat templates: the Jinja subset Hugging Face chat templates use, lexed,
// parsed to a small AST and run by a tree-walking interpreter (jinja/).
// Whitespace handling follows transformers (trim_blocks, lstrip_blocks, and
// the single trailing newline of the source dropped); values follow
// @huggingface/jinja where it agrees with Python Jinja, and Python Jinja
// where it does not (docs/chat-templates.md lists those places).
#include <slm/chat_template.h>
#include <slm/error.h>
#include <slm/tokenizer.h>

#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/filters.h"
#include "tokenizer/jinja/interpreter.h"
#include "tokenizer/jinja/lexer.h"
#include "tokenizer/jinja/parser.h"
#include "tokenizer/jinja/value.h"
#include "tokenizer/unicode.h"

#include <string>
#include <string_view>

namespace slm {

namespace {

// Errors carry line:column; the lexer, parser and interpreter know only the
// byte offset.
std::string location(std::string_view source, size_t pos) {
  size_t line = 1, column = 1;
  for (size_t i = 0; i < pos && i < source.size(); ++i) {
    if (source[i] == '\n') {
      ++line;
      column = 1;
    } else if ((static_cast<unsigned char>(source[i]) & 0xC0) != 0x80) {
      ++column;  // columns count characters, not bytes
    }
  }
  return std::to_string(line) + ":" + std::to_string(column);
}

}  // namespace

struct ChatTemplate::Program {
  std::string source;
  jinja::Body body;
};

ChatTemplate::ChatTemplate(std::string_view source, std::string origin) : origin_(std::move(origin)) {
  auto program = std::make_unique<Program>();
  program->source = tok::sanitize_utf8(source);
  // As Jinja (keep_trailing_newline=False): one newline at the very end is not output.
  if (program->source.ends_with('\n')) program->source.pop_back();
  try {
    program->body = jinja::parse(jinja::lex(program->source));
  } catch (const jinja::TemplateError& e) {
    fail(origin_, ":", location(program->source, e.pos), ": ", e.message);
  }
  program_ = std::move(program);
}

ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;
ChatTemplate::~ChatTemplate() = default;

std::string ChatTemplate::render(const ChatJson& context) const {
  if (!context.is_object()) fail(origin_, ": the render context must be a JSON object");
  jinja::Scope globals;
  jinja::add_globals(globals);
  try {
    for (auto it = context.begin(); it != context.end(); ++it) globals.vars[it.key()] = jinja::from_json(it.value());
    return jinja::render(program_->body, globals);
  } catch (const jinja::TemplateError& e) {
    if (e.pos == jinja::kNoPosition) fail(origin_, ": the render context: ", e.message);
    fail(origin_, ":", location(program_->source, e.pos), ": ", e.message);
  }
}

ChatJson chat_template_context(const Tokenizer& tokenizer, const ChatJson& messages, bool add_generation_prompt) {
  ChatJson context = ChatJson::object();
  context["messages"] = messages;
  context["add_generation_prompt"] = add_generation_prompt;
  for (const char* name : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
    if (const auto token = tokenizer.special_token(name)) context[name] = *token;
  }
  return context;
}

}  // namespace slm
