#include "core/atomic_file.h"

#include <slm/error.h>

#include <fstream>
#include <system_error>
#include <unistd.h>

namespace slm {

void write_file_atomically(const std::filesystem::path& path, const std::function<void(std::ostream&)>& write) {
  std::filesystem::path temp = path;
  temp += ".tmp" + std::to_string(::getpid());
  try {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out) fail(path.string(), ": cannot open for writing");
    write(out);
    out.flush();
    if (!out) fail(path.string(), ": write failed (disk full?)");
    out.close();
    std::error_code ec;
    std::filesystem::rename(temp, path, ec);
    if (ec) fail(path.string(), ": cannot rename temporary file into place: ", ec.message());
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(temp, ignored);
    throw;
  }
}

void write_text_atomically(const std::filesystem::path& path, std::string_view text) {
  write_file_atomically(path, [&](std::ostream& out) { out.write(text.data(), static_cast<std::streamsize>(text.size())); });
}

}  // namespace slm
