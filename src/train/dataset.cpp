// Training data: JSON lines of text, prompt/completion pairs or chat
// conversations, turned into token ids with per-position labels, and padded
// batches of them.
#include <slm/error.h>
#include <slm/random.h>
#include <slm/train.h>

#include <algorithm>
#include <exception>
#include <fstream>
#include <numeric>
#include <optional>

namespace slm {

namespace {

constexpr int32_t kIgnore = -100;

std::string string_field(const ChatJson& j, const char* name, const std::string& where) {
  const ChatJson& value = j[name];
  if (!value.is_string()) fail(where, ": field \"", name, "\" must be a string");
  return value.get<std::string>();
}

void append(TrainExample& example, const std::vector<int32_t>& ids, bool counted) {
  example.tokens.insert(example.tokens.end(), ids.begin(), ids.end());
  if (counted) example.labels.insert(example.labels.end(), ids.begin(), ids.end());
  else example.labels.resize(example.tokens.size(), kIgnore);
}

void check_messages(const ChatJson& messages, const std::string& where) {
  if (!messages.is_array() || messages.empty()) fail(where, ": \"messages\" must be a non-empty array of messages");
  bool has_assistant = false;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatJson& m = messages[i];
    const std::string field = where + ": messages[" + std::to_string(i) + "]";
    if (!m.is_object()) fail(field, ": expected an object with \"role\" and \"content\"");
    if (!m.contains("role") || !m["role"].is_string()) fail(field, ": \"role\" must be a string");
    if (!m.contains("content") || !(m["content"].is_string() || m["content"].is_array())) {
      fail(field, ": \"content\" must be a string (or a list of content parts)");
    }
    has_assistant = has_assistant || m["role"] == "assistant";
  }
  if (!has_assistant) fail(where, ": the conversation has no \"assistant\" message, so nothing to learn");
}

// One conversation: the whole render cut where each assistant message starts
// and ends, each piece encoded on its own, labels on the assistant pieces.
TrainExample chat_example(const ChatJson& messages, const std::string& where, const TokenizeFn& tokenize,
                          const RenderChatFn& render_chat, std::optional<int32_t> eos, DatasetSummary& summary) {
  if (!render_chat) fail(where, ": {\"messages\": ...} examples need a chat template");
  check_messages(messages, where);
  auto render = [&](size_t count, bool add_generation_prompt) {
    const ChatJson head(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(count));
    try {
      return render_chat(head, add_generation_prompt);
    } catch (const Error& e) {
      fail(where, ": ", e.what());
    }
  };
  const std::string full = render(messages.size(), false);
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatJson& content = messages[i]["content"];
    if (!content.is_string() || content.get<std::string>().empty()) continue;
    if (full.find(content.get<std::string>()) != std::string::npos) continue;
    if (summary.unrendered_messages++ == 0) {
      summary.first_unrendered = where + ": messages[" + std::to_string(i) + "], role \"" +
                                 messages[i]["role"].get<std::string>() + "\"";
    }
  }
  TrainExample example;
  size_t done = 0;  // bytes of `full` already encoded
  auto piece = [&](size_t end, bool counted) {
    append(example, tokenize(std::string_view(full).substr(done, end - done), false), counted);
    done = end;
  };
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i]["role"] != "assistant") continue;
    const std::string before = render(i, true);
    const std::string through = render(i + 1, false);
    if (!full.starts_with(before) || !full.starts_with(through) || before.size() < done || through.size() < before.size()) {
      fail(where, ": the chat template is not prefix-stable at messages[", i,
           "]: rendering the conversation up to that message does not give the start of the whole render, so the "
           "assistant's tokens cannot be told apart (templates that rewrite earlier turns, as Qwen3 drops the "
           "reasoning of past turns, do this; split the conversation into one example per assistant turn)");
    }
    piece(before.size(), false);
    piece(through.size(), true);
  }
  piece(full.size(), false);
  if (eos) {
    // "...<|im_end|>\n" already ends the conversation: EOS goes on only where
    // the render, trailing whitespace aside, does not end with it.
    const std::string_view trimmed = std::string_view(full).substr(0, full.find_last_not_of(" \t\r\n") + 1);
    const size_t newline = trimmed.rfind('\n');
    const std::vector<int32_t> last_line = tokenize(trimmed.substr(newline == std::string_view::npos ? 0 : newline + 1), false);
    if (last_line.empty() || last_line.back() != *eos) {
      example.tokens.push_back(*eos);
      example.labels.push_back(messages.back()["role"] == "assistant" ? *eos : kIgnore);
    }
  }
  return example;
}

// What one line of the file gives: an example or none (a blank line, or
// nothing to learn), and its share of the summary.
struct LineResult {
  std::optional<TrainExample> example;
  DatasetSummary summary;
  bool cut_to_nothing = false;  // its learnable tokens all lie past seq_len
  std::exception_ptr error;
};

LineResult read_line(const std::string& line, const std::string& where, const TokenizeFn& tokenize, int64_t seq_len,
                     std::optional<int32_t> eos, const RenderChatFn& render_chat) {
  LineResult result;
  if (line.find_first_not_of(" \t\r") == std::string::npos) return result;
  DatasetSummary& s = result.summary;
  // Ordered: a conversation's keys reach the chat template as written.
  ChatJson j;
  try {
    j = ChatJson::parse(line);
  } catch (const ChatJson::exception& e) {
    fail(where, ": not JSON (", e.what(), ")");
  }
  if (!j.is_object()) fail(where, ": expected a JSON object");
  // One format per line: a line that could be read two ways is refused
  // rather than read one way without a word.
  std::vector<std::string> formats;
  if (j.contains("text")) formats.emplace_back("\"text\"");
  if (j.contains("prompt") || j.contains("completion")) formats.emplace_back("\"prompt\"/\"completion\"");
  if (j.contains("messages")) formats.emplace_back("\"messages\"");
  if (formats.size() > 1) {
    fail(where, ": holds both ", formats[0], " and ", formats[1], "; a line is one example in one format");
  }
  TrainExample example;
  if (j.contains("text")) {
    example.tokens = tokenize(string_field(j, "text", where), true);
    example.labels = example.tokens;
  } else if (j.contains("prompt") && j.contains("completion")) {
    example.tokens = tokenize(string_field(j, "prompt", where), true);
    example.labels.assign(example.tokens.size(), kIgnore);
    const std::vector<int32_t> completion = tokenize(string_field(j, "completion", where), false);
    example.tokens.insert(example.tokens.end(), completion.begin(), completion.end());
    example.labels.insert(example.labels.end(), completion.begin(), completion.end());
  } else if (j.contains("messages")) {
    example = chat_example(j["messages"], where, tokenize, render_chat, eos, s);
  } else {
    fail(where, ": expected {\"text\": ...}, {\"prompt\": ..., \"completion\": ...} or {\"messages\": [...]}");
  }
  if (!j.contains("messages") && eos && (example.tokens.empty() || example.tokens.back() != *eos)) {
    example.tokens.push_back(*eos);
    example.labels.push_back(*eos);
  }
  if (static_cast<int64_t>(example.tokens.size()) > seq_len) {
    example.tokens.resize(static_cast<size_t>(seq_len));
    example.labels.resize(static_cast<size_t>(seq_len));
    ++s.truncated;
  }
  // A label counts when it is predicted from an earlier position.
  int64_t counted = 0;
  for (size_t i = 1; i < example.labels.size(); ++i) counted += example.labels[i] >= 0 ? 1 : 0;
  if (counted == 0) {  // nothing to learn from (e.g. a prompt that fills seq_len)
    result.cut_to_nothing = static_cast<int64_t>(example.tokens.size()) == seq_len;
    return result;
  }
  s.examples = 1;
  s.tokens = static_cast<int64_t>(example.tokens.size());
  s.loss_tokens = counted;
  result.example = std::move(example);
  return result;
}

void add(DatasetSummary& total, const DatasetSummary& part) {
  total.examples += part.examples;
  total.tokens += part.tokens;
  total.loss_tokens += part.loss_tokens;
  total.truncated += part.truncated;
  if (total.unrendered_messages == 0) total.first_unrendered = part.first_unrendered;
  total.unrendered_messages += part.unrendered_messages;
}

}  // namespace

std::vector<TrainExample> read_jsonl_dataset(const std::filesystem::path& path, const TokenizeFn& tokenize,
                                             int64_t seq_len, std::optional<int32_t> eos, DatasetSummary* summary,
                                             const RenderChatFn& render_chat) {
  if (seq_len < 2) fail("--seq-len: must be at least 2, got ", seq_len);
  if (std::filesystem::is_directory(path)) fail(path.string(), ": is a folder; expected a JSON-lines file");
  std::ifstream in(path);
  if (!in) fail(path.string(), ": cannot read");
  std::vector<TrainExample> examples;
  DatasetSummary s;
  int64_t cut_to_nothing = 0;  // examples whose learnable tokens all lie past seq_len
  // Lines are read a batch at a time and turned into examples on every
  // thread of the pool (parsing, rendering and encoding are most of a large
  // file's time), then taken in file order: the same examples, summary and
  // first error as one line after another.
  constexpr size_t kBatchLines = 4096;
  std::vector<std::string> lines(kBatchLines);
  std::vector<LineResult> results(kBatchLines);
  for (int64_t first_number = 1;; first_number += static_cast<int64_t>(kBatchLines)) {
    size_t count = 0;
    while (count < kBatchLines && std::getline(in, lines[count])) ++count;
    if (count == 0) break;
#pragma omp parallel for schedule(dynamic, 16)
    for (size_t i = 0; i < count; ++i) {
      const std::string where = path.string() + ":" + std::to_string(first_number + static_cast<int64_t>(i));
      try {
        results[i] = read_line(lines[i], where, tokenize, seq_len, eos, render_chat);
      } catch (...) {
        results[i] = LineResult{};
        results[i].error = std::current_exception();
      }
    }
    for (size_t i = 0; i < count; ++i) {
      LineResult& result = results[i];
      if (result.error) std::rethrow_exception(result.error);
      add(s, result.summary);
      cut_to_nothing += result.cut_to_nothing ? 1 : 0;
      if (result.example) examples.push_back(std::move(*result.example));
    }
    if (count < kBatchLines) break;
  }
  if (examples.empty() && cut_to_nothing > 0) {
    fail(path.string(), ": no training examples: in ", cut_to_nothing, " of them every token to learn lies past --seq-len ",
         seq_len, " (a prompt fills it); raise --seq-len");
  }
  if (examples.empty()) fail(path.string(), ": no training examples (an empty file, or every example empty)");
  if (summary) *summary = s;
  return examples;
}

TrainBatch make_batch(const std::vector<TrainExample>& examples, const std::vector<size_t>& indices, int32_t pad_id) {
  TrainBatch batch;
  batch.batch = static_cast<int64_t>(indices.size());
  for (size_t i : indices) batch.seq = std::max(batch.seq, static_cast<int64_t>(examples.at(i).tokens.size()));
  batch.tokens.assign(static_cast<size_t>(batch.batch * batch.seq), pad_id);
  batch.labels.assign(batch.tokens.size(), kIgnore);
  for (size_t b = 0; b < indices.size(); ++b) {
    const TrainExample& e = examples[indices[b]];
    std::copy(e.tokens.begin(), e.tokens.end(), batch.tokens.begin() + static_cast<std::ptrdiff_t>(b) * batch.seq);
    std::copy(e.labels.begin(), e.labels.end(), batch.labels.begin() + static_cast<std::ptrdiff_t>(b) * batch.seq);
  }
  return batch;
}

std::vector<TrainExample> pack_examples(const std::vector<TrainExample>& examples, int64_t seq_len) {
  std::vector<TrainExample> packed;
  TrainExample current;
  for (const TrainExample& e : examples) {
    if (!current.tokens.empty() &&
        static_cast<int64_t>(current.tokens.size() + e.tokens.size()) > seq_len) {
      packed.push_back(std::move(current));
      current = {};
    }
    current.tokens.insert(current.tokens.end(), e.tokens.begin(), e.tokens.end());
    current.labels.insert(current.labels.end(), e.labels.begin(), e.labels.end());
  }
  if (!current.tokens.empty()) packed.push_back(std::move(current));
  return packed;
}

std::vector<size_t> epoch_order(size_t count, uint64_t seed, int64_t epoch) {
  std::vector<size_t> order(count);
  std::iota(order.begin(), order.end(), size_t{0});
  Rng rng(mix_seed(seed, static_cast<uint64_t>(epoch)));
  // Fisher–Yates with our own generator: std::shuffle differs between standard libraries.
  for (size_t i = count; i > 1; --i) {
    const size_t j = static_cast<size_t>(rng.next() % i);
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

}  // namespace slm
