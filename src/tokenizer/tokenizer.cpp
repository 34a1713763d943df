// The Tokenizer: tokenizer.json (+ tokenizer_config.json) read as written,
// run through the pipeline of Hugging Face `tokenizers`:
//   added tokens → normalizer → added tokens (normalized) → pre-tokenizer →
//   BPE → post-processor;  and for decoding: ids → tokens → decoder.
#include <slm/error.h>
#include <slm/tokenizer.h>

#include "tokenizer/bpe.h"
#include "tokenizer/parts.h"
#include "tokenizer/pipeline.h"
#include "tokenizer/unicode.h"

#include <nlohmann/json.hpp>
#include <simdjson.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <unordered_map>

namespace slm {

namespace {

using json = nlohmann::json;
using tok::Bpe;

struct AddedToken {
  int32_t id;
  std::string content;
  bool special, normalized, lstrip, rstrip, single_word;
};

// Leftmost-longest matching of many strings at once: a byte trie.
class TokenTrie {
 public:
  void add(const std::string& text, int32_t token) {
    if (!text.empty() && !can_start_[static_cast<uint8_t>(text[0])]) {
      can_start_[static_cast<uint8_t>(text[0])] = true;
      ++start_bytes_;
      only_start_byte_ = text[0];
    }
    int32_t node = 0;
    for (char c : text) {
      const uint64_t key = edge(node, c);
      auto it = edges_.find(key);
      if (it == edges_.end()) {
        it = edges_.emplace(key, static_cast<int32_t>(terminal_.size())).first;
        terminal_.push_back(-1);
      }
      node = it->second;
    }
    terminal_[static_cast<size_t>(node)] = token;
  }
  bool empty() const { return edges_.empty(); }
  // The first position from `at` before `end` where some token could start
  // (`end` when none; `at` itself when it is past `end`): most text never
  // enters the trie, and where every token starts with the same byte ("<"
  // of "<|eot_id|>"), memchr finds the next.
  size_t next_start(std::string_view text, size_t at, size_t end) const {
    if (at >= end) return at;
    if (start_bytes_ == 1) {
      const void* found = std::memchr(text.data() + at, only_start_byte_, end - at);
      return found ? static_cast<size_t>(static_cast<const char*>(found) - text.data()) : end;
    }
    while (at < end && !can_start_[static_cast<uint8_t>(text[at])]) ++at;
    return at;
  }
  // Longest token starting at `at`: {token, length}, token -1 when none.
  std::pair<int32_t, size_t> longest(std::string_view text, size_t at) const {
    int32_t node = 0, best = -1;
    size_t best_length = 0;
    for (size_t i = at; i < text.size(); ++i) {
      const auto it = edges_.find(edge(node, text[i]));
      if (it == edges_.end()) break;
      node = it->second;
      if (terminal_[static_cast<size_t>(node)] >= 0) {
        best = terminal_[static_cast<size_t>(node)];
        best_length = i + 1 - at;
      }
    }
    return {best, best_length};
  }

 private:
  static uint64_t edge(int32_t node, char c) { return (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(c); }
  std::unordered_map<uint64_t, int32_t> edges_;
  std::vector<int32_t> terminal_{-1};
  bool can_start_[256] = {};
  int start_bytes_ = 0;
  char only_start_byte_ = 0;
};

// A piece of input between added tokens (a view into the text being
// encoded), or one added token.
struct Section {
  std::string_view text;
  int32_t token = -1;  // index into added tokens
};

json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path.string(), ": cannot open");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail(path.string(), ": not valid JSON: ", e.what());
  }
}

// tokenizer.json, read by simdjson: the model's vocab and merges (nearly all
// of the file, 33 MB for Gemma 3) stay as simdjson parsed them, for the BPE
// model to read into its tables; every other member, small, becomes the
// nlohmann object returned. `parser` owns what `vocab` and `merges` point to.
json read_tokenizer_text(const simdjson::padded_string& text, const std::string& name, simdjson::dom::parser& parser,
                         std::optional<simdjson::dom::element>& vocab, std::optional<simdjson::dom::element>& merges) {
  simdjson::dom::element document;
  if (const auto error = parser.parse(text).get(document); error != simdjson::SUCCESS) {
    fail(name, ": not valid JSON: ", simdjson::error_message(error));
  }
  simdjson::dom::object members;
  if (document.get_object().get(members) != simdjson::SUCCESS) fail(name, ": expected a JSON object");
  auto to_json = [](simdjson::dom::element value) { return json::parse(simdjson::minify(value)); };
  json root = json::object();
  for (const simdjson::dom::key_value_pair member : members) {
    simdjson::dom::object model_members;
    if (member.key != "model" || member.value.get_object().get(model_members) != simdjson::SUCCESS) {
      root[std::string(member.key)] = to_json(member.value);
      continue;
    }
    json model = json::object();
    for (const simdjson::dom::key_value_pair field : model_members) {
      if (field.key == "vocab") {
        vocab = field.value;
      } else if (field.key == "merges") {
        merges = field.value;
      } else {
        model[std::string(field.key)] = to_json(field.value);
      }
    }
    root["model"] = std::move(model);
  }
  return root;
}

// "<s>" or {"content": "<s>", ...} in tokenizer_config.json.
std::optional<std::string> config_token(const json& config, const char* key) {
  if (!config.contains(key)) return std::nullopt;
  const json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

std::string clean_up_tokenization(std::string text) {
  static const std::pair<const char*, const char*> kRules[] = {{" .", "."},     {" ?", "?"},     {" !", "!"},
                                                               {" ,", ","},     {" ' ", "'"},    {" n't", "n't"},
                                                               {" 'm", "'m"},   {" 's", "'s"},   {" 've", "'ve"},
                                                               {" 're", "'re"}};
  for (const auto& [from, to] : kRules) {
    const std::string f = from, t = to;
    std::string out;
    size_t last = 0;
    for (size_t at = text.find(f); at != std::string::npos; at = text.find(f, last)) {
      out.append(text, last, at - last);
      out += t;
      last = at + f.size();
    }
    out.append(text, last);
    text = std::move(out);
  }
  return text;
}

}  // namespace

struct Tokenizer::Impl {
  std::string file;
  std::unique_ptr<Bpe> model;
  std::unique_ptr<tok::Normalizer> normalizer;
  std::unique_ptr<tok::PreTokenizer> pre_tokenizer;
  std::unique_ptr<tok::Decoder> decoder;
  std::vector<AddedToken> added;
  std::unordered_map<int32_t, size_t> added_by_id;
  std::unordered_map<std::string, int32_t> added_by_content;
  TokenTrie raw_trie, normalized_trie;
  std::set<std::string> special_strings;  // special added tokens + additional_special_tokens
  // Post-processing of a single sequence: ids before and after it.
  std::vector<int32_t> prefix_ids, suffix_ids;
  bool clean_up_spaces = true;
  std::optional<int32_t> bos, eos, pad;
  std::string chat_template;
  std::map<std::string, std::string, std::less<>> special_tokens;  // bos_token etc. as strings
  std::string kind;
  int32_t vocab_size = 0;

  std::optional<int32_t> lookup(std::string_view token) const {
    if (const auto it = added_by_content.find(std::string(token)); it != added_by_content.end()) return it->second;
    return model->token_to_id(token);
  }

  // The text's sections between the added tokens of `trie`, and those
  // tokens, to `out`; a long text is scanned in parts on up to `threads`.
  void split_added(std::string_view text, const TokenTrie& trie, std::vector<Section>& out, int threads) const;
  // The added tokens the scan of `text` finds from `begin`, a place it lands
  // on, until it passes `end`, and the sections between them (the last one
  // ending at `end`), to `out`; returns where it lands next, at `end` unless
  // a token runs past it. Words around a single_word token are looked at in
  // the whole text.
  size_t find_added(std::string_view text, size_t begin, size_t end, const TokenTrie& trie,
                    std::vector<Section>& out) const;
  // The same over the whole text, its parts (between `cuts`) scanned on
  // threads and joined; false, with nothing written, when a token runs over
  // a cut (then the text must be scanned whole).
  bool find_added_in_parts(std::string_view text, const std::vector<size_t>& cuts, const TokenTrie& trie,
                           std::vector<Section>& out) const;
  // These return how many parts the text was encoded in (1: on one thread).
  size_t encode_text(std::string_view text, std::vector<int32_t>& ids, int threads) const;
  // The normalizer's text, in parts on up to `threads` threads where it may
  // be cut; `first` and `last` when it starts or ends its section.
  std::string normalize(std::string_view text, int threads, bool first = true, bool last = true) const;
  // One section (the index-th of its text): its normalizing, the added
  // tokens in the normalized text, pre-tokenizing and BPE.
  size_t encode_section(const Section& section, size_t index, int threads, std::vector<int32_t>& ids) const;
  size_t encode_in_parts(std::string_view text, size_t section, size_t parts_wanted, std::vector<int32_t>& ids) const;
  // Whether a section of `bytes` streams through the normalizer to the model
  // window by window (encode_streamed).
  bool streams(size_t bytes) const;
  size_t encode_streamed(std::string_view text, int threads, std::vector<int32_t>& ids) const;
};

size_t Tokenizer::Impl::find_added(std::string_view text, size_t begin, size_t end, const TokenTrie& trie,
                                   std::vector<Section>& out) const {
  size_t start = begin, i = begin;
  while ((i = trie.next_start(text, i, end)) < end) {
    const auto [token, length] = trie.longest(text, i);
    bool accept = token >= 0;
    if (accept && added[static_cast<size_t>(token)].single_word) {
      // Only a whole word: no word character touching either end.
      size_t before = i;
      while (before > 0 && (static_cast<uint8_t>(text[before - 1]) & 0xc0) == 0x80) --before;
      if (before > 0) {
        size_t k = before - 1;
        while (k > 0 && (static_cast<uint8_t>(text[k]) & 0xc0) == 0x80) --k;
        accept = !tok::is_word_char(tok::next_code_point(text, k));
      }
      size_t after = i + length;
      if (accept && after < text.size()) accept = !tok::is_word_char(tok::next_code_point(text, after));
    }
    if (!accept) {
      i += tok::utf8_length(static_cast<uint8_t>(text[i]));
      continue;
    }
    if (i > start) out.push_back({text.substr(start, i - start), -1});
    out.push_back({std::string_view(), token});
    i += length;
    start = i;
  }
  if (start < end) out.push_back({text.substr(start, end - start), -1});
  return i;
}

bool Tokenizer::Impl::find_added_in_parts(std::string_view text, const std::vector<size_t>& cuts,
                                          const TokenTrie& trie, std::vector<Section>& out) const {
  const size_t parts = cuts.size() - 1;
  if (parts < 2) return false;
  std::vector<std::vector<Section>> found(parts);
  std::vector<size_t> landed(parts);
  tok::run_parts(parts, [&](size_t k) { landed[k] = find_added(text, cuts[k], cuts[k + 1], trie, found[k]); });
  // Each part's scan starts where the whole text's lands, unless a token ran
  // over a cut (a token with a newline inside).
  for (size_t k = 0; k + 1 < parts; ++k) {
    if (landed[k] != cuts[k + 1]) return false;
  }
  const size_t first = out.size();
  for (const std::vector<Section>& part : found) {
    for (const Section& section : part) {
      // The text on both sides of a cut is one section of the whole's scan.
      if (out.size() > first && section.token < 0 && out.back().token < 0 &&
          out.back().text.data() + out.back().text.size() == section.text.data()) {
        out.back().text = std::string_view(out.back().text.data(), out.back().text.size() + section.text.size());
      } else {
        out.push_back(section);
      }
    }
  }
  return true;
}

void Tokenizer::Impl::split_added(std::string_view text, const TokenTrie& trie, std::vector<Section>& out,
                                  int threads) const {
  if (trie.empty()) {
    if (!text.empty()) out.push_back({text, -1});
    return;
  }
  const size_t first = out.size();
  const size_t wanted = tok::parts_for(text.size(), threads);
  if (wanted == 1 || !find_added_in_parts(text, tok::cuts_after_newlines(text, wanted), trie, out)) {
    find_added(text, 0, text.size(), trie, out);
  }
  // lstrip / rstrip: the token swallows the whitespace beside it.
  for (size_t k = first; k < out.size(); ++k) {
    if (out[k].token < 0) continue;
    const AddedToken& t = added[static_cast<size_t>(out[k].token)];
    if (t.lstrip && k > first && out[k - 1].token < 0) out[k - 1].text = tok::trim_whitespace(out[k - 1].text, false, true);
    if (t.rstrip && k + 1 < out.size() && out[k + 1].token < 0) {
      out[k + 1].text = tok::trim_whitespace(out[k + 1].text, true, false);
    }
  }
}

size_t Tokenizer::Impl::encode_text(std::string_view raw, std::vector<int32_t>& ids, int threads) const {
  // Valid input (the usual case) is read in place, not copied.
  const bool valid = tok::is_valid_utf8(raw);
  const std::string sanitized = valid ? std::string() : tok::sanitize_utf8(raw);
  const std::string_view text = valid ? raw : std::string_view(sanitized);
  // Room for the ids of most texts (English runs 3 to 5 bytes a token), so
  // that the list is not copied at every doubling.
  ids.reserve(ids.size() + text.size() / 3 + 16);
  std::vector<Section> sections;
  split_added(text, raw_trie, sections, threads);
  // Sections are encoded apart. A long one is cut into parts by its own
  // stages; a run of short ones (Gemma's "\n" is an added token, so its
  // sections are lines) is dealt out to the threads whole, in order.
  auto is_long = [&](const Section& section) { return tok::parts_for(section.text.size(), threads) > 1; };
  size_t parts = 1;
  for (size_t first = 0; first < sections.size();) {
    if (is_long(sections[first])) {
      parts = std::max(parts, encode_section(sections[first], first, threads, ids));
      ++first;
      continue;
    }
    size_t end = first, bytes = 0;
    for (; end < sections.size() && !is_long(sections[end]); ++end) bytes += sections[end].text.size();
    const size_t wanted = tok::parts_for(bytes, threads);
    std::vector<size_t> cuts{first};  // each part's first section
    for (size_t index = first, before = 0; index < end; before += sections[index++].text.size()) {
      if (cuts.size() < wanted && before >= cuts.size() * bytes / wanted && index > cuts.back()) cuts.push_back(index);
    }
    cuts.push_back(end);
    if (cuts.size() == 2) {
      for (size_t index = first; index < end; ++index) encode_section(sections[index], index, 1, ids);
    } else {
      tok::encode_parts(
          cuts.size() - 1,
          [&](size_t k, std::vector<int32_t>& part_ids) {
            for (size_t index = cuts[k]; index < cuts[k + 1]; ++index) {
              encode_section(sections[index], index, 1, part_ids);
            }
          },
          ids);
      parts = std::max(parts, cuts.size() - 1);
    }
    first = end;
  }
  return parts;
}

std::string Tokenizer::Impl::normalize(std::string_view text, int threads, bool first, bool last) const {
  const size_t wanted = normalizer->normalizes_in_parts() ? tok::parts_for(text.size(), threads) : 1;
  // No list of cuts (nor its allocation) for the short texts nearly all calls bring.
  const std::vector<size_t> cuts = wanted > 1 ? tok::cuts_after_newlines(text, wanted) : std::vector<size_t>();
  const size_t parts = cuts.empty() ? 1 : cuts.size() - 1;
  if (parts == 1) return normalizer->normalize(std::string(text), first, last);
  std::vector<std::string> normalized(parts);
  tok::run_parts(parts, [&](size_t k) {
    normalized[k] = normalizer->normalize(std::string(text.substr(cuts[k], cuts[k + 1] - cuts[k])), first && k == 0,
                                          last && k + 1 == parts);
  });
  size_t bytes = 0;
  for (const std::string& part : normalized) bytes += part.size();
  std::string joined;
  joined.reserve(bytes);
  for (const std::string& part : normalized) joined += part;
  return joined;
}

size_t Tokenizer::Impl::encode_section(const Section& section, size_t index, int threads,
                                       std::vector<int32_t>& ids) const {
  if (section.token >= 0) {
    ids.push_back(added[static_cast<size_t>(section.token)].id);
    return 1;
  }
  if (section.text.empty()) return 1;
  if (streams(section.text.size())) return encode_streamed(section.text, threads, ids);
  const std::string normalized = normalizer ? normalize(section.text, threads) : std::string();
  const std::string_view normalized_text = normalizer ? std::string_view(normalized) : section.text;
  std::vector<Section> subsections;
  split_added(normalized_text, normalized_trie, subsections, threads);
  size_t parts = 1;
  // A piece the pre-tokenizer leaves long (a SentencePiece-style text is one
  // piece) may be cut by the model itself.
  auto to_model = [&](std::string_view piece) { parts = std::max(parts, model->encode(piece, ids, threads)); };
  for (const Section& sub : subsections) {
    if (sub.token >= 0) {
      ids.push_back(added[static_cast<size_t>(sub.token)].id);
      continue;
    }
    if (sub.text.empty()) continue;
    if (const size_t wanted = tok::parts_for(sub.text.size(), threads);
        wanted > 1 && pre_tokenizer && pre_tokenizer->leading_pattern()) {
      parts = std::max(parts, encode_in_parts(sub.text, index, wanted, ids));
    } else if (pre_tokenizer) {
      pre_tokenizer->split(sub.text, index, to_model);
    } else {
      to_model(sub.text);
    }
  }
  return parts;
}

// A SentencePiece-style section (normalized, then one word for the model,
// which cuts it before its "▁"s) streams when it is long: windows of it, cut
// after newlines, are normalized one at a time and appended to what is left
// of the window before, and the model encodes that up to its last cut and
// keeps the rest. So the normalized text (a third longer than the raw for
// English, each space become a three-byte "▁") never exists whole, and
// what is held stays in the caches. Only sections longer than a window
// stream: no token is that long, as encode_cut_word takes for granted.
constexpr size_t kStreamWindowBytes = size_t{256} << 10;

bool Tokenizer::Impl::streams(size_t bytes) const {
  return normalizer && normalizer->normalizes_in_parts() && normalized_trie.empty() && !pre_tokenizer &&
         model->cuts_words() && bytes > kStreamWindowBytes;
}

size_t Tokenizer::Impl::encode_streamed(std::string_view text, int threads, std::vector<int32_t>& ids) const {
  // Each thread takes a window's worth of each, as a whole text would be
  // cut on them.
  const size_t window = kStreamWindowBytes * static_cast<size_t>(std::max(1, threads));
  const std::vector<size_t> cuts = tok::cuts_after_newlines(text, (text.size() + window - 1) / window);
  std::string pending;
  size_t parts = 1;
  for (size_t k = 0; k + 1 < cuts.size(); ++k) {
    const bool last = k + 2 == cuts.size();
    // What is pending has no cut but at its start: only the new text may.
    const size_t appended_at = pending.size();
    pending += normalize(text.substr(cuts[k], cuts[k + 1] - cuts[k]), threads, k == 0, last);
    const size_t cut = last ? pending.size() : model->last_cut(pending, appended_at);
    parts = std::max(parts, model->encode_cut_word(std::string_view(pending).substr(0, cut), ids, threads));
    pending.erase(0, cut);
  }
  return parts;
}

// The leading pattern's scan of a text goes from piece to piece, and where it
// goes next depends only on where it is (it matches over the whole text, so
// look-behind sees the same). Each part is scanned from a cut after a newline,
// on its own thread, noting where its pieces start; the part before it stops
// at its first piece at or past the cut, which a scan from the start would
// also reach. If that piece starts where one of the next part's does, the two
// scans go the same way from there and the ids join there; if not (the next
// part never passes where this one stops, among its first pieces), the text
// is encoded on one thread instead.
size_t Tokenizer::Impl::encode_in_parts(std::string_view text, size_t section, size_t parts_wanted,
                                        std::vector<int32_t>& ids) const {
  const tok::Pattern& pattern = *pre_tokenizer->leading_pattern();
  const std::vector<size_t> cuts = tok::cuts_after_newlines(text, parts_wanted);
  const size_t parts = cuts.size() - 1;
  struct Part {
    std::vector<int32_t> ids;
    std::vector<std::pair<size_t, size_t>> starts;  // (piece start, ids before it), the first kNotedStarts
    size_t stop = std::string_view::npos;            // the first piece start at or past the next cut
  };
  static constexpr size_t kNotedStarts = 4096;
  std::vector<Part> results(parts);
  auto encode_part = [&](size_t k) {
    Part& part = results[k];
    part.ids.reserve((cuts[k + 1] - cuts[k]) / 3 + 16);
    const size_t limit = k + 1 < parts ? cuts[k + 1] : std::string_view::npos;
    auto piece = [&](size_t begin, size_t end) {
      if (begin >= limit) {
        part.stop = begin;
        return false;
      }
      if (k > 0 && part.starts.size() < kNotedStarts) part.starts.emplace_back(begin, part.ids.size());
      pre_tokenizer->split_rest(text.substr(begin, end - begin), section,
                                [&](std::string_view sub) { model->encode(sub, part.ids); });
      return true;
    };
    size_t last = cuts[k];
    bool going = true;
    pattern.for_each_match(
        text,
        [&](size_t begin, size_t end) {
          going = (begin <= last || piece(last, begin)) && piece(begin, end);
          last = end;
          return going;
        },
        cuts[k]);
    if (going && last < text.size()) piece(last, text.size());
  };
  tok::run_parts(parts, encode_part);
  std::vector<size_t> join_at(parts, 0);  // ids of each part from where the part before stopped
  for (size_t k = 1; k < parts; ++k) {
    const auto& starts = results[k].starts;
    const size_t stop = results[k - 1].stop;
    const auto it = std::lower_bound(starts.begin(), starts.end(), std::pair<size_t, size_t>(stop, 0));
    if (it == starts.end() || it->first != stop) {
      pre_tokenizer->split(text, section, [&](std::string_view piece) { model->encode(piece, ids); });
      return 1;
    }
    join_at[k] = it->second;
  }
  for (size_t k = 0; k < parts; ++k) {
    ids.insert(ids.end(), results[k].ids.begin() + static_cast<std::ptrdiff_t>(join_at[k]), results[k].ids.end());
  }
  return parts;
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_dir(const std::filesystem::path& dir) {
  const auto config = dir / "tokenizer_config.json";
  return from_file(dir / "tokenizer.json", std::filesystem::exists(config) ? std::optional(config) : std::nullopt);
}

Tokenizer Tokenizer::from_file(const std::filesystem::path& tokenizer_json, const std::optional<std::filesystem::path>& config_path) {
  // A field of the wrong JSON type deep inside is reported, not thrown raw.
  try {
    return load(tokenizer_json, config_path);
  } catch (const json::exception& e) {
    fail(tokenizer_json.string(), ": unexpected structure: ", e.what());
  }
}

Tokenizer Tokenizer::load(const std::filesystem::path& tokenizer_json, const std::optional<std::filesystem::path>& config_path) {
  simdjson::padded_string text;
  if (simdjson::padded_string::load(tokenizer_json.string()).get(text) != simdjson::SUCCESS) {
    fail(tokenizer_json.string(), ": cannot open");
  }
  const json config = config_path ? read_json_file(*config_path) : json::object();
  if (!config.is_object()) fail(config_path->string(), ": expected a JSON object");
  return build(text, config, tokenizer_json.string());
}

Tokenizer Tokenizer::from_json_text(std::string_view tokenizer_json, const std::string& config_json,
                                    const std::string& name) {
  try {
    const simdjson::padded_string text(tokenizer_json);
    return build(text, json::parse(config_json), name);
  } catch (const json::exception& e) {
    fail(name, ": unexpected structure: ", e.what());
  }
}

Tokenizer Tokenizer::build(const simdjson::padded_string& text, const nlohmann::json& config, const std::string& source) {
  auto impl = std::make_unique<Impl>();
  impl->file = source;
  const std::string& file = impl->file;
  simdjson::dom::parser parser;
  std::optional<simdjson::dom::element> vocab, merges;
  const json root = read_tokenizer_text(text, file, parser, vocab, merges);

  if (!root.contains("model") || !root["model"].is_object()) fail(file, ": missing object \"model\"");
  const json& model = root["model"];
  const std::string model_type = model.contains("type") && model["type"].is_string() ? model["type"].get<std::string>()
                                 : merges                                             ? "BPE"
                                                                                      : "";
  if (model_type != "BPE") {
    fail(file, ": model.type \"", model_type, "\" is not supported yet (slm reads BPE tokenizers; Unigram and WordPiece are planned)");
  }
  impl->model = std::make_unique<Bpe>(model, vocab ? &*vocab : nullptr, merges ? &*merges : nullptr, file + ": model");
  impl->vocab_size = impl->model->size();

  auto member = [&](const char* key) { return root.contains(key) ? root[key] : json(); };
  impl->normalizer = tok::make_normalizer(member("normalizer"), file + ": normalizer");
  impl->pre_tokenizer = tok::make_pre_tokenizer(member("pre_tokenizer"), file + ": pre_tokenizer");

  const json added = member("added_tokens");
  if (!added.is_null() && !added.is_array()) fail(file, ": added_tokens must be an array");
  std::vector<std::string> added_contents;
  for (size_t i = 0; added.is_array() && i < added.size(); ++i) {
    const json& t = added[i];
    const std::string where = file + ": added_tokens[" + std::to_string(i) + "]";
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() || !t.contains("content") ||
        !t["content"].is_string()) {
      fail(where, ": expected an object with an integer \"id\" and a string \"content\"");
    }
    const int64_t id = t["id"].get<int64_t>();
    if (id < 0 || id >= (int64_t{1} << 24)) fail(where, ": id ", id, " is out of range (0 to 16777215)");
    AddedToken token{static_cast<int32_t>(id), t["content"].get<std::string>(), t.value("special", false),
                     t.value("normalized", !t.value("special", false)), t.value("lstrip", false), t.value("rstrip", false),
                     t.value("single_word", false)};
    if (token.content.empty()) fail(where, ": content is empty");
    if (const std::string* existing = impl->model->id_to_token(token.id); existing && *existing != token.content) {
      fail(where, ": id ", id, " is \"", *existing, "\" in the vocabulary but \"", token.content, "\" here");
    }
    if (const auto other = impl->added_by_id.find(token.id); other != impl->added_by_id.end()) {
      fail(where, ": id ", id, " is already given to added token \"", impl->added[other->second].content, "\"");
    }
    const auto index = static_cast<int32_t>(impl->added.size());
    impl->added_by_id[token.id] = impl->added.size();
    impl->added_by_content[token.content] = token.id;
    if (token.special) impl->special_strings.insert(token.content);
    if (token.normalized && impl->normalizer) {
      impl->normalized_trie.add(impl->normalizer->normalize(token.content), index);
    } else {
      impl->raw_trie.add(token.content, index);
    }
    impl->vocab_size = std::max(impl->vocab_size, token.id + 1);
    added_contents.push_back(token.content);
    impl->added.push_back(std::move(token));
  }
  impl->decoder = tok::make_decoder(member("decoder"), file + ": decoder", added_contents);

  // Post-processor: the ids around a single sequence.
  auto special_ids = [&](const json& specials, const std::string& name, const std::string& where) {
    std::vector<int32_t> ids;
    if (specials.is_object() && specials.contains(name) && specials[name].contains("ids")) {
      for (const json& id : specials[name]["ids"]) ids.push_back(id.get<int32_t>());
    } else if (const auto id = impl->lookup(name)) {
      ids.push_back(*id);
    } else {
      fail(where, ": special token \"", name, "\" is not in the vocabulary");
    }
    return ids;
  };
  std::function<void(const json&, const std::string&)> read_post = [&](const json& post, const std::string& where) {
    if (post.is_null()) return;
    const std::string type = post.value("type", std::string());
    if (type == "TemplateProcessing") {
      if (!post.contains("single") || !post["single"].is_array()) fail(where, ": TemplateProcessing needs a \"single\" array");
      bool after_sequence = false;
      for (const json& item : post["single"]) {
        if (item.contains("Sequence")) {
          after_sequence = true;
        } else if (item.contains("SpecialToken")) {
          const auto ids = special_ids(post.value("special_tokens", json()), item["SpecialToken"].value("id", std::string()), where);
          auto& target = after_sequence ? impl->suffix_ids : impl->prefix_ids;
          target.insert(target.end(), ids.begin(), ids.end());
        } else {
          fail(where, ": template items must be Sequence or SpecialToken");
        }
      }
    } else if (type == "RobertaProcessing" || type == "BertProcessing") {
      for (const char* key : {"cls", "sep"}) {
        if (!post.contains(key) || !post[key].is_array() || post[key].size() != 2) fail(where, ": ", key, " must be [token, id]");
      }
      impl->prefix_ids.push_back(post["cls"][1].get<int32_t>());
      impl->suffix_ids.push_back(post["sep"][1].get<int32_t>());
    } else if (type == "Sequence") {
      const json& steps = post.value("processors", json::array());
      for (size_t i = 0; i < steps.size(); ++i) read_post(steps[i], where + ".processors[" + std::to_string(i) + "]");
    } else if (type != "ByteLevel") {
      fail(where, ": post-processor type \"", type,
           "\" is not supported (supported: TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence)");
    }
  };
  read_post(member("post_processor"), file + ": post_processor");

  // tokenizer_config.json: special tokens, and the BOS/EOS switches that
  // transformers' Llama and Gemma tokenizers apply over the post-processor.
  impl->clean_up_spaces = config.value("clean_up_tokenization_spaces", true);
  if (config.contains("additional_special_tokens") && config["additional_special_tokens"].is_array()) {
    for (const json& t : config["additional_special_tokens"]) {
      if (t.is_string()) impl->special_strings.insert(t.get<std::string>());
    }
  }
  auto id_of_config_token = [&](const char* key) -> std::optional<int32_t> {
    const auto name = config_token(config, key);
    return name ? impl->lookup(*name) : std::nullopt;
  };
  impl->bos = id_of_config_token("bos_token");
  impl->eos = id_of_config_token("eos_token");
  impl->pad = id_of_config_token("pad_token");
  const std::string tokenizer_class = config.value("tokenizer_class", std::string());
  const bool overrides_post = tokenizer_class.starts_with("Llama") || tokenizer_class.starts_with("CodeLlama") ||
                              tokenizer_class.starts_with("Gemma");
  if (overrides_post && (config.contains("add_bos_token") || config.contains("add_eos_token"))) {
    impl->prefix_ids.clear();
    impl->suffix_ids.clear();
    if (config.value("add_bos_token", true) && impl->bos) impl->prefix_ids.push_back(*impl->bos);
    if (config.value("add_eos_token", false) && impl->eos) impl->suffix_ids.push_back(*impl->eos);
  }
  for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
    if (const auto token = config_token(config, key)) impl->special_tokens[key] = *token;
  }
  if (config.contains("chat_template")) {
    const json& chat = config["chat_template"];
    if (chat.is_string()) {
      impl->chat_template = chat.get<std::string>();
    } else if (chat.is_array()) {
      // [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
      for (const json& named : chat) {
        if (named.is_object() && named.value("name", std::string()) == "default" && named.contains("template") &&
            named["template"].is_string()) {
          impl->chat_template = named["template"].get<std::string>();
        }
      }
    }
  }
  const bool byte_level = (member("pre_tokenizer").dump() + member("decoder").dump()).find("\"ByteLevel\"") != std::string::npos;
  impl->kind = byte_level ? "BPE (byte-level)"
               : impl->model->byte_fallback() ? "BPE (SentencePiece-style, byte fallback)"
                                              : "BPE";
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  return encode(text, add_special_tokens, 1);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens, int threads,
                                       size_t* parts) const {
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = impl_->prefix_ids;
  const size_t encoded_parts = impl_->encode_text(text, ids, threads);
  if (parts) *parts = encoded_parts;
  if (add_special_tokens) ids.insert(ids.end(), impl_->suffix_ids.begin(), impl_->suffix_ids.end());
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const auto token = id_to_token(id);
    if (!token) fail("token id ", id, " is not in the vocabulary of ", impl_->file, " (0 to ", impl_->vocab_size - 1, ")");
    if (skip_special_tokens && impl_->special_strings.count(*token)) continue;
    tokens.push_back(*token);
  }
  std::string text;
  if (impl_->decoder) {
    impl_->decoder->decode_chain(tokens);
    for (const std::string& t : tokens) text += t;
  } else {
    for (size_t i = 0; i < tokens.size(); ++i) text += (i ? " " : "") + tokens[i];
  }
  return impl_->clean_up_spaces ? clean_up_tokenization(std::move(text)) : text;
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (const auto it = impl_->added_by_id.find(id); it != impl_->added_by_id.end()) return impl_->added[it->second].content;
  if (const std::string* token = impl_->model->id_to_token(id)) return *token;
  return std::nullopt;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const { return impl_->lookup(token); }
int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

bool Tokenizer::is_special(int32_t id) const {
  const auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && impl_->added[it->second].special;
}

std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }
std::optional<int32_t> Tokenizer::pad_id() const { return impl_->pad; }

std::vector<int32_t> Tokenizer::special_ids() const {
  std::vector<int32_t> ids;
  for (const AddedToken& t : impl_->added) {
    if (t.special) ids.push_back(t.id);
  }
  return ids;
}

std::string Tokenizer::kind() const { return impl_->kind; }
const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }

std::optional<std::string> Tokenizer::special_token(std::string_view name) const {
  const auto it = impl_->special_tokens.find(name);
  if (it == impl_->special_tokens.end()) return std::nullopt;
  return it->second;
}

}  // namespace slm
