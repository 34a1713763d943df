// Python's str methods on UTF-8 text, by code point, for the filters and
// methods of strings.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace slm::jinja {

std::vector<char32_t> code_points(std::string_view s);
std::string from_code_points(const std::vector<char32_t>& cps);
int64_t count_code_points(std::string_view s);

// Python's str.strip family: whitespace, or any of `chars`.
std::string strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right);

enum class Case { Upper, Lower, Title, Capitalize };
std::string change_case(std::string_view s, Case mode);

// Python's str.replace and str.split (no separator: at runs of whitespace);
// a negative count or max_split is no limit, as -1 is in Python. Both fail
// at `pos` past kMaxText bytes or kMaxItems parts.
std::string replace_all(const std::string& s, const std::string& from, const std::string& to, int64_t count, size_t pos);
std::vector<std::string> split(const std::string& s, const std::optional<std::string>& separator, int64_t max_split, size_t pos);

}  // namespace slm::jinja
