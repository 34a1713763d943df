#include "tokenizer/gguf_vocab.h"

#include <slm/error.h>
#include <slm/tokenizer.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>

namespace slm {

namespace {

using json = nlohmann::json;

// llama.cpp's token types (gguf-py TokenType).
enum TokenType : int64_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// The split patterns of the byte-level pre-tokenizers, as tokenizer.json spells them.
constexpr const char* kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
constexpr const char* kMetaspace = "\xe2\x96\x81";  // ▁

json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

json split_then_bytes(const char* pattern) {
  return {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
            byte_level(false)}}};
}

// The byte-level pre-tokenizers llama.cpp names, as tokenizer.json has them.
json pre_tokenizer_for(const std::string& pre, const std::string& where) {
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3" || pre == "falcon3") return split_then_bytes(kLlama3Pattern);
  if (pre == "qwen2" || pre == "deepseek-r1-qwen") return split_then_bytes(kQwen2Pattern);
  if (pre == "smollm" || pre == "starcoder") {
    return {{"type", "Sequence"},
            {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)}}};
  }
  if (pre == "gpt-2") return byte_level(true);
  fail(where, ": tokenizer.ggml.pre \"", pre,
       "\" is not supported (supported: llama-bpe, llama3, qwen2, smollm, starcoder, gpt-2)");
}

// Which pre-tokenizer name a tokenizer.json's pre_tokenizer is; empty when none fits.
std::string pre_name_of(const json& pre) {
  auto same = [&](const json& candidate) {
    // trim_offsets and add_prefix_space of a ByteLevel that does not split
    // change offsets only, never ids.
    auto strip = [](json j) {
      if (j.contains("pretokenizers")) {
        for (json& p : j["pretokenizers"]) p.erase("trim_offsets");
      }
      j.erase("trim_offsets");
      return j;
    };
    return strip(pre) == strip(candidate);
  };
  for (const char* name : {"llama-bpe", "qwen2", "smollm", "gpt-2"}) {
    if (same(pre_tokenizer_for(name, ""))) return name;
  }
  return {};
}

json read_json(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path.string(), ": cannot open");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail(path.string(), ": not valid JSON: ", e.what());
  }
}

bool contains_type(const json& j, const std::string& type) {
  return j.dump().find("\"type\":\"" + type + "\"") != std::string::npos;
}

// The ids a tokenizer puts before and after a text (its post-processor).
std::pair<std::vector<int32_t>, std::vector<int32_t>> added_around(const Tokenizer& t) {
  const auto with = t.encode("a", true), without = t.encode("a", false);
  const auto at = std::search(with.begin(), with.end(), without.begin(), without.end());
  if (at == with.end()) return {};
  return {std::vector<int32_t>(with.begin(), at), std::vector<int32_t>(at + static_cast<ptrdiff_t>(without.size()), with.end())};
}

}  // namespace

std::string write_gguf_tokenizer_metadata(const std::filesystem::path& dir, GgufWriter& w, int64_t vocab_size) {
  const auto path = dir / "tokenizer.json";
  const std::string file = path.string();
  const json root = read_json(path);
  const Tokenizer tokenizer = Tokenizer::from_dir(dir);
  if (!root.contains("model") || !root["model"].is_object() || root["model"].value("type", "BPE") != "BPE") {
    fail(file, ": model.type must be BPE for a GGUF tokenizer");
  }
  const json& model = root["model"];
  const json pre = root.value("pre_tokenizer", json());
  const json normalizer = root.value("normalizer", json());
  const bool byte_level = contains_type(pre, "ByteLevel") || contains_type(root.value("decoder", json()), "ByteLevel");
  const bool sentencepiece = !byte_level && model.value("byte_fallback", false) &&
                             (normalizer.dump().find(kMetaspace) != std::string::npos || contains_type(pre, "Metaspace"));
  if (!byte_level && !sentencepiece) {
    fail(file, ": neither a byte-level BPE nor a SentencePiece-style one with byte_fallback; it has no GGUF form");
  }
  std::string pre_name;
  if (byte_level) {
    pre_name = pre_name_of(pre);
    if (pre_name.empty()) {
      fail(file, ": pre_tokenizer ", pre.dump(), " matches none of llama.cpp's (llama-bpe, qwen2, smollm, gpt-2)");
    }
    if (!normalizer.is_null() && !(pre_name == "qwen2" && normalizer == json{{"type", "NFC"}})) {
      fail(file, ": normalizer ", normalizer.dump(), " has no place in a GGUF \"", pre_name, "\" tokenizer");
    }
  }

  if (vocab_size > 0 && tokenizer.vocab_size() > vocab_size) {
    fail(file, ": ", tokenizer.vocab_size(), " tokens, more than the model's vocab_size ", vocab_size,
         " (llama.cpp needs one embedding row per token)");
  }
  const auto size = static_cast<int32_t>(std::max<int64_t>(tokenizer.vocab_size(), vocab_size));
  std::vector<std::string> tokens(static_cast<size_t>(size));
  std::vector<int64_t> types(static_cast<size_t>(size), kNormal);
  std::vector<double> scores(static_cast<size_t>(size), 0.0);
  const std::optional<std::string> unk = model.contains("unk_token") && model["unk_token"].is_string()
                                             ? std::optional(model["unk_token"].get<std::string>())
                                             : std::nullopt;
  std::set<int32_t> added;
  for (const json& t : root.value("added_tokens", json::array())) added.insert(t["id"].get<int32_t>());
  for (int32_t id = 0; id < size; ++id) {
    const auto token = tokenizer.id_to_token(id);
    const auto i = static_cast<size_t>(id);
    if (!token) {
      tokens[i] = "[PAD" + std::to_string(id) + "]";
      types[i] = kUnused;
      continue;
    }
    tokens[i] = *token;
    // SentencePiece orders pieces by score; the merges' order is the ids'.
    scores[i] = sentencepiece ? -static_cast<double>(id) : 0.0;
    if (added.count(id)) {
      types[i] = tokenizer.is_special(id) ? kControl : kUserDefined;
    } else if (unk && *token == *unk) {
      types[i] = kUnknown;
    } else if (sentencepiece && token->size() == 6 && token->starts_with("<0x") && token->back() == '>') {
      types[i] = kByte;
    }
  }
  std::vector<std::string> merges;
  for (const json& m : model.value("merges", json::array())) {
    merges.push_back(m.is_string() ? m.get<std::string>() : m[0].get<std::string>() + " " + m[1].get<std::string>());
  }

  w.set("tokenizer.ggml.model", GgufValue::of_string(sentencepiece ? "llama" : "gpt2"));
  if (byte_level) w.set("tokenizer.ggml.pre", GgufValue::of_string(pre_name));
  w.set("tokenizer.ggml.tokens", GgufValue::of_strings(std::move(tokens)));
  if (sentencepiece) w.set("tokenizer.ggml.scores", GgufValue::of_reals(GgufType::F32, std::move(scores)));
  w.set("tokenizer.ggml.token_type", GgufValue::of_integers(GgufType::I32, std::move(types)));
  w.set("tokenizer.ggml.merges", GgufValue::of_strings(std::move(merges)));
  const auto [before, after] = added_around(tokenizer);
  std::optional<int32_t> bos = tokenizer.bos_id(), eos = tokenizer.eos_id();
  if (before.size() > 1 || after.size() > 1) fail(file, ": its post-processor adds more than one token before or after a text");
  if (!before.empty()) bos = before[0];
  if (!after.empty()) eos = after[0];
  if (bos) w.set("tokenizer.ggml.bos_token_id", GgufValue::of_u32(static_cast<uint32_t>(*bos)));
  if (eos) w.set("tokenizer.ggml.eos_token_id", GgufValue::of_u32(static_cast<uint32_t>(*eos)));
  if (const auto pad = tokenizer.pad_id()) w.set("tokenizer.ggml.padding_token_id", GgufValue::of_u32(static_cast<uint32_t>(*pad)));
  if (unk) {
    if (const auto id = tokenizer.token_to_id(*unk)) w.set("tokenizer.ggml.unknown_token_id", GgufValue::of_u32(static_cast<uint32_t>(*id)));
  }
  w.set("tokenizer.ggml.add_bos_token", GgufValue::of_bool(!before.empty()));
  w.set("tokenizer.ggml.add_eos_token", GgufValue::of_bool(!after.empty()));
  if (sentencepiece) {
    const bool prefix = normalizer.dump().find("\"Prepend\"") != std::string::npos || contains_type(pre, "Metaspace");
    w.set("tokenizer.ggml.add_space_prefix", GgufValue::of_bool(prefix));
  }
  if (!tokenizer.chat_template().empty()) w.set("tokenizer.chat_template", GgufValue::of_string(tokenizer.chat_template()));
  // Decoding's clean-up of spaces before punctuation has no llama.cpp key;
  // slm keeps it under its own so a GGUF decodes as the folder did.
  const auto config_path = dir / "tokenizer_config.json";
  const json config = std::filesystem::exists(config_path) ? read_json(config_path) : json::object();
  w.set("slm.tokenizer.clean_up_tokenization_spaces", GgufValue::of_bool(config.value("clean_up_tokenization_spaces", true)));
  return sentencepiece ? "llama (SentencePiece-style BPE)" : "gpt2 (" + pre_name + ")";
}

std::pair<std::string, std::string> gguf_tokenizer_json(const GgufFile& f) {
  const std::string kind = f.get_string("tokenizer.ggml.model");
  if (kind != "gpt2" && kind != "llama") {
    fail(f.name(), ": tokenizer.ggml.model \"", kind, "\" is not supported (supported: gpt2, llama)");
  }
  const bool sentencepiece = kind == "llama";
  const auto& tokens = f.string_array("tokenizer.ggml.tokens");
  const std::vector<int64_t> types = f.has("tokenizer.ggml.token_type") ? f.integer_array("tokenizer.ggml.token_type")
                                                                         : std::vector<int64_t>(tokens.size(), kNormal);
  if (types.size() != tokens.size()) {
    fail(f.name(), ": tokenizer.ggml.token_type has ", types.size(), " entries, tokenizer.ggml.tokens ", tokens.size());
  }
  auto special_id = [&](const char* key) -> std::optional<int64_t> {
    const auto id = f.integer_or(key);
    if (id && (*id < 0 || *id >= static_cast<int64_t>(tokens.size()))) {
      fail(f.name(), ": ", key, " = ", *id, " is outside the ", tokens.size(), " tokens");
    }
    return id;
  };
  const auto bos = special_id("tokenizer.ggml.bos_token_id"), eos = special_id("tokenizer.ggml.eos_token_id");
  const auto pad = special_id("tokenizer.ggml.padding_token_id"), unk = special_id("tokenizer.ggml.unknown_token_id");

  json vocab = json::object(), added = json::array();
  for (size_t id = 0; id < tokens.size(); ++id) {
    const int64_t type = types[id];
    const bool control = type == kControl || type == kUserDefined;
    // Added tokens stay out of the BPE vocabulary where byte-level models
    // keep them (no merge reaches them); SentencePiece lists them in both.
    if (!control || sentencepiece) vocab[tokens[id]] = id;
    if (control || (sentencepiece && type == kUnknown)) {
      added.push_back({{"id", id}, {"content", tokens[id]}, {"single_word", false}, {"lstrip", false},
                       {"rstrip", false}, {"normalized", false}, {"special", type != kUserDefined}});
    }
  }
  json merges = json::array();
  if (f.has("tokenizer.ggml.merges")) {
    for (const std::string& m : f.string_array("tokenizer.ggml.merges")) {
      const size_t space = m.find(' ');
      if (space == std::string::npos) fail(f.name(), ": tokenizer.ggml.merges entry \"", m, "\" is not two tokens");
      merges.push_back({m.substr(0, space), m.substr(space + 1)});
    }
  } else if (sentencepiece) {
    // SentencePiece files carry scores instead: every split of a piece into
    // two pieces is a merge, ranked by the piece's score (as transformers'
    // SentencePieceExtractor orders them).
    const auto& scores = f.float_array("tokenizer.ggml.scores");
    if (scores.size() != tokens.size()) fail(f.name(), ": tokenizer.ggml.scores has ", scores.size(), " entries");
    std::map<std::string, size_t> ids;
    for (size_t id = 0; id < tokens.size(); ++id) {
      if (types[id] == kNormal || types[id] == kUserDefined) ids.emplace(tokens[id], id);
    }
    struct Merge {
      double score;
      size_t piece, left, right;
    };
    std::vector<Merge> found;
    for (size_t id = 0; id < tokens.size(); ++id) {
      if (types[id] != kNormal) continue;
      const std::string& piece = tokens[id];
      for (size_t k = 1; k < piece.size(); ++k) {
        const auto l = ids.find(piece.substr(0, k)), r = ids.find(piece.substr(k));
        if (l != ids.end() && r != ids.end()) found.push_back({scores[id], id, l->second, r->second});
      }
    }
    std::stable_sort(found.begin(), found.end(), [](const Merge& a, const Merge& b) {
      if (a.score != b.score) return a.score > b.score;
      if (a.piece != b.piece) return a.piece < b.piece;
      return std::pair(a.left, a.right) < std::pair(b.left, b.right);
    });
    for (const Merge& m : found) merges.push_back({tokens[m.left], tokens[m.right]});
  } else {
    fail(f.name(), ": missing metadata \"tokenizer.ggml.merges\" (a gpt2 tokenizer needs its merges)");
  }

  json root = {{"version", "1.0"}, {"added_tokens", added}};
  json model = {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}};
  if (sentencepiece) {
    const bool prefix = f.bool_or("tokenizer.ggml.add_space_prefix").value_or(true);
    json normalizers = json::array();
    if (prefix) normalizers.push_back({{"type", "Prepend"}, {"prepend", kMetaspace}});
    normalizers.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kMetaspace}});
    root["normalizer"] = {{"type", "Sequence"}, {"normalizers", normalizers}};
    root["pre_tokenizer"] = nullptr;
    json decoders = {{{"type", "Replace"}, {"pattern", {{"String", kMetaspace}}}, {"content", " "}},
                     {{"type", "ByteFallback"}},
                     {{"type", "Fuse"}}};
    if (prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    root["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
    model["byte_fallback"] = true;
    model["fuse_unk"] = true;
    if (unk) model["unk_token"] = tokens[static_cast<size_t>(*unk)];
  } else {
    const std::string pre = f.string_or("tokenizer.ggml.pre").value_or("gpt-2");
    root["pre_tokenizer"] = pre_tokenizer_for(pre, f.name());
    root["normalizer"] = pre == "qwen2" || pre == "deepseek-r1-qwen" ? json{{"type", "NFC"}} : json();
    root["decoder"] = byte_level(true);
    // llama.cpp takes a word that is a token whole under Llama 3's pre-tokenizer.
    model["ignore_merges"] = pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3" || pre == "falcon3";
  }
  root["model"] = model;
  // The post-processor: BOS and EOS as tokenizer.ggml.add_*_token say
  // (llama.cpp adds BOS by default for SentencePiece and Llama 3).
  const bool default_bos = sentencepiece || model.value("ignore_merges", false);
  json single = json::array(), specials = json::object();
  auto special = [&](const std::optional<int64_t>& id) {
    const std::string& name = tokens[static_cast<size_t>(*id)];
    single.push_back({{"SpecialToken", {{"id", name}, {"type_id", 0}}}});
    specials[name] = {{"id", name}, {"ids", {*id}}, {"tokens", {name}}};
  };
  if (bos && f.bool_or("tokenizer.ggml.add_bos_token").value_or(default_bos)) special(bos);
  single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  if (eos && f.bool_or("tokenizer.ggml.add_eos_token").value_or(false)) special(eos);
  root["post_processor"] = {{"type", "TemplateProcessing"}, {"single", single}, {"special_tokens", specials}};

  json config = {{"clean_up_tokenization_spaces", f.bool_or("slm.tokenizer.clean_up_tokenization_spaces").value_or(false)}};
  for (const auto& [key, id] : {std::pair{"bos_token", bos}, std::pair{"eos_token", eos}, std::pair{"pad_token", pad},
                                std::pair{"unk_token", unk}}) {
    if (id) config[key] = tokens[static_cast<size_t>(*id)];
  }
  if (const auto chat = f.string_or("tokenizer.chat_template")) config["chat_template"] = *chat;
  return {root.dump(), config.dump()};
}

Tokenizer Tokenizer::from_gguf(const std::filesystem::path& path) {
  const GgufFile file = GgufFile::open(path);
  const auto [tokenizer_json, config_json] = gguf_tokenizer_json(file);
  return from_json_text(tokenizer_json, config_json, path.string() + " (tokenizer.ggml metadata)");
}

}  // namespace slm
