// Writing a file so that readers see either the old file or the complete new
// one: write to a temporary name beside it, flush, then rename.
#pragma once

#include <filesystem>
#include <functional>
#include <ostream>
#include <string_view>

namespace slm {

void write_file_atomically(const std::filesystem::path& path, const std::function<void(std::ostream&)>& write);
void write_text_atomically(const std::filesystem::path& path, std::string_view text);

}  // namespace slm
