// GGUF v3, the file format of llama.cpp (its docs/gguf.md): a header
// ("GGUF", version, tensor and metadata counts), typed key/value metadata,
// tensor infos (name, dimensions with the fastest-varying first, ggml type,
// offset), then the tensor data, each tensor aligned to general.alignment.
// Files are memory-mapped; every length, count and offset is checked against
// the file before it is used, and errors name the file, the key or tensor and
// what was expected.
#pragma once

#include "core/mapped_file.h"

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace slm {

enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9, U64 = 10, I64 = 11,
  F64 = 12,
};
std::string_view gguf_type_name(GgufType type);

// The ggml tensor types slm reads or names (llama.cpp's ggml.h numbering).
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9, Q2_K = 10, Q3_K = 11, Q4_K = 12,
  Q5_K = 13, Q6_K = 14, Q8_K = 15, IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21,
  IQ2_S = 22, IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30, TQ1_0 = 34,
  TQ2_0 = 35,
};

struct GgmlTypeTraits {
  std::string_view name;  // "Q4_K"
  int64_t block_elements;  // elements per block (1 for plain types)
  size_t block_bytes;
};
// nullopt for a number ggml does not define.
std::optional<GgmlTypeTraits> ggml_type_traits(uint32_t type);
std::string ggml_type_name(uint32_t type);  // "Q4_K", or "type 99" when unknown

// One metadata value. Scalars fill one field (integers of every width in
// `integer`, u64 past INT64_MAX in `unsigned_integer`); arrays fill the one
// vector of their element kind (strings, integers and bools, floats, or
// nested arrays).
struct GgufValue {
  GgufType type = GgufType::U8;
  int64_t integer = 0;
  uint64_t unsigned_integer = 0;
  double real = 0;
  std::string string;
  GgufType element = GgufType::U8;  // arrays
  std::vector<std::string> strings;
  std::vector<int64_t> integers;
  std::vector<double> reals;
  std::vector<GgufValue> arrays;

  bool is_integer() const;
  bool is_float() const { return type == GgufType::F32 || type == GgufType::F64; }
  size_t array_size() const;

  static GgufValue of_u32(uint32_t v);
  static GgufValue of_i32(int32_t v);
  static GgufValue of_u64(uint64_t v);
  static GgufValue of_f32(float v);
  static GgufValue of_bool(bool v);
  static GgufValue of_string(std::string v);
  static GgufValue of_strings(std::vector<std::string> v);
  static GgufValue of_integers(GgufType element, std::vector<int64_t> v);
  static GgufValue of_reals(GgufType element, std::vector<double> v);
};

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // ne[0] first: the length of a row
  uint32_t type = 0;           // a GgmlType value
  uint64_t offset = 0;         // into the data section
  uint64_t bytes = 0;          // what type × dims needs
  uint64_t elements() const;
};

class GgufFile {
 public:
  // Throws slm::Error naming the file and the key or tensor at fault.
  static GgufFile open(const std::filesystem::path& path);
  // Parses and validates bytes held in memory (the fuzz target's entry
  // point); the result views `bytes`, which must outlive it.
  static GgufFile parse(const uint8_t* bytes, size_t size, std::string file_name);

  const std::string& name() const { return name_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue, std::less<>>& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }

  bool has(std::string_view key) const { return metadata_.count(key) != 0; }
  const GgufValue* find(std::string_view key) const;
  // Typed reads: a missing key or one of another type fails naming it and
  // what was expected.
  const GgufValue& get(std::string_view key) const;
  std::string get_string(std::string_view key) const;
  int64_t get_integer(std::string_view key) const;
  double get_float(std::string_view key) const;  // F32/F64 (integers accepted)
  bool get_bool(std::string_view key) const;
  std::optional<std::string> string_or(std::string_view key) const;
  std::optional<int64_t> integer_or(std::string_view key) const;
  std::optional<double> float_or(std::string_view key) const;
  std::optional<bool> bool_or(std::string_view key) const;
  const std::vector<std::string>& string_array(std::string_view key) const;
  const std::vector<int64_t>& integer_array(std::string_view key) const;
  const std::vector<double>& float_array(std::string_view key) const;

  const GgufTensorInfo* find_tensor(std::string_view name) const;
  // The bytes of a tensor inside the mapping.
  const uint8_t* tensor_data(const GgufTensorInfo& info) const { return data_ + info.offset; }
  // What keeps the mapping alive (for tensors that view it).
  const std::shared_ptr<MappedFile>& mapping() const { return file_; }

 private:
  std::string name_;
  std::shared_ptr<MappedFile> file_;
  const uint8_t* data_ = nullptr;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, GgufValue, std::less<>> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// Builds a GGUF file: metadata in the order set, tensors in the order added,
// each one's data at the next multiple of the alignment.
class GgufWriter {
 public:
  explicit GgufWriter(uint64_t alignment = 32);
  void set(std::string key, GgufValue value);
  // `data` (bytes of type × dims) must stay valid until write(); `owner`
  // keeps it alive when it is not the caller's.
  void add_tensor(std::string name, GgmlType type, std::vector<uint64_t> dims, const void* data, size_t size,
                  std::shared_ptr<const void> owner = nullptr);
  // Writes through a temporary file renamed into place once complete.
  void write(const std::filesystem::path& path) const;

 private:
  struct Entry {
    GgufTensorInfo info;
    const void* data;
    std::shared_ptr<const void> owner;
  };
  uint64_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<Entry> tensors_;
  uint64_t data_size_ = 0;
};

// The GGUF magic: whether `path` is a file that starts with it.
bool is_gguf_file(const std::filesystem::path& path);

}  // namespace slm
