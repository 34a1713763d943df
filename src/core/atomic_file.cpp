#include "core/atomic_file.h"

#include <slm/error.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <fstream>
#include <mutex>
#include <system_error>
#include <unistd.h>

namespace slm {

namespace {

// Temporary files being written right now. Ctrl-C (or a kill) during `slm
// create` would otherwise leave a half-written *.tmpPID beside the model: a
// handler for SIGINT, SIGTERM and SIGHUP unlinks them (unlink is
// async-signal-safe), then re-raises the signal with its default action.
// Installed only where the program left the default action in place.
struct PendingFile {
  std::atomic<int> state{0};  // 0 free, 1 being filled in, 2 names a temporary file
  char path[4096];
};
PendingFile g_pending[8];

extern "C" void remove_pending_and_reraise(int signal_number) {
  for (PendingFile& p : g_pending) {
    if (p.state.load() == 2) ::unlink(p.path);
  }
  std::signal(signal_number, SIG_DFL);
  std::raise(signal_number);
}

void install_cleanup_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (const int signal_number : {SIGINT, SIGTERM, SIGHUP}) {
      struct sigaction current {};
      if (::sigaction(signal_number, nullptr, &current) != 0 || current.sa_handler != SIG_DFL) continue;
      struct sigaction handler {};
      handler.sa_handler = remove_pending_and_reraise;
      sigemptyset(&handler.sa_mask);
      ::sigaction(signal_number, &handler, nullptr);
    }
  });
}

// Registers `temp` for removal on a signal while it exists.
class PendingGuard {
 public:
  explicit PendingGuard(const std::filesystem::path& temp) {
    install_cleanup_handlers();
    const std::string& text = temp.native();
    if (text.size() >= sizeof(PendingFile::path)) return;
    for (PendingFile& p : g_pending) {
      int expected = 0;
      if (p.state.compare_exchange_strong(expected, 1)) {
        // Only a complete path is ever unlinked: a prefix could name the real file.
        std::memcpy(p.path, text.c_str(), text.size() + 1);
        p.state.store(2);
        slot_ = &p;
        return;
      }
    }
  }
  ~PendingGuard() {
    if (slot_) slot_->state.store(0);
  }
  PendingGuard(const PendingGuard&) = delete;
  PendingGuard& operator=(const PendingGuard&) = delete;

 private:
  PendingFile* slot_ = nullptr;
};

// Beside the file, unique to this process.
std::filesystem::path temporary_name(const std::filesystem::path& path) {
  std::filesystem::path temp = path;
  temp += ".tmp" + std::to_string(::getpid());
  return temp;
}

}  // namespace

void write_file_atomically(const std::filesystem::path& path, const std::function<void(std::ostream&)>& write) {
  const std::filesystem::path temp = temporary_name(path);
  const PendingGuard pending(temp);
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

void link_file_atomically(const std::filesystem::path& from, const std::filesystem::path& to) {
  const std::filesystem::path temp = temporary_name(to);
  const PendingGuard pending(temp);
  std::error_code ec;
  std::filesystem::remove(temp, ec);
  std::filesystem::create_hard_link(from, temp, ec);
  // File systems without hard links (FAT, some network mounts) get a copy.
  if (ec) std::filesystem::copy_file(from, temp, std::filesystem::copy_options::overwrite_existing, ec);
  if (ec) fail(to.string(), ": cannot link or copy ", from.string(), ": ", ec.message());
  std::filesystem::rename(temp, to, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(temp, ignored);
    fail(to.string(), ": cannot rename temporary file into place: ", ec.message());
  }
}

}  // namespace slm
