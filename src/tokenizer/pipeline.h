// The stages of the `tokenizers` pipeline before and after the model:
// normalizers, pre-tokenizers and decoders, each built from its
// tokenizer.json object. `where` (e.g. "tokenizer.json: pre_tokenizer.pretokenizers[1]")
// names the object in error messages.
#pragma once

#include "tokenizer/pattern.h"

#include <nlohmann/json_fwd.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace slm::tok {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  std::string normalize(std::string text) const { return normalize(std::move(text), true, true); }
  // Normalizes a part of a text: `first` when the part starts the text,
  // `last` when it ends it (Prepend adds to the first part alone).
  virtual std::string normalize(std::string text, bool first, bool last) const = 0;
  // Whether a long text may be cut after its newlines and the parts
  // normalized apart (on threads): their results, joined, are the whole's.
  // Each step that says so keeps every newline where it was, so that the
  // next step of a Sequence also sees the parts end after newlines.
  virtual bool normalizes_in_parts() const { return true; }
};

// Returns null for a JSON null (no normalizer).
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& config, const std::string& where);

// Receives pieces of text one at a time, in order; a piece is a view that
// lives only for the call. Pieces stream from the pre-tokenizer to the model
// as they are cut, so no list of the pieces of a whole text is ever held.
using PieceSink = FunctionRef<void(std::string_view)>;

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Passes the sub-pieces of `piece` to `out`. `section` is the index of the
  // text between added tokens that the piece comes from (Metaspace's "first").
  virtual void split(std::string_view piece, size_t section, PieceSink out) const = 0;

  // When the first step cuts a text by a pattern into pieces (each match and
  // each stretch between matches) that the later steps take one at a time:
  // that pattern, and `split_rest`, which runs those later steps on one of
  // its pieces. A long text can then be cut where the pattern's scan would
  // pass anyway and its parts encoded apart. Null otherwise.
  virtual const Pattern* leading_pattern() const { return nullptr; }
  virtual void split_rest(std::string_view piece, size_t /*section*/, PieceSink out) const { out(piece); }
};

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& config, const std::string& where);

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Transforms the token strings in place (decode_chain of `tokenizers`).
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// `added_tokens`: token strings a ByteLevel decoder passes through unchanged.
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& config, const std::string& where,
                                      const std::vector<std::string>& added_tokens);

}  // namespace slm::tok
