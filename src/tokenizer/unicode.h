// UTF-8 helpers for the tokenizer: decoding code points, the GPT-2 byte ↔
// character table of byte-level BPE, and Unicode character classes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace slm::tok {

// Decodes the code point starting at text[i] and advances i. Invalid bytes
// never reach here: input is sanitized first.
char32_t next_code_point(std::string_view text, size_t& i);
void append_utf8(std::string& out, char32_t cp);
// Length in bytes of the UTF-8 sequence that starts with byte b.
size_t utf8_length(uint8_t b);

// Replaces every invalid UTF-8 sequence with U+FFFD (each maximal invalid
// subpart, as the WHATWG decoder and Rust's from_utf8_lossy do).
std::string sanitize_utf8(std::string_view text);
bool is_valid_utf8(std::string_view text);

// Byte-level BPE: each byte is shown as one printable character.
const std::string& byte_to_unicode(uint8_t byte);
// The byte a byte-level character stands for; -1 when it is not one.
int unicode_to_byte(char32_t cp);

bool is_whitespace(char32_t cp);  // Unicode White_Space
bool is_punctuation(char32_t cp);  // Unicode P* plus ASCII symbols, as `tokenizers` counts them
bool is_digit(char32_t cp);        // Unicode Nd
bool is_word_char(char32_t cp);    // alphanumeric or underscore

std::string_view trim_whitespace(std::string_view text, bool left, bool right);

// `s` (valid UTF-8) as a JSON string literal appended to `out`, as Python's
// json.dumps and nlohmann's dump write it: ", \ and control characters
// escaped (\b \f \n \r \t, else \u00XX); with ensure_ascii, DEL and every
// character past ASCII too (\uXXXX, surrogate pairs above the BMP).
void append_json_string(std::string& out, std::string_view s, bool ensure_ascii);

}  // namespace slm::tok
