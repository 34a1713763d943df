// slm tokenize / slm detokenize: text ↔ ids with a model's tokenizer.
#include "commands.h"
#include "common.h"

#include <slm/error.h>

#include "tokenizer/unicode.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <iostream>
#include <sstream>
#include <string_view>
#include <thread>

namespace slm::cli {

namespace {

Tokenizer tokenizer_of(const std::string& dir) { return load_tokenizer(dir); }

// stdout through one buffer: an iostream insertion per id (a sentry and a
// locale look-up each) and a JSON document per token string made writing
// the 2.5 M ids of a 10 MB text take three times as long as encoding it.
class Output {
 public:
  void text(std::string_view s) {
    buffer_.append(s);
    spill();
  }
  void number(int32_t value) {
    char digits[16];
    buffer_.append(digits, std::to_chars(digits, digits + sizeof digits, value).ptr);
    spill();
  }
  // A JSON string as nlohmann's dump writes it (UTF-8 as it is; ", \ and
  // control characters escaped); text that is not valid UTF-8 goes through
  // nlohmann itself, which writes U+FFFD for what it cannot read.
  void json_string(std::string_view s) {
    if (tok::is_valid_utf8(s)) {
      tok::append_json_string(buffer_, s, false);
    } else {
      buffer_ += nlohmann::json(std::string(s)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
    spill();
  }
  void flush() {
    write();
    std::cout.flush();
  }

 private:
  void spill() {
    if (buffer_.size() >= (size_t{1} << 16)) write();
  }
  void write() {
    std::cout.write(buffer_.data(), static_cast<std::streamsize>(buffer_.size()));
    buffer_.clear();
  }
  std::string buffer_;
};

}  // namespace

int run_tokenize(int argc, char** argv) {
  CLI::App app{"Text to token ids, exactly as Hugging Face tokenizers does.", "tokenize"};
  std::string dir, prompt, file, output_format = "text";
  bool no_special = false, jsonl = false;
  dir = default_model_dir();
  app.add_option("-m,--model", dir, "folder with tokenizer.json (and tokenizer_config.json)")->capture_default_str();
  auto* prompt_opt = app.add_option("-p,--prompt", prompt, "text to tokenize");
  app.add_option("-f,--file", file, "read the text from a file")->excludes(prompt_opt);
  app.add_flag("--no-special", no_special, "do not add the special tokens of the post-processor (BOS/EOS)");
  app.add_flag("--jsonl", jsonl, "batch mode: each stdin line is a JSON string; print one JSON array of ids per line");
  app.add_option("--output-format", output_format, "text or json")->check(CLI::IsMember({"text", "json"}));
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  app.add_option("-t,--threads", threads, "threads for a long text (the ids are the same on any number)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  return run_command(app, argc, argv, [&] {
    const Tokenizer tokenizer = tokenizer_of(dir);
    if (jsonl) {
      std::string line;
      for (int64_t number = 1; std::getline(std::cin, line); ++number) {
        nlohmann::json text;
        try {
          text = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception&) {
          fail("stdin line ", number, ": not a JSON string");
        }
        if (!text.is_string()) fail("stdin line ", number, ": expected a JSON string");
        std::cout << nlohmann::json(tokenizer.encode(text.get<std::string>(), !no_special)).dump() << "\n";
      }
      return 0;
    }
    const std::string text = app.count("--prompt") ? prompt : read_text_file(app.count("--file") ? file : "-");
    const std::vector<int32_t> ids = tokenizer.encode(text, !no_special, threads);
    Output out;
    if (output_format == "json") {
      // Written as it goes: a document of the whole list (the ids and each
      // token's string) took 450 MB for a 10 MB text.
      out.text("{\"ids\":[");
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i) out.text(",");
        out.number(ids[i]);
      }
      out.text("],\"tokens\":[");
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i) out.text(",");
        out.json_string(tokenizer.id_to_token(ids[i]).value_or(""));
      }
      out.text("]}\n");
    } else {
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i) out.text(" ");
        out.number(ids[i]);
      }
      out.text("\n");
    }
    out.flush();
    return 0;
  });
}

int run_detokenize(int argc, char** argv) {
  CLI::App app{"Token ids (space-separated or a JSON array, on stdin) to text.", "detokenize"};
  std::string dir;
  bool skip_special = false;
  dir = default_model_dir();
  app.add_option("-m,--model", dir, "folder with tokenizer.json")->capture_default_str();
  app.add_flag("--skip-special", skip_special, "leave special tokens out of the text");
  return run_command(app, argc, argv, [&] {
    const Tokenizer tokenizer = tokenizer_of(dir);
    const std::string input = read_text_file("-");
    std::vector<int32_t> ids;
    const auto first = input.find_first_not_of(" \t\r\n");
    if (first != std::string::npos && input[first] == '[') {
      nlohmann::json array;
      try {
        array = nlohmann::json::parse(input);
      } catch (const nlohmann::json::exception& e) {
        fail("stdin: not a valid JSON array of ids: ", e.what());
      }
      for (const auto& id : array) {
        if (!id.is_number_integer()) fail("stdin: expected integer ids, got ", id.dump());
        ids.push_back(id.get<int32_t>());
      }
    } else {
      std::istringstream in(input);
      std::string word;
      while (in >> word) {
        size_t used = 0;
        long long value = 0;
        try {
          value = std::stoll(word, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used != word.size() || value < 0 || value > INT32_MAX) fail("stdin: \"", word, "\" is not a token id");
        ids.push_back(static_cast<int32_t>(value));
      }
    }
    std::cout << tokenizer.decode(ids, skip_special) << "\n";
    return 0;
  });
}

}  // namespace slm::cli
