// GGUF: write -> read round trips of every metadata value type and of
// aligned tensor data, and malformed files (truncated anywhere, bad magic,
// wrong version, offsets past the end, absurd counts) that must end in one
// slm::Error naming the file, never a crash.
#include "io/gguf.h"
#include "io_test_util.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>

namespace {

using slm::GgmlType;
using slm::GgufFile;
using slm::GgufType;
using slm::GgufValue;
using slm::GgufWriter;
using slm::test::ThrowsErrorWith;

std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

GgufFile parse(const std::string& bytes, const std::string& name = "t.gguf") {
  return GgufFile::parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name);
}

GgufValue scalar(GgufType type, int64_t integer) {
  GgufValue v;
  v.type = type;
  v.integer = integer;
  v.unsigned_integer = static_cast<uint64_t>(integer);
  return v;
}

class Gguf : public slm::test::TempDirTest {
 protected:
  // A small file: every value type once, two tensors.
  std::filesystem::path write_sample(uint64_t alignment = 32) {
    GgufWriter w(alignment);
    w.set("u8", scalar(GgufType::U8, 250));
    w.set("i8", scalar(GgufType::I8, -100));
    w.set("u16", scalar(GgufType::U16, 65000));
    w.set("i16", scalar(GgufType::I16, -32000));
    w.set("u32", GgufValue::of_u32(4000000000u));
    w.set("i32", GgufValue::of_i32(-2000000000));
    w.set("u64", GgufValue::of_u64(18000000000000000000ull));
    w.set("i64", scalar(GgufType::I64, -9000000000000000000ll));
    w.set("f32", GgufValue::of_f32(1.5f));
    GgufValue f64;
    f64.type = GgufType::F64;
    f64.real = 1e-300;
    w.set("f64", f64);
    w.set("bool", GgufValue::of_bool(true));
    w.set("string", GgufValue::of_string("héllo"));
    w.set("strings", GgufValue::of_strings({"a", "", "ccc"}));
    w.set("i32s", GgufValue::of_integers(GgufType::I32, {1, -2, 3}));
    w.set("u8s", GgufValue::of_integers(GgufType::U8, {0, 255}));
    w.set("bools", GgufValue::of_integers(GgufType::Bool, {1, 0}));
    w.set("f32s", GgufValue::of_reals(GgufType::F32, {0.25, -8}));
    GgufValue nested;
    nested.type = GgufType::Array;
    nested.element = GgufType::Array;
    nested.arrays = {GgufValue::of_integers(GgufType::I64, {7}), GgufValue::of_strings({"x", "y"})};
    w.set("nested", nested);
    w.add_tensor("a", GgmlType::F32, {3}, a_.data(), sizeof(float) * a_.size());
    w.add_tensor("b", GgmlType::Q8_0, {32, 2}, b_.data(), b_.size());
    const auto path = dir_ / "sample.gguf";
    w.write(path);
    return path;
  }
  std::vector<float> a_ = {1.0f, 2.0f, 3.0f};
  std::vector<uint8_t> b_ = std::vector<uint8_t>(68, 7);
};

TEST_F(Gguf, EveryValueTypeRoundTrips) {
  const GgufFile f = GgufFile::open(write_sample());
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get("u8").type, GgufType::U8);
  EXPECT_EQ(f.get_integer("u8"), 250);
  EXPECT_EQ(f.get_integer("i8"), -100);
  EXPECT_EQ(f.get_integer("u16"), 65000);
  EXPECT_EQ(f.get_integer("i16"), -32000);
  EXPECT_EQ(f.get_integer("u32"), 4000000000ll);
  EXPECT_EQ(f.get_integer("i32"), -2000000000);
  EXPECT_EQ(f.get("u64").unsigned_integer, 18000000000000000000ull);
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)f.get_integer("u64"); }, {"sample.gguf", "\"u64\"", "out of range"}));
  EXPECT_EQ(f.get_integer("i64"), -9000000000000000000ll);
  EXPECT_EQ(f.get_float("f32"), 1.5);
  EXPECT_EQ(f.get_float("f64"), 1e-300);
  EXPECT_TRUE(f.get_bool("bool"));
  EXPECT_EQ(f.get_string("string"), "héllo");
  EXPECT_EQ(f.string_array("strings"), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(f.integer_array("i32s"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(f.integer_array("u8s"), (std::vector<int64_t>{0, 255}));
  EXPECT_EQ(f.integer_array("bools"), (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(f.float_array("f32s"), (std::vector<double>{0.25, -8}));
  const GgufValue& nested = f.get("nested");
  ASSERT_EQ(nested.arrays.size(), 2u);
  EXPECT_EQ(nested.arrays[0].integers, (std::vector<int64_t>{7}));
  EXPECT_EQ(nested.arrays[1].strings, (std::vector<std::string>{"x", "y"}));
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)f.get_string("u8"); }, {"sample.gguf", "\"u8\"", "must be a string", "u8"}));
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)f.get_integer("missing"); }, {"sample.gguf", "missing metadata \"missing\""}));
  EXPECT_FALSE(f.integer_or("missing").has_value());
}

TEST_F(Gguf, TensorsAreAlignedAndViewTheData) {
  for (uint64_t alignment : {32u, 64u, 256u}) {
    const GgufFile f = GgufFile::open(write_sample(alignment));
    EXPECT_EQ(f.alignment(), alignment);
    const auto* a = f.find_tensor("a");
    const auto* b = f.find_tensor("b");
    ASSERT_TRUE(a && b);
    EXPECT_EQ(a->dims, (std::vector<uint64_t>{3}));
    EXPECT_EQ(b->dims, (std::vector<uint64_t>{32, 2}));
    EXPECT_EQ(b->type, static_cast<uint32_t>(GgmlType::Q8_0));
    EXPECT_EQ(b->bytes, 68u);
    EXPECT_EQ(b->offset % alignment, 0u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(f.tensor_data(*a)) % alignment, 0u);
    EXPECT_EQ(std::memcmp(f.tensor_data(*a), a_.data(), 12), 0);
    EXPECT_EQ(std::memcmp(f.tensor_data(*b), b_.data(), 68), 0);
  }
}

TEST_F(Gguf, EveryTruncationIsAnError) {
  const std::string bytes = read_bytes(write_sample());
  for (size_t n = 0; n < bytes.size(); ++n) {
    // A prefix that ends inside the padding before the last tensor's end is
    // short of data; one that ends in the header is short of the header.
    EXPECT_THROW((void)parse(bytes.substr(0, n)), slm::Error) << "prefix of " << n << " bytes";
  }
  EXPECT_NO_THROW((void)parse(bytes));
}

TEST_F(Gguf, BadMagicAndVersion) {
  std::string bytes = read_bytes(write_sample());
  std::string bad = bytes;
  bad[0] = 'X';
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)parse(bad); }, {"t.gguf", "not a GGUF file"}));
  bad = bytes;
  bad[4] = 2;
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)parse(bad); }, {"t.gguf", "version 2", "version 3"}));
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)parse(""); }, {"t.gguf", "too short"}));
}

// Hand-built files, to put absurd values where the writer never would.
std::string u32(uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }
std::string u64(uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }
std::string str(const std::string& s) { return u64(s.size()) + s; }
std::string header(uint64_t tensors, uint64_t kvs) { return "GGUF" + u32(3) + u64(tensors) + u64(kvs); }
std::string tensor_info(const std::string& name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
  std::string out = str(name) + u32(static_cast<uint32_t>(dims.size()));
  for (uint64_t d : dims) out += u64(d);
  return out + u32(type) + u64(offset);
}
std::string pad_to(std::string s, size_t alignment) {
  s.resize((s.size() + alignment - 1) / alignment * alignment, '\0');
  return s;
}

TEST_F(Gguf, AbsurdCountsAndLengths) {
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)parse(header(0, uint64_t{1} << 60)); }, {"metadata count", "cannot fit"}));
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)parse(header(uint64_t{1} << 60, 0)); }, {"tensor count", "cannot fit"}));
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)parse(header(0, 1) + str("k") + u32(9) + u32(4) + u64(uint64_t{1} << 61)); },
                              {"metadata \"k\"", "array of", "cannot fit"}));
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)parse(header(0, 1) + u64(uint64_t{1} << 62) + std::string(16, 'k')); },
                              {"metadata key 0", "runs past the end"}));
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)parse(header(0, 1) + str("k") + u32(13) + u32(0)); },
                              {"metadata \"k\"", "unknown value type 13"}));
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)parse(header(0, 1) + str("k") + u32(7) + std::string(1, '\5')); },
                              {"metadata \"k\"", "bool"}));
  std::string deep = header(0, 1) + str("k") + u32(9);  // an array of arrays of arrays ...
  for (int i = 0; i < 20; ++i) deep += u32(9) + u64(1);
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)parse(deep); }, {"nested deeper"}));
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)parse(header(1, 0) + tensor_info("w", {uint64_t{1} << 41}, 0, 0)); },
                              {"tensor \"w\"", "absurdly large"}));
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)parse(header(1, 0) + tensor_info("w", {1, 1, 1, 1, 1}, 0, 0)); },
                              {"tensor \"w\"", "5 dimensions"}));
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)parse(header(0, 1) + str("general.alignment") + u32(4) + u32(3)); },
                              {"general.alignment", "power of two"}));
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)parse(header(0, 2) + str("k") + u32(4) + u32(1) + str("k") + u32(4) + u32(1)); },
                              {"\"k\"", "twice"}));
}

TEST_F(Gguf, TensorOffsetsAndTypesAreChecked) {
  const std::string data(64, '\0');
  auto file = [&](const std::string& infos, uint64_t count) { return pad_to(header(count, 0) + infos, 32) + data; };
  EXPECT_NO_THROW((void)parse(file(tensor_info("w", {16}, 0, 0), 1)));
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)parse(file(tensor_info("w", {16}, 0, 32), 1)); },
                              {"tensor \"w\"", "run past the end of the data section"}));
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)parse(file(tensor_info("w", {4}, 0, uint64_t{1} << 62), 1)); },
                              {"tensor \"w\"", "past the end"}));
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)parse(file(tensor_info("w", {4}, 0, 4), 1)); },
                              {"tensor \"w\"", "not a multiple of the alignment 32"}));
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)parse(file(tensor_info("w", {4}, 99, 0), 1)); },
                              {"tensor \"w\"", "unknown ggml type 99"}));
  EXPECT_TRUE(ThrowsErrorWith([&] { (void)parse(file(tensor_info("w", {16}, 8, 0), 1)); },
                              {"tensor \"w\"", "not whole Q8_0 blocks of 32"}));
  EXPECT_TRUE(ThrowsErrorWith(
      [&] { (void)parse(file(tensor_info("v", {16}, 0, 0) + tensor_info("w", {4}, 0, 32), 2)); }, {"overlap"}));
  EXPECT_TRUE(ThrowsErrorWith(
      [&] { (void)parse(file(tensor_info("w", {4}, 0, 0) + tensor_info("w", {4}, 0, 32), 2)); }, {"\"w\"", "twice"}));
}

TEST_F(Gguf, TypeTraitsMatchTheBlockLayouts) {
  EXPECT_EQ(slm::ggml_type_name(12), "Q4_K");
  EXPECT_EQ(slm::ggml_type_name(99), "type 99");
  EXPECT_EQ(slm::ggml_type_traits(14)->block_bytes, 210u);
  EXPECT_EQ(slm::ggml_type_traits(13)->block_bytes, 176u);
  EXPECT_EQ(slm::ggml_type_traits(12)->block_bytes, 144u);
  EXPECT_EQ(slm::ggml_type_traits(2)->block_bytes, 18u);
}

TEST_F(Gguf, GgufFilesAreRecognised) {
  EXPECT_TRUE(slm::is_gguf_file(write_sample()));
  EXPECT_FALSE(slm::is_gguf_file(write("x.bin", "GGML")));
  EXPECT_FALSE(slm::is_gguf_file(dir_));
}

}  // namespace
