// A read-only memory mapping of a whole file. Weights are used in place from
// the mapping, so loading a model never copies them (the page cache is the one copy).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>

namespace slm {

class MappedFile {
 public:
  // Throws slm::Error naming the path when the file cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }
  // Whether [p, p+n) lies in this mapping.
  bool holds(const void* p, size_t n) const;
  // Drops the pages of [p, p+n) from this process (the page cache keeps
  // them; a later read maps them again): weights converted at load no longer
  // count twice in the resident memory.
  void release(const void* p, size_t n) const;

 private:
  MappedFile(std::filesystem::path path, const uint8_t* data, size_t size);
  std::filesystem::path path_;
  const uint8_t* data_;
  size_t size_;
};

}  // namespace slm
