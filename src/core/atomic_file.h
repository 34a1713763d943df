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
// `to` becomes `from`'s content in the same way: a hard link (no second copy
// on disk; both names then share one file, so neither may be written in
// place) or, where the file system has none, a copy.
void link_file_atomically(const std::filesystem::path& from, const std::filesystem::path& to);

}  // namespace slm
