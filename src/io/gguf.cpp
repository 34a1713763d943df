#include "io/gguf.h"

#include <slm/error.h>

#include "core/atomic_file.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>
#include <limits>

namespace slm {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kVersion = 3;
constexpr int kMaxDims = 4;         // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 8;   // nested arrays: none in practice, a bound against recursion
constexpr uint64_t kMaxAlignment = 1u << 20;

struct TypeRow {
  uint32_t id;
  GgmlTypeTraits traits;
};
constexpr TypeRow kGgmlTypes[] = {
    {0, {"F32", 1, 4}},         {1, {"F16", 1, 2}},        {2, {"Q4_0", 32, 18}},     {3, {"Q4_1", 32, 20}},
    {6, {"Q5_0", 32, 22}},      {7, {"Q5_1", 32, 24}},     {8, {"Q8_0", 32, 34}},     {9, {"Q8_1", 32, 40}},
    {10, {"Q2_K", 256, 84}},    {11, {"Q3_K", 256, 110}},  {12, {"Q4_K", 256, 144}},  {13, {"Q5_K", 256, 176}},
    {14, {"Q6_K", 256, 210}},   {15, {"Q8_K", 256, 292}},  {16, {"IQ2_XXS", 256, 66}}, {17, {"IQ2_XS", 256, 74}},
    {18, {"IQ3_XXS", 256, 98}}, {19, {"IQ1_S", 256, 50}},  {20, {"IQ4_NL", 32, 18}},  {21, {"IQ3_S", 256, 110}},
    {22, {"IQ2_S", 256, 82}},   {23, {"IQ4_XS", 256, 136}}, {24, {"I8", 1, 1}},       {25, {"I16", 1, 2}},
    {26, {"I32", 1, 4}},        {27, {"I64", 1, 8}},       {28, {"F64", 1, 8}},       {29, {"IQ1_M", 256, 56}},
    {30, {"BF16", 1, 2}},       {34, {"TQ1_0", 256, 54}},  {35, {"TQ2_0", 256, 66}},
};

// Bytes of one scalar of `type`; 0 for strings and arrays.
size_t scalar_bytes(GgufType type) {
  switch (type) {
    case GgufType::U8: case GgufType::I8: case GgufType::Bool: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    case GgufType::String: case GgufType::Array: return 0;
  }
  return 0;
}

bool known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::F64); }

// Reads little-endian values from [p, end), failing with the file's name and
// what was being read when the bytes run out.
class Cursor {
 public:
  Cursor(const uint8_t* begin, size_t size, const std::string& file) : begin_(begin), p_(begin), end_(begin + size), file_(file) {}

  size_t offset() const { return static_cast<size_t>(p_ - begin_); }
  size_t remaining() const { return static_cast<size_t>(end_ - p_); }

  template <class T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_, sizeof v);
    p_ += sizeof v;
    return v;
  }
  std::string string(const std::string& what) {
    const auto n = read<uint64_t>(what + " (string length)");
    if (n > remaining()) fail(file_, ": ", what, ": string of ", n, " bytes runs past the end of the file (", remaining(),
                              " bytes left at offset ", offset(), ")");
    std::string s(reinterpret_cast<const char*>(p_), static_cast<size_t>(n));
    p_ += n;
    return s;
  }

 private:
  void need(size_t n, const std::string& what) const {
    if (n > remaining()) {
      fail(file_, ": truncated: ", what, " needs ", n, " bytes at offset ", offset(), ", the file ends after ", remaining());
    }
  }
  const uint8_t* begin_;
  const uint8_t* p_;
  const uint8_t* end_;
  const std::string& file_;
};

GgufValue read_scalar(Cursor& in, GgufType type, const std::string& what) {
  GgufValue v;
  v.type = type;
  switch (type) {
    case GgufType::U8: v.integer = in.read<uint8_t>(what); break;
    case GgufType::I8: v.integer = in.read<int8_t>(what); break;
    case GgufType::U16: v.integer = in.read<uint16_t>(what); break;
    case GgufType::I16: v.integer = in.read<int16_t>(what); break;
    case GgufType::U32: v.integer = in.read<uint32_t>(what); break;
    case GgufType::I32: v.integer = in.read<int32_t>(what); break;
    case GgufType::I64: v.integer = in.read<int64_t>(what); break;
    case GgufType::U64:
      v.unsigned_integer = in.read<uint64_t>(what);
      v.integer = static_cast<int64_t>(std::min<uint64_t>(v.unsigned_integer, std::numeric_limits<int64_t>::max()));
      break;
    case GgufType::F32: v.real = in.read<float>(what); break;
    case GgufType::F64: v.real = in.read<double>(what); break;
    case GgufType::Bool: {
      const auto b = in.read<uint8_t>(what);
      if (b > 1) fail(what, ": a bool must be 0 or 1, got ", static_cast<int>(b));
      v.integer = b;
      break;
    }
    case GgufType::String: v.string = in.string(what); break;
    case GgufType::Array: break;
  }
  if (type != GgufType::U64) v.unsigned_integer = static_cast<uint64_t>(v.integer);
  return v;
}

GgufValue read_value(Cursor& in, uint32_t raw_type, const std::string& where, const std::string& file, int depth) {
  if (!known_value_type(raw_type)) {
    fail(file, ": ", where, ": unknown value type ", raw_type, " (GGUF defines 0 to 12)");
  }
  const auto type = static_cast<GgufType>(raw_type);
  if (type != GgufType::Array) return read_scalar(in, type, file + ": " + where);
  if (depth >= kMaxArrayDepth) fail(file, ": ", where, ": arrays nested deeper than ", kMaxArrayDepth);
  GgufValue v;
  v.type = GgufType::Array;
  const auto element = in.read<uint32_t>(file + ": " + where + " (array element type)");
  if (!known_value_type(element)) fail(file, ": ", where, ": unknown array element type ", element);
  v.element = static_cast<GgufType>(element);
  const auto count = in.read<uint64_t>(file + ": " + where + " (array length)");
  // Every element takes at least a byte (a string its 8-byte length): a count
  // the rest of the file cannot hold is refused before anything is reserved.
  const size_t min_bytes = v.element == GgufType::String || v.element == GgufType::Array ? 8 : scalar_bytes(v.element);
  if (count > in.remaining() / min_bytes) {
    fail(file, ": ", where, ": array of ", count, " ", gguf_type_name(v.element), " values cannot fit in the ",
         in.remaining(), " bytes left in the file");
  }
  const auto n = static_cast<size_t>(count);
  const std::string item = where + "[]";
  switch (v.element) {
    case GgufType::String:
      v.strings.reserve(n);
      for (size_t i = 0; i < n; ++i) v.strings.push_back(in.string(file + ": " + item));
      break;
    case GgufType::Array:
      v.arrays.reserve(n);
      for (size_t i = 0; i < n; ++i) {
        v.arrays.push_back(read_value(in, static_cast<uint32_t>(GgufType::Array), item, file, depth + 1));
      }
      break;
    case GgufType::F32:
    case GgufType::F64:
      v.reals.reserve(n);
      for (size_t i = 0; i < n; ++i) v.reals.push_back(read_scalar(in, v.element, file + ": " + item).real);
      break;
    default:
      v.integers.reserve(n);
      for (size_t i = 0; i < n; ++i) v.integers.push_back(read_scalar(in, v.element, file + ": " + item).integer);
      break;
  }
  return v;
}

void write_scalar(std::ostream& out, const GgufValue& v, GgufType type);

template <class T>
void put(std::ostream& out, T v) {
  out.write(reinterpret_cast<const char*>(&v), sizeof v);
}

void put_string(std::ostream& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out.write(s.data(), static_cast<std::streamsize>(s.size()));
}

void write_integer(std::ostream& out, GgufType type, int64_t integer, uint64_t unsigned_integer) {
  switch (type) {
    case GgufType::U8: case GgufType::Bool: put(out, static_cast<uint8_t>(integer)); break;
    case GgufType::I8: put(out, static_cast<int8_t>(integer)); break;
    case GgufType::U16: put(out, static_cast<uint16_t>(integer)); break;
    case GgufType::I16: put(out, static_cast<int16_t>(integer)); break;
    case GgufType::U32: put(out, static_cast<uint32_t>(integer)); break;
    case GgufType::I32: put(out, static_cast<int32_t>(integer)); break;
    case GgufType::U64: put(out, unsigned_integer); break;
    case GgufType::I64: put(out, integer); break;
    default: break;
  }
}

void write_real(std::ostream& out, GgufType type, double real) {
  if (type == GgufType::F32) {
    put(out, static_cast<float>(real));
  } else {
    put(out, real);
  }
}

void write_value(std::ostream& out, const GgufValue& v) {
  if (v.type != GgufType::Array) {
    write_scalar(out, v, v.type);
    return;
  }
  put<uint32_t>(out, static_cast<uint32_t>(v.element));
  put<uint64_t>(out, v.array_size());
  switch (v.element) {
    case GgufType::String: for (const auto& s : v.strings) put_string(out, s); break;
    case GgufType::Array:
      for (const auto& a : v.arrays) write_value(out, a);
      break;
    case GgufType::F32: case GgufType::F64: for (double r : v.reals) write_real(out, v.element, r); break;
    default: for (int64_t i : v.integers) write_integer(out, v.element, i, static_cast<uint64_t>(i)); break;
  }
}

void write_scalar(std::ostream& out, const GgufValue& v, GgufType type) {
  if (type == GgufType::String) {
    put_string(out, v.string);
  } else if (type == GgufType::F32 || type == GgufType::F64) {
    write_real(out, type, v.real);
  } else {
    write_integer(out, type, v.integer, v.unsigned_integer);
  }
}

uint64_t align_up(uint64_t n, uint64_t alignment) { return (n + alignment - 1) / alignment * alignment; }

}  // namespace

std::string_view gguf_type_name(GgufType type) {
  static constexpr std::array<std::string_view, 13> kNames = {"u8",  "i8",  "u16", "i16",    "u32",   "i32", "f32",
                                                              "bool", "string", "array", "u64", "i64", "f64"};
  const auto i = static_cast<size_t>(type);
  return i < kNames.size() ? kNames[i] : "unknown";
}

std::optional<GgmlTypeTraits> ggml_type_traits(uint32_t type) {
  for (const TypeRow& row : kGgmlTypes) {
    if (row.id == type) return row.traits;
  }
  return std::nullopt;
}

std::string ggml_type_name(uint32_t type) {
  const auto traits = ggml_type_traits(type);
  return traits ? std::string(traits->name) : "type " + std::to_string(type);
}

bool GgufValue::is_integer() const {
  return type != GgufType::F32 && type != GgufType::F64 && type != GgufType::String && type != GgufType::Array &&
         type != GgufType::Bool;
}

size_t GgufValue::array_size() const {
  switch (element) {
    case GgufType::String: return strings.size();
    case GgufType::Array: return arrays.size();
    case GgufType::F32: case GgufType::F64: return reals.size();
    default: return integers.size();
  }
}

GgufValue GgufValue::of_u32(uint32_t v) {
  GgufValue r;
  r.type = GgufType::U32;
  r.integer = v;
  r.unsigned_integer = v;
  return r;
}

GgufValue GgufValue::of_i32(int32_t v) {
  GgufValue r;
  r.type = GgufType::I32;
  r.integer = v;
  r.unsigned_integer = static_cast<uint64_t>(v);
  return r;
}

GgufValue GgufValue::of_u64(uint64_t v) {
  GgufValue r;
  r.type = GgufType::U64;
  r.unsigned_integer = v;
  r.integer = static_cast<int64_t>(std::min<uint64_t>(v, std::numeric_limits<int64_t>::max()));
  return r;
}

GgufValue GgufValue::of_f32(float v) {
  GgufValue r;
  r.type = GgufType::F32;
  r.real = v;
  return r;
}

GgufValue GgufValue::of_bool(bool v) {
  GgufValue r;
  r.type = GgufType::Bool;
  r.integer = v ? 1 : 0;
  r.unsigned_integer = r.integer;
  return r;
}

GgufValue GgufValue::of_string(std::string v) {
  GgufValue r;
  r.type = GgufType::String;
  r.string = std::move(v);
  return r;
}

GgufValue GgufValue::of_strings(std::vector<std::string> v) {
  GgufValue r;
  r.type = GgufType::Array;
  r.element = GgufType::String;
  r.strings = std::move(v);
  return r;
}

GgufValue GgufValue::of_integers(GgufType element, std::vector<int64_t> v) {
  GgufValue r;
  r.type = GgufType::Array;
  r.element = element;
  r.integers = std::move(v);
  return r;
}

GgufValue GgufValue::of_reals(GgufType element, std::vector<double> v) {
  GgufValue r;
  r.type = GgufType::Array;
  r.element = element;
  r.reals = std::move(v);
  return r;
}

uint64_t GgufTensorInfo::elements() const {
  uint64_t n = 1;
  for (uint64_t d : dims) n *= d;
  return n;
}

GgufFile GgufFile::open(const std::filesystem::path& path) {
  auto mapping = MappedFile::open(path);
  GgufFile file = parse(mapping->data(), mapping->size(), path.string());
  file.file_ = std::move(mapping);
  return file;
}

GgufFile GgufFile::parse(const uint8_t* bytes, size_t size, std::string file_name) {
  GgufFile f;
  f.name_ = std::move(file_name);
  const std::string& file = f.name_;
  Cursor in(bytes, size, file);
  if (size < 4) fail(file, ": too short to be a GGUF file (", size, " bytes)");
  const auto magic = in.read<uint32_t>("magic");
  if (magic != kMagic) fail(file, ": not a GGUF file (the first four bytes are not \"GGUF\")");
  f.version_ = in.read<uint32_t>("version");
  if (f.version_ != kVersion) {
    fail(file, ": GGUF version ", f.version_, " is not supported (slm reads version 3", f.version_ < 3 ? "; convert older files with llama.cpp's tools" : "", ")");
  }
  const auto tensor_count = in.read<uint64_t>("tensor count");
  const auto kv_count = in.read<uint64_t>("metadata count");
  // A key/value takes at least 8 + 4 + 1 bytes, a tensor info 8 + 4 + 4 + 8.
  if (kv_count > in.remaining() / 13) fail(file, ": metadata count ", kv_count, " cannot fit in a file of ", size, " bytes");
  if (tensor_count > in.remaining() / 24) fail(file, ": tensor count ", tensor_count, " cannot fit in a file of ", size, " bytes");

  for (uint64_t i = 0; i < kv_count; ++i) {
    std::string key = in.string("metadata key " + std::to_string(i));
    const auto type = in.read<uint32_t>("type of metadata \"" + key + "\"");
    GgufValue value = read_value(in, type, "metadata \"" + key + "\"", file, 0);
    if (f.metadata_.count(key)) fail(file, ": metadata key \"", key, "\" appears twice");
    f.metadata_.emplace(std::move(key), std::move(value));
  }
  if (const GgufValue* a = f.find("general.alignment")) {
    if (a->type != GgufType::U32) fail(file, ": general.alignment must be a u32, got ", gguf_type_name(a->type));
    if (a->integer == 0 || (a->integer & (a->integer - 1)) != 0 || static_cast<uint64_t>(a->integer) > kMaxAlignment) {
      fail(file, ": general.alignment ", a->integer, " must be a power of two up to ", kMaxAlignment);
    }
    f.alignment_ = static_cast<uint64_t>(a->integer);
  }

  for (uint64_t i = 0; i < tensor_count; ++i) {
    GgufTensorInfo t;
    t.name = in.string("name of tensor " + std::to_string(i));
    const std::string where = file + ": tensor \"" + t.name + "\"";
    const auto n_dims = in.read<uint32_t>(where + " (dimension count)");
    if (n_dims == 0 || n_dims > kMaxDims) fail(where, ": ", n_dims, " dimensions (expected 1 to ", kMaxDims, ")");
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const auto dim = in.read<uint64_t>(where + " (dimension)");
      if (dim == 0 || dim > (uint64_t{1} << 40) || elements > (uint64_t{1} << 50) / dim) {
        fail(where, ": dimension ", d, " of ", dim, " is zero or absurdly large");
      }
      elements *= dim;
      t.dims.push_back(dim);
    }
    t.type = in.read<uint32_t>(where + " (type)");
    t.offset = in.read<uint64_t>(where + " (offset)");
    const auto traits = ggml_type_traits(t.type);
    if (!traits) fail(where, ": unknown ggml type ", t.type);
    if (t.dims[0] % static_cast<uint64_t>(traits->block_elements) != 0) {
      fail(where, ": rows of ", t.dims[0], " elements are not whole ", traits->name, " blocks of ", traits->block_elements);
    }
    t.bytes = elements / static_cast<uint64_t>(traits->block_elements) * traits->block_bytes;
    if (t.offset % f.alignment_ != 0) fail(where, ": data offset ", t.offset, " is not a multiple of the alignment ", f.alignment_);
    if (f.tensor_index_.count(t.name)) fail(file, ": tensor \"", t.name, "\" appears twice");
    f.tensor_index_.emplace(t.name, f.tensors_.size());
    f.tensors_.push_back(std::move(t));
  }

  const uint64_t data_start = align_up(in.offset(), f.alignment_);
  if (data_start > size) fail(file, ": truncated: the data section would start at ", data_start, ", past the end (", size, " bytes)");
  const uint64_t data_size = size - data_start;
  f.data_ = bytes + data_start;
  std::vector<const GgufTensorInfo*> by_offset;
  for (const GgufTensorInfo& t : f.tensors_) {
    if (t.offset > data_size || t.bytes > data_size - t.offset) {
      fail(file, ": tensor \"", t.name, "\": ", t.bytes, " bytes at data offset ", t.offset,
           " run past the end of the data section (", data_size, " bytes)");
    }
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const auto* a, const auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->offset < by_offset[i - 1]->offset + by_offset[i - 1]->bytes) {
      fail(file, ": tensors \"", by_offset[i - 1]->name, "\" and \"", by_offset[i]->name, "\" overlap in the data section");
    }
  }
  return f;
}

const GgufValue* GgufFile::find(std::string_view key) const {
  const auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const GgufValue& GgufFile::get(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) fail(name_, ": missing metadata \"", key, "\"");
  return *v;
}

std::string GgufFile::get_string(std::string_view key) const {
  const GgufValue& v = get(key);
  if (v.type != GgufType::String) fail(name_, ": metadata \"", key, "\" must be a string, got ", gguf_type_name(v.type));
  return v.string;
}

int64_t GgufFile::get_integer(std::string_view key) const {
  const GgufValue& v = get(key);
  if (!v.is_integer()) fail(name_, ": metadata \"", key, "\" must be an integer, got ", gguf_type_name(v.type));
  if (v.type == GgufType::U64 && v.unsigned_integer > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    fail(name_, ": metadata \"", key, "\" = ", v.unsigned_integer, " is out of range");
  }
  return v.integer;
}

double GgufFile::get_float(std::string_view key) const {
  const GgufValue& v = get(key);
  if (v.is_float()) return v.real;
  if (v.is_integer()) return static_cast<double>(v.integer);
  fail(name_, ": metadata \"", key, "\" must be a number, got ", gguf_type_name(v.type));
}

bool GgufFile::get_bool(std::string_view key) const {
  const GgufValue& v = get(key);
  if (v.type != GgufType::Bool) fail(name_, ": metadata \"", key, "\" must be a bool, got ", gguf_type_name(v.type));
  return v.integer != 0;
}

std::optional<std::string> GgufFile::string_or(std::string_view key) const {
  return has(key) ? std::optional(get_string(key)) : std::nullopt;
}
std::optional<int64_t> GgufFile::integer_or(std::string_view key) const {
  return has(key) ? std::optional(get_integer(key)) : std::nullopt;
}
std::optional<double> GgufFile::float_or(std::string_view key) const {
  return has(key) ? std::optional(get_float(key)) : std::nullopt;
}
std::optional<bool> GgufFile::bool_or(std::string_view key) const {
  return has(key) ? std::optional(get_bool(key)) : std::nullopt;
}

const std::vector<std::string>& GgufFile::string_array(std::string_view key) const {
  const GgufValue& v = get(key);
  if (v.type != GgufType::Array || v.element != GgufType::String) {
    fail(name_, ": metadata \"", key, "\" must be an array of strings");
  }
  return v.strings;
}

const std::vector<int64_t>& GgufFile::integer_array(std::string_view key) const {
  const GgufValue& v = get(key);
  if (v.type != GgufType::Array || v.element == GgufType::String || v.element == GgufType::Array ||
      v.element == GgufType::F32 || v.element == GgufType::F64) {
    fail(name_, ": metadata \"", key, "\" must be an array of integers");
  }
  return v.integers;
}

const std::vector<double>& GgufFile::float_array(std::string_view key) const {
  const GgufValue& v = get(key);
  if (v.type != GgufType::Array || (v.element != GgufType::F32 && v.element != GgufType::F64)) {
    fail(name_, ": metadata \"", key, "\" must be an array of floats");
  }
  return v.reals;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

GgufWriter::GgufWriter(uint64_t alignment) : alignment_(alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) fail("GGUF writer: alignment ", alignment, " is not a power of two");
  if (alignment != 32) set("general.alignment", GgufValue::of_u32(static_cast<uint32_t>(alignment)));
}

void GgufWriter::set(std::string key, GgufValue value) {
  for (auto& [k, v] : metadata_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(std::move(key), std::move(value));
}

void GgufWriter::add_tensor(std::string name, GgmlType type, std::vector<uint64_t> dims, const void* data, size_t size,
                            std::shared_ptr<const void> owner) {
  GgufTensorInfo info;
  info.name = std::move(name);
  info.dims = std::move(dims);
  info.type = static_cast<uint32_t>(type);
  const auto traits = ggml_type_traits(info.type);
  if (!traits || info.dims.empty() || info.dims.size() > kMaxDims) fail("GGUF writer: tensor \"", info.name, "\": bad type or dimensions");
  if (info.dims[0] % static_cast<uint64_t>(traits->block_elements) != 0) {
    fail("GGUF writer: tensor \"", info.name, "\": rows of ", info.dims[0], " are not whole ", traits->name, " blocks");
  }
  info.bytes = info.elements() / static_cast<uint64_t>(traits->block_elements) * traits->block_bytes;
  if (info.bytes != size) fail("GGUF writer: tensor \"", info.name, "\": ", size, " bytes given, ", info.bytes, " expected");
  info.offset = align_up(data_size_, alignment_);
  data_size_ = info.offset + info.bytes;
  tensors_.push_back({std::move(info), data, std::move(owner)});
}

void GgufWriter::write(const std::filesystem::path& path) const {
  write_file_atomically(path, [&](std::ostream& out) {
    put<uint32_t>(out, kMagic);
    put<uint32_t>(out, kVersion);
    put<uint64_t>(out, tensors_.size());
    put<uint64_t>(out, metadata_.size());
    for (const auto& [key, value] : metadata_) {
      put_string(out, key);
      put<uint32_t>(out, static_cast<uint32_t>(value.type));
      write_value(out, value);
    }
    for (const Entry& e : tensors_) {
      put_string(out, e.info.name);
      put<uint32_t>(out, static_cast<uint32_t>(e.info.dims.size()));
      for (uint64_t d : e.info.dims) put<uint64_t>(out, d);
      put<uint32_t>(out, e.info.type);
      put<uint64_t>(out, e.info.offset);
    }
    const auto written = static_cast<uint64_t>(out.tellp());
    const std::string zeros(alignment_, '\0');
    out.write(zeros.data(), static_cast<std::streamsize>(align_up(written, alignment_) - written));
    uint64_t at = 0;
    for (const Entry& e : tensors_) {
      out.write(zeros.data(), static_cast<std::streamsize>(e.info.offset - at));
      out.write(static_cast<const char*>(e.data), static_cast<std::streamsize>(e.info.bytes));
      at = e.info.offset + e.info.bytes;
    }
  });
}

bool is_gguf_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  std::ifstream in(path, std::ios::binary);
  uint32_t magic = 0;
  in.read(reinterpret_cast<char*>(&magic), sizeof magic);
  return in && magic == kMagic;
}

}  // namespace slm
