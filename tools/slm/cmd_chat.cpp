// slm chat: a conversation with a model, in a terminal or through a pipe.
// Each turn renders the whole conversation with the chat template and runs
// it as one request through the Engine, streaming the reply; the engine's
// prefix cache keeps the blocks of earlier turns, so a turn mostly prefills
// what is new.
#include "commands.h"
#include "common.h"

#include "core/atomic_file.h"

#include <slm/chat_template.h>
#include <slm/engine.h>
#include <slm/error.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <unistd.h>

namespace slm::cli {

namespace {

// Set by SIGINT; the step loop and the line reader look at it. A handler may
// only touch lock-free atomics.
std::atomic<bool> interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free);

void on_sigint(int) { interrupted.store(true); }

void install_sigint_handler() {
  struct sigaction action {};
  action.sa_handler = on_sigint;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: a Ctrl-C at the prompt must end the blocked read()
  sigaction(SIGINT, &action, nullptr);
}

// All of `text` to standard output. write(2) rather than stdio because a
// Ctrl-C that lands in a write (no SA_RESTART) must not lose text.
void write_out(std::string_view text) {
  while (!text.empty()) {
    const ssize_t written = ::write(STDOUT_FILENO, text.data(), text.size());
    if (written < 0) {
      if (errno == EINTR) continue;
      fail("standard output: write failed (", std::strerror(errno), ")");
    }
    text.remove_prefix(static_cast<size_t>(written));
  }
}

void note(const std::string& text) { std::fprintf(stderr, "%s\n", text.c_str()); }

// Lines of standard input through read(2), so that a Ctrl-C while waiting for
// one is seen (read fails with EINTR) instead of being retried inside stdio.
class LineReader {
 public:
  enum class Result { Line, Interrupted, End };

  Result next(std::string& line) {
    for (;;) {
      if (const size_t end = buffer_.find('\n'); end != std::string::npos) {
        line = buffer_.substr(0, end);
        buffer_.erase(0, end + 1);
        if (line.ends_with('\r')) line.pop_back();
        return Result::Line;
      }
      if (at_end_) {
        if (buffer_.empty()) return Result::End;
        line = std::exchange(buffer_, {});  // a last line without a newline
        return Result::Line;
      }
      if (interrupted.exchange(false)) {
        buffer_.clear();  // as the terminal discards a half-typed line on Ctrl-C
        return Result::Interrupted;
      }
      char chunk[4096];
      const ssize_t got = ::read(STDIN_FILENO, chunk, sizeof chunk);
      if (got > 0) {
        buffer_.append(chunk, static_cast<size_t>(got));
      } else if (got == 0) {
        at_end_ = true;
      } else if (errno != EINTR) {
        fail("standard input: read failed (", std::strerror(errno), ")");
      }
    }
  }

 private:
  std::string buffer_;
  bool at_end_ = false;
};

constexpr const char* kHelp =
    "commands:\n"
    "  /reset        clear the conversation (the system prompt stays)\n"
    "  /system TEXT  set the system prompt and clear the conversation (/system alone removes it)\n"
    "  /save FILE    write the conversation as JSON {\"messages\": [...]}\n"
    "  /help         this list\n"
    "  /exit         leave (as Ctrl-D does)\n"
    "Ctrl-C stops a reply as it streams; Ctrl-D exits.";

class Chat {
 public:
  Chat(Engine& engine, const Tokenizer& tokenizer, RenderChatFn render, GenerateOptions options,
       std::shared_ptr<const Adapter> adapter, int64_t context, std::string system)
      : engine_(engine),
        tokenizer_(tokenizer),
        render_(std::move(render)),
        options_(std::move(options)),
        adapter_(std::move(adapter)),
        context_(context),
        reply_room_(std::min(std::max<int64_t>(options_.max_new_tokens, 1), context / 2)),
        system_(std::move(system)) {}

  // Runs a slash command; false for /exit.
  bool command(const std::string& line) {
    const size_t space = line.find(' ');
    const std::string name = line.substr(0, space);
    std::string argument = space == std::string::npos ? "" : line.substr(space + 1);
    argument.erase(0, argument.find_first_not_of(' '));
    if (name == "/exit") return false;
    if (name == "/help") {
      note(kHelp);
    } else if (name == "/reset") {
      reset();
      note("(conversation cleared)");
    } else if (name == "/system") {
      system_ = argument;
      reset();
      note(system_.empty() ? "(system prompt removed, conversation cleared)"
                           : "(system prompt set, conversation cleared)");
    } else if (name == "/save") {
      if (argument.empty()) {
        note("usage: /save FILE");
      } else {
        save(argument);
      }
    } else {
      note("unknown command " + name + "; /help lists the commands");
    }
    return true;
  }

  // One user turn: the reply streams to standard output; Ctrl-C stops it and
  // keeps what came so far.
  void turn(const std::string& user_text) {
    history_.push_back({{"role", "user"}, {"content", user_text}});
    std::vector<int32_t> prompt;
    try {
      if (!fit_prompt(prompt)) {
        history_.erase(history_.end() - 1);
        return;
      }
    } catch (const Error&) {
      history_.erase(history_.end() - 1);  // a template error: the turn never happened
      throw;
    }
    // The reply may take what the prompt leaves of the context, so a pool
    // (--kv-cache) smaller than the model's context holds any -n.
    GenerateOptions options = options_;
    options.max_new_tokens = std::min(options_.max_new_tokens, context_ - static_cast<int64_t>(prompt.size()));
    GenerationResult result;
    Request request{std::move(prompt), options, adapter_, [](std::string_view piece) { write_out(piece); },
                    [&result](const GenerationResult& done) { result = done; }};
    interrupted.store(false);
    const RequestId id = engine_.add_request(std::move(request));
    while (engine_.step()) {
      if (interrupted.exchange(false)) engine_.cancel(id);
    }
    interrupted.store(false);  // a Ctrl-C as the reply ended was meant for the reply
    write_out("\n");
    if (result.finish_reason == FinishReason::Cancelled) note("(reply stopped)");
    const bool context_full =
        result.finish_reason == FinishReason::Context ||
        (result.finish_reason == FinishReason::Length && options.max_new_tokens < options_.max_new_tokens);
    if (context_full) {
      note("(reply stopped: the context of " + std::to_string(context_) + " tokens is full)");
    }
    history_.push_back({{"role", "assistant"}, {"content", result.text}});
  }

 private:
  // The system prompt, then the conversation from message `from` on.
  ChatJson messages(size_t from) const {
    ChatJson out = ChatJson::array();
    if (!system_.empty()) out.push_back({{"role", "system"}, {"content", system_}});
    for (size_t i = from; i < history_.size(); ++i) out.push_back(history_[i]);
    return out;
  }

  void reset() {
    history_ = ChatJson::array();
    first_kept_ = 0;
  }

  // The ids of the next reply's prompt (the text encoded without special
  // tokens, as apply_chat_template's text is). While it leaves no room for a
  // reply (-n tokens, at most half the context, so that a large -n does not
  // empty the conversation), the oldest turn is left out, never the system
  // prompt; /save still writes every message. False, with a note, when even
  // the newest message alone does not fit.
  bool fit_prompt(std::vector<int32_t>& prompt) {
    const size_t kept_before = first_kept_;
    for (;;) {
      prompt = tokenizer_.encode(render_(messages(first_kept_), true), false);
      const auto tokens = static_cast<int64_t>(prompt.size());
      if (tokens + reply_room_ <= context_) break;
      size_t next_turn = first_kept_ + 1;
      while (next_turn < history_.size() && history_[next_turn]["role"] != "user") ++next_turn;
      if (next_turn >= history_.size()) {
        first_kept_ = kept_before;
        note("(message skipped: it makes a prompt of " + std::to_string(tokens) + " tokens" +
             (system_.empty() ? "" : " with the system prompt") + ", and the context of " +
             std::to_string(context_) + " tokens must also hold a reply of " + std::to_string(reply_room_) +
             "; shorten it, or lower -n)");
        return false;
      }
      first_kept_ = next_turn;
    }
    if (first_kept_ != kept_before) {
      note("(the conversation outgrew the context of " + std::to_string(context_) + " tokens: its first " +
           std::to_string(first_kept_) + " messages are left out of the prompt from now on)");
    }
    return true;
  }

  void save(const std::string& path) {
    const ChatJson document = {{"messages", messages(0)}};
    write_text_atomically(path, document.dump(2, ' ', false, ChatJson::error_handler_t::replace) + "\n");
    note("(saved " + std::to_string(document["messages"].size()) + " messages to " + path + ")");
  }

  Engine& engine_;
  const Tokenizer& tokenizer_;
  RenderChatFn render_;
  GenerateOptions options_;
  std::shared_ptr<const Adapter> adapter_;
  int64_t context_;     // positions a prompt and its reply may take
  int64_t reply_room_;  // positions a prompt leaves for the reply
  std::string system_;
  ChatJson history_ = ChatJson::array();  // every message but the system prompt
  size_t first_kept_ = 0;                 // the first message of history_ the prompt holds
};

}  // namespace

int run_chat(int argc, char** argv) {
  CLI::App app{"Chat with a model: the conversation rendered with its chat template, one reply per message. "
               "In a terminal, a prompt and slash commands (/help); through a pipe, each input line is a message "
               "and each reply one output line.",
               "chat"};
  ModelOptions model_options;
  add_model_options(app, model_options);
  add_adapter_option(app, model_options);
  std::string system, template_file, kv_cache;
  GenerationFlags flags;
  app.add_option("--system", system, "system prompt: the first message of the conversation");
  app.add_option("--chat-template", template_file, "Jinja file to render with instead of the model's chat_template")
      ->check(CLI::ExistingFile);
  app.add_option("--kv-cache", kv_cache,
                 "the KV cache pool, in positions (8192) or memory (512MiB); the conversation must fit it; "
                 "default: the model's context, at most 64K positions");
  add_generation_options(app, flags);

  return run_command(app, argc, argv, [&] {
    Model model = load_model(model_options);
    const auto adapter = load_adapter_option(model, model_options);
    const Tokenizer tokenizer = load_tokenizer(model_options.dir);
    const RenderChatFn render = chat_renderer(model_options.dir, tokenizer, template_file);
    // A model without a template, or a template that fails on a plain
    // message, is an error now rather than at the first turn.
    render(ChatJson::array({{{"role", "user"}, {"content", "hello"}}}), true);
    const GenerateOptions options = resolve_generate_options(app, flags, model, model_options);

    EngineOptions engine_options;
    engine_options.max_sequences = 1;
    engine_options.kv_dtype = options.kv_dtype;
    if (!kv_cache.empty()) {
      engine_options.kv_cache_tokens = parse_kv_cache_size(kv_cache, model.config(), options.kv_dtype);
    }
    Engine engine(model, tokenizer, engine_options);
    const int64_t context = std::min(model.config().max_position_embeddings, engine.cache().capacity());
    Chat chat(engine, tokenizer, render, options, adapter, context, system);

    const bool interactive = isatty(STDIN_FILENO) == 1;
    install_sigint_handler();
    if (interactive) {
      note("slm chat: " + model_options.dir + " (context " + std::to_string(context) + " tokens)\n" +
           "/help lists the commands; Ctrl-C stops a reply, Ctrl-D exits.");
    }
    LineReader input;
    for (std::string line;;) {
      if (interactive) write_out("> ");
      const LineReader::Result got = input.next(line);
      if (got == LineReader::Result::End) {
        if (interactive) write_out("\n");  // the shell's prompt on a line of its own
        return 0;
      }
      if (got == LineReader::Result::Interrupted) {
        // Through a pipe there is no prompt to come back to: Ctrl-C ends the
        // program, with the status a shell gives a SIGINT.
        if (!interactive) return 128 + SIGINT;
        write_out("\n");
        note("(Ctrl-D exits; /help lists the commands)");
        continue;
      }
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      try {
        if (line.starts_with('/')) {
          if (!chat.command(line)) return 0;
        } else {
          chat.turn(line);
        }
      } catch (const Error& e) {
        // A template that fails on this conversation, a file /save cannot
        // write: the turn fails, the chat goes on.
        note("slm chat: error: " + std::string(e.what()));
      }
    }
  });
}

}  // namespace slm::cli
