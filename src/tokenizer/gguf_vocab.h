// Tokenizers in GGUF files: the tokenizer.ggml.* metadata llama.cpp reads
// (model "gpt2" for byte-level BPE with the pre-tokenizer "pre" names, or
// "llama" for SentencePiece-style BPE with byte fallback; tokens, token
// types, merges, scores, special ids, chat template), written from a model
// folder's tokenizer.json, and read back into slm's Tokenizer as the pipeline
// that tokenizer.json would spell out.
#pragma once

#include "io/gguf.h"

#include <filesystem>
#include <string>

namespace slm {

// Writes the tokenizer of `model_dir` (tokenizer.json, tokenizer_config.json)
// as tokenizer.* metadata; returns what it wrote, e.g. "gpt2 (llama-bpe)".
// llama.cpp wants one token per row of the embedding: a model whose
// `vocab_size` is larger than its tokenizer (Qwen2.5 and SmolLM pad theirs)
// gets unused "[PADn]" tokens up to it, as llama.cpp's converter writes them
// (0: the tokenizer's own size). Fails naming the file and field when the
// tokenizer has no GGUF form or more tokens than the model has rows.
std::string write_gguf_tokenizer_metadata(const std::filesystem::path& model_dir, GgufWriter& writer,
                                          int64_t vocab_size = 0);

// The tokenizer.json and tokenizer_config.json texts the metadata of `file` describes.
std::pair<std::string, std::string> gguf_tokenizer_json(const GgufFile& file);

}  // namespace slm
