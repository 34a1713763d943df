// safetensors: an 8-byte little-endian header length, a JSON header mapping
// tensor names to {dtype, shape, data_offsets}, then the raw bytes. Files are
// memory-mapped and every header entry is validated before any byte is used.
#pragma once

#include <slm/tensor.h>

#include "core/mapped_file.h"
#include "io/weight_source.h"

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace slm {

struct TensorEntry {
  DType dtype;
  std::vector<int64_t> shape;
  size_t begin = 0;  // offsets into the data section
  size_t end = 0;
};

class SafetensorsFile {
 public:
  // Throws slm::Error naming the file and the entry at fault.
  static SafetensorsFile open(const std::filesystem::path& path);
  // Validates a header held in memory (the fuzz target's entry point).
  static std::map<std::string, TensorEntry> parse_header(const uint8_t* bytes, size_t size,
                                                         const std::string& file_name,
                                                         std::map<std::string, std::string>* metadata);

  const std::map<std::string, TensorEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  // A tensor viewing the mapped bytes (no copy).
  Tensor tensor(const std::string& name) const;
  const std::filesystem::path& path() const { return file_->path(); }
  const MappedFile& mapping() const { return *file_; }

 private:
  std::shared_ptr<MappedFile> file_;
  const uint8_t* data_ = nullptr;
  std::map<std::string, TensorEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors to `path` (data laid out widest dtype first, otherwise in the
// given order, so each is aligned) through a temporary file that is renamed
// into place only once complete.
void write_safetensors(const std::filesystem::path& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// The weights of a model folder: model.safetensors, or the shards listed in
// model.safetensors.index.json.
class WeightFiles : public WeightSource {
 public:
  static WeightFiles open(const std::filesystem::path& dir);
  bool contains(const std::string& name) const override { return where_.count(name) != 0; }
  Tensor tensor(const std::string& name) const override;
  std::vector<std::string> names() const override;
  std::string describe() const override;  // "model.safetensors" or "3 shards of model.safetensors.index.json"
  // MappedFile::release of the file the view is in.
  void release(const Tensor& view) const override;

 private:
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> where_;
  std::string description_;
};

}  // namespace slm
