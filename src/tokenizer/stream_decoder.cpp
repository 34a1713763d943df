// Streaming decode: decoding tokens one at a time can split a UTF-8 character
// across tokens (byte-level BPE, byte fallback) and lose the spacing rules a
// decoder applies at the start of a sequence. So each step decodes a short
// window that starts a few tokens back and emits only the new, complete text.
#include <slm/tokenizer.h>

namespace slm {

namespace {

bool ends_with_replacement_char(const std::string& text) {
  return text.size() >= 3 && text.compare(text.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}

}  // namespace

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(&tokenizer), skip_special_(skip_special_tokens) {}

std::string StreamDecoder::push(int32_t id) {
  ids_.push_back(id);
  const std::span<const int32_t> all(ids_);
  const std::string prefix = tokenizer_->decode(all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_);
  const std::string text = tokenizer_->decode(all.subspan(prefix_offset_), skip_special_);
  if (text.size() <= prefix.size() || ends_with_replacement_char(text)) return {};
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return text.substr(prefix.size());
}

std::string StreamDecoder::finish() {
  const std::span<const int32_t> all(ids_);
  const std::string prefix = tokenizer_->decode(all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_);
  const std::string text = tokenizer_->decode(all.subspan(prefix_offset_), skip_special_);
  read_offset_ = prefix_offset_ = ids_.size();
  return text.size() > prefix.size() ? text.substr(prefix.size()) : std::string{};
}

}  // namespace slm
