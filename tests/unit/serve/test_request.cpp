// Reading OpenAI request bodies: every field lands where the engine reads it,
// and every wrong one is a 400 naming it.
#include "serve/request.h"

#include <gtest/gtest.h>

namespace {

using slm::ChatJson;
using slm::serve::CompletionRequest;
using slm::serve::Endpoint;
using slm::serve::parse_completion_request;
using slm::serve::RequestError;

CompletionRequest chat(const std::string& body) { return parse_completion_request(ChatJson::parse(body), Endpoint::Chat); }
CompletionRequest completion(const std::string& body) {
  return parse_completion_request(ChatJson::parse(body), Endpoint::Completion);
}

// The error a body gets: its status and the field it names.
std::pair<int, std::string> error_of(const std::string& body, Endpoint endpoint = Endpoint::Chat) {
  try {
    parse_completion_request(ChatJson::parse(body), endpoint);
  } catch (const RequestError& e) {
    return {e.status(), e.param()};
  }
  return {0, "no error"};
}

TEST(ServeRequest, ChatFieldsReachTheRequest) {
  const CompletionRequest r = chat(R"({
    "model": "tuned", "messages": [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}],
    "max_completion_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
    "frequency_penalty": 0.5, "presence_penalty": -0.25, "repetition_penalty": 1.1, "seed": 42,
    "stop": "END", "ignore_eos": true, "n": 3, "stream": true, "stream_options": {"include_usage": true},
    "logprobs": true, "top_logprobs": 4, "tools": [{"type": "function", "function": {"name": "f"}}],
    "chat_template_kwargs": {"enable_thinking": false}, "some_future_field": {"ignored": true}})");
  EXPECT_EQ(r.model, "tuned");
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[1]["content"], "Hi there");
  EXPECT_EQ(r.messages[1]["role"], "user");
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_EQ(r.temperature, 0.5);
  EXPECT_EQ(r.top_p, 0.9);
  EXPECT_EQ(r.top_k, 40);
  EXPECT_EQ(r.min_p, 0.05);
  EXPECT_EQ(r.frequency_penalty, 0.5);
  EXPECT_EQ(r.presence_penalty, -0.25);
  EXPECT_EQ(r.repetition_penalty, 1.1);
  EXPECT_EQ(r.seed, 42u);
  EXPECT_EQ(r.stop, std::vector<std::string>{"END"});
  EXPECT_TRUE(r.ignore_eos);
  EXPECT_EQ(r.n, 3);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.top_logprobs, 4);
  EXPECT_EQ(r.template_variables["tools"][0]["function"]["name"], "f");
  EXPECT_EQ(r.template_variables["enable_thinking"], false);
}

TEST(ServeRequest, AbsentFieldsStayUnsetForTheModelsDefaults) {
  const CompletionRequest r = chat(R"({"messages": [{"role": "user", "content": "x"}], "temperature": null})");
  EXPECT_FALSE(r.max_tokens || r.temperature || r.top_p || r.top_k || r.min_p || r.repetition_penalty || r.seed);
  EXPECT_EQ(r.n, 1);
  EXPECT_FALSE(r.stream);
  EXPECT_TRUE(r.stop.empty());
}

TEST(ServeRequest, CompletionPromptsAsTextTextsOrIds) {
  EXPECT_EQ(completion(R"({"prompt": "abc"})").prompts.at(0).text, "abc");
  const CompletionRequest texts = completion(R"({"prompt": ["a", "b"], "logprobs": 2})");
  ASSERT_EQ(texts.prompts.size(), 2u);
  EXPECT_EQ(texts.prompts[1].text, "b");
  EXPECT_TRUE(texts.logprobs);
  EXPECT_EQ(texts.top_logprobs, 2);
  const CompletionRequest ids = completion(R"({"prompt": [5, 6, 7]})");
  ASSERT_EQ(ids.prompts.size(), 1u);
  EXPECT_FALSE(ids.prompts[0].is_text);
  EXPECT_EQ(ids.prompts[0].ids, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(completion(R"({"prompt": [[1, 2], [3]]})").prompts.size(), 2u);
  EXPECT_EQ(completion(R"({"prompt": "x", "top_k": -1})").top_k, 0) << "-1 is off, as vLLM spells it";
  EXPECT_EQ(completion(R"({"prompt": "x", "max_tokens": 5, "max_completion_tokens": null})").max_tokens, 5);
}

TEST(ServeRequest, WrongFieldsAreNamed) {
  const std::string user = R"("messages": [{"role": "user", "content": "x"}])";
  EXPECT_EQ(error_of("[1, 2]"), std::make_pair(400, std::string()));
  EXPECT_EQ(error_of("{}"), std::make_pair(400, std::string("messages")));
  EXPECT_EQ(error_of(R"({"messages": []})"), std::make_pair(400, std::string("messages")));
  EXPECT_EQ(error_of(R"({"messages": [{"content": "x"}]})"), std::make_pair(400, std::string("messages[0].role")));
  EXPECT_EQ(error_of(R"({"messages": [{"role": "user", "content": 5}]})"),
            std::make_pair(400, std::string("messages[0].content")));
  EXPECT_EQ(error_of(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})"),
            std::make_pair(400, std::string("messages[0].content[0].type")));
  for (const auto& [field, value] : std::vector<std::pair<std::string, std::string>>{
           {"temperature", "\"hot\""}, {"temperature", "3"}, {"top_p", "0"}, {"min_p", "2"}, {"top_k", "1.5"},
           {"max_tokens", "-1"}, {"max_completion_tokens", "\"9\""}, {"n", "0"}, {"n", "1000"}, {"seed", "1.5"},
           {"stop", "[1]"}, {"stop", "{}"}, {"stream", "\"yes\""}, {"ignore_eos", "1"}, {"frequency_penalty", "3"},
           {"logprobs", "5"}, {"top_logprobs", "21"}, {"tools", "{}"}, {"chat_template_kwargs", "[]"},
           {"stream_options", "true"}, {"model", "7"}, {"repetition_penalty", "0"}}) {
    EXPECT_EQ(error_of("{" + user + ", \"" + field + "\": " + value + "}"), std::make_pair(400, field))
        << field << " = " << value;
  }
  EXPECT_EQ(error_of("{" + user + R"(, "top_logprobs": 2})"), std::make_pair(400, std::string("top_logprobs")))
      << "top_logprobs without logprobs";
  EXPECT_EQ(error_of(R"({"prompt": 5})", Endpoint::Completion), std::make_pair(400, std::string("prompt")));
  EXPECT_EQ(error_of(R"({"prompt": [-1]})", Endpoint::Completion), std::make_pair(400, std::string("prompt")));
  EXPECT_EQ(error_of(R"({"prompt": []})", Endpoint::Completion), std::make_pair(400, std::string("prompt")));
  EXPECT_EQ(error_of(R"({"prompt": "x", "logprobs": true})", Endpoint::Completion),
            std::make_pair(400, std::string("logprobs")))
      << "completions' logprobs is a count";
}

}  // namespace
