// slm chat-template: a conversation rendered with a model's chat template,
// exactly the text fine-tuning on {"messages"} data and chat prompts start from.
#include "commands.h"
#include "common.h"

#include <slm/error.h>

#include <iostream>

namespace slm::cli {

int run_chat_template(int argc, char** argv) {
  CLI::App app{"Render a conversation with a model's chat template (as transformers' apply_chat_template renders it).",
               "chat-template"};
  std::string dir = default_model_dir(), messages_file, template_file;
  bool add_generation_prompt = false, ids = false;
  app.add_option("-m,--model", dir, "folder with tokenizer.json and tokenizer_config.json (default: slm's default model)");
  app.add_option("--messages", messages_file,
                 "JSON file (- for stdin): an array of messages, or an object with \"messages\" and any other template "
                 "variables (tools, enable_thinking, ...)")
      ->required();
  app.add_flag("--add-generation-prompt", add_generation_prompt, "end with the header of the assistant's next turn");
  app.add_option("--chat-template", template_file, "Jinja file to render with instead of the model's chat_template")
      ->check(CLI::ExistingFile);
  app.add_flag("--ids", ids, "print the token ids of the text (encoded without special tokens, as apply_chat_template does)");
  return run_command(app, argc, argv, [&] {
    ChatJson input;
    try {
      input = ChatJson::parse(read_text_file(messages_file));
    } catch (const ChatJson::exception& e) {
      fail(messages_file, ": not valid JSON: ", e.what());
    }
    ChatJson variables = ChatJson::object();
    if (input.is_object()) {
      variables = input;
      input = variables["messages"];
      variables.erase("messages");
    }
    if (!input.is_array()) fail(messages_file, ": expected an array of messages or an object with \"messages\": [...]");
    const Tokenizer tokenizer = load_tokenizer(dir);
    const std::string text = chat_renderer(dir, tokenizer, template_file, variables)(input, add_generation_prompt);
    if (ids) {
      const std::vector<int32_t> encoded = tokenizer.encode(text, false);
      for (size_t i = 0; i < encoded.size(); ++i) std::cout << (i ? " " : "") << encoded[i];
      std::cout << "\n";
    } else {
      std::cout << text;
    }
    return 0;
  });
}

}  // namespace slm::cli
