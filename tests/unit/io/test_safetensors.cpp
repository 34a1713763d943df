// safetensors: write -> read round trips, and every malformed header gives
// one slm::Error naming the file and the problem.
#include "io/safetensors.h"
#include "io_test_util.h"

#include <slm/model.h>

#include "core/half.h"

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <cstring>

namespace {

using slm::DType;
using slm::SafetensorsFile;
using slm::Tensor;
using slm::test::ThrowsErrorWith;

std::string le64(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out;
}

// A safetensors file from a header text and a data section.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

Tensor counting(DType dtype, std::vector<int64_t> shape) {
  Tensor t = Tensor::zeros(DType::F32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = static_cast<float>(i) * 0.25f - 3.0f;
  return t.to(dtype);
}

class Safetensors : public slm::test::TempDirTest {
 protected:
  // Writes the file and checks that opening it fails with a message naming
  // the file and holding every one of `words`.
  ::testing::AssertionResult Rejects(const std::string& bytes, std::vector<std::string> words) {
    const auto path = write("bad.safetensors", bytes);
    std::vector<std::string> with_path = words;
    with_path.push_back(path.string());
    auto result = ThrowsErrorWith([&] { SafetensorsFile::open(path); }, with_path);
    if (!result) return result;
    // parse_header on the same bytes agrees (the fuzz target's entry point).
    words.push_back("in-memory");
    return ThrowsErrorWith(
        [&] {
          SafetensorsFile::parse_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "in-memory", nullptr);
        },
        words);
  }
};

TEST_F(Safetensors, RoundTripKeepsNamesShapesDtypesAndBytes) {
  const std::vector<std::pair<std::string, Tensor>> tensors = {
      {"model.embed_tokens.weight", counting(DType::BF16, {7, 3})},
      {"a.f32", counting(DType::F32, {5})},
      {"b.f16", counting(DType::F16, {2, 3, 1})},
      {"scalar", counting(DType::F32, {})},
      {"empty", counting(DType::F16, {0, 4})},
  };
  const auto path = dir_ / "model.safetensors";
  slm::write_safetensors(path, tensors, {{"format", "pt"}});
  const SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_EQ(file.entries().size(), tensors.size());
  EXPECT_EQ(file.metadata().at("format"), "pt");
  for (const auto& [name, original] : tensors) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(file.contains(name));
    const Tensor read = file.tensor(name);
    EXPECT_EQ(read.dtype(), original.dtype());
    EXPECT_EQ(read.shape(), original.shape());
    ASSERT_EQ(read.nbytes(), original.nbytes());
    EXPECT_EQ(std::memcmp(read.data(), original.data(), read.nbytes()), 0);
  }
  // The data section starts 8-byte aligned and the odd-sized bf16 tensor
  // given first does not push the f32 ones off their 4-byte alignment.
  for (const char* name : {"a.f32", "scalar"}) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(file.tensor(name).data()) % 4, 0u) << name;
  }
  std::ifstream in(path, std::ios::binary);
  char length[8];
  in.read(length, 8);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | static_cast<uint8_t>(length[i]);
  EXPECT_EQ(header_size % 8, 0u);
  // No temporary file left beside it.
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) entries += e.is_regular_file();
  EXPECT_EQ(entries, 1);
}

TEST_F(Safetensors, WriterRefusesDuplicateNamesAndQuantizedTensors) {
  const auto path = dir_ / "dup.safetensors";
  EXPECT_TRUE(ThrowsErrorWith([&] { slm::write_safetensors(path, {{"w", counting(DType::F32, {2})}, {"w", counting(DType::F32, {3})}}); },
                              {"dup.safetensors", "\"w\""}));
  EXPECT_THROW(slm::write_safetensors(path, {{"q", counting(DType::Q8, {32})}}), slm::Error);
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_TRUE(std::filesystem::is_empty(dir_));  // and no temporary left behind
}

TEST_F(Safetensors, HeaderWrittenByOtherToolsIsRead) {
  // Hugging Face's own layout: dtype, shape, data_offsets, in any key order, no padding.
  const std::string header = R"({"w":{"data_offsets":[0,8],"shape":[2,2],"dtype":"BF16"},"__metadata__":{"format":"pt"}})";
  const std::string data("\x80\x3f\x00\x40\x40\x40\x80\x40", 8);  // 1, 2, 3, 4 in bf16
  const auto path = write("ok.safetensors", safetensors_bytes(header, data));
  const SafetensorsFile file = SafetensorsFile::open(path);
  const Tensor t = file.tensor("w");
  EXPECT_EQ(t.at(0), 1.0f);
  EXPECT_EQ(t.at(1), 2.0f);
  EXPECT_EQ(t.at(2), 3.0f);
  EXPECT_EQ(t.at(3), 4.0f);
  EXPECT_TRUE(ThrowsErrorWith([&] { file.tensor("nope"); }, {"nope", "ok.safetensors"}));
}

TEST_F(Safetensors, ShorterThanEightBytes) {
  EXPECT_TRUE(Rejects("", {"too short"}));
  EXPECT_TRUE(Rejects("\x10\x00\x00", {"too short"}));
}

TEST_F(Safetensors, HeaderLengthPastTheEnd) {
  EXPECT_TRUE(Rejects(le64(100) + "{}", {"header length 100", "past the end"}));
  EXPECT_TRUE(Rejects(le64(~uint64_t{0}) + "{}", {"past the end"}));  // must not wrap around
  EXPECT_TRUE(Rejects(le64(uint64_t{1} << 63) + "{}", {"past the end"}));
}

TEST_F(Safetensors, InvalidJson) {
  EXPECT_TRUE(Rejects(safetensors_bytes("{\"a\": ", ""), {"not valid JSON"}));
  EXPECT_TRUE(Rejects(safetensors_bytes("\xff\xfe", ""), {"not valid JSON"}));
  EXPECT_TRUE(Rejects(safetensors_bytes("[1,2]", ""), {"JSON object"}));
  EXPECT_TRUE(Rejects(safetensors_bytes("", ""), {"not valid JSON"}));
}

TEST_F(Safetensors, UnknownDtype) {
  for (const char* dtype : {"F64", "Q4", "I8", "f32", ""}) {
    const std::string header = std::string(R"({"w":{"dtype":")") + dtype + R"(","shape":[1],"data_offsets":[0,8]}})";
    EXPECT_TRUE(Rejects(safetensors_bytes(header, std::string(8, '\0')), {"\"w\"", std::string("\"") + dtype + "\"", "not supported"}))
        << dtype;
  }
  EXPECT_TRUE(Rejects(safetensors_bytes(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0')),
                      {"\"w\"", "dtype"}));
  EXPECT_TRUE(Rejects(safetensors_bytes(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0')), {"dtype"}));
}

TEST_F(Safetensors, BadShape) {
  const std::string data(16, '\0');
  EXPECT_TRUE(Rejects(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,16]}})", data),
                      {"\"w\"", "non-negative"}));
  EXPECT_TRUE(Rejects(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,16]}})", data),
                      {"\"w\"", "shape"}));
  EXPECT_TRUE(Rejects(safetensors_bytes(R"({"w":{"dtype":"F32","shape":"4","data_offsets":[0,16]}})", data),
                      {"\"w\"", "shape"}));
  // A product that overflows 64 bits must be caught, not wrapped to a small size.
  EXPECT_TRUE(Rejects(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,16]}})", data),
                      {"\"w\""}));
  EXPECT_TRUE(Rejects(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,16]}})", data),
                      {"\"w\""}));
}

TEST_F(Safetensors, BadOffsets) {
  const std::string data(16, '\0');
  EXPECT_TRUE(Rejects(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", data),
                      {"\"w\"", "reversed"}));
  EXPECT_TRUE(Rejects(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})", data),
                      {"\"w\"", "past the end of the data", "16 bytes"}));
  EXPECT_TRUE(Rejects(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", data),
                      {"\"w\"", "data_offsets"}));
  EXPECT_TRUE(Rejects(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", data),
                      {"\"w\"", "data_offsets"}));
  EXPECT_TRUE(Rejects(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[2]}})", data), {"\"w\"", "data_offsets"}));
  EXPECT_TRUE(Rejects(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551608,18446744073709551615]}})", data),
                      {"\"w\""}));
  // Two tensors sharing bytes.
  EXPECT_TRUE(Rejects(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
                                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                                        data),
                      {"\"a\"", "\"b\"", "overlap"}));
  // One inside another, listed in the other order.
  EXPECT_TRUE(Rejects(safetensors_bytes(R"({"b":{"dtype":"F16","shape":[2],"data_offsets":[4,8]},)"
                                        R"("a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                                        data),
                      {"overlap"}));
}

TEST_F(Safetensors, ByteSizeMustMatchShapeTimesDtype) {
  EXPECT_TRUE(Rejects(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", std::string(16, '\0')),
                      {"\"w\"", "holds 16 bytes", "needs 12"}));
  EXPECT_TRUE(Rejects(safetensors_bytes(R"({"w":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,4]}})", std::string(16, '\0')),
                      {"\"w\"", "needs 8"}));
}

TEST_F(Safetensors, BadMetadata) {
  EXPECT_TRUE(Rejects(safetensors_bytes(R"({"__metadata__":{"format":1}})", ""), {"__metadata__"}));
  EXPECT_TRUE(Rejects(safetensors_bytes(R"({"__metadata__":[]})", ""), {"__metadata__"}));
  EXPECT_TRUE(Rejects(safetensors_bytes(R"({"w":[1,2]})", ""), {"\"w\""}));
}

TEST_F(Safetensors, MissingFileNamesThePath) {
  EXPECT_TRUE(ThrowsErrorWith([&] { SafetensorsFile::open(dir_ / "absent.safetensors"); }, {"absent.safetensors"}));
}

// --- sharded weights -------------------------------------------------------

class ShardedWeights : public slm::test::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    slm::CreateOptions options;
    options.shards = 3;
    slm::create_random_model(slm::shape_preset("tiny"), options, dir_);
  }
  nlohmann::json index() const {
    std::ifstream in(dir_ / "model.safetensors.index.json");
    return nlohmann::json::parse(in);
  }
  void set_index(const nlohmann::json& j) const { write("model.safetensors.index.json", j.dump()); }
};

TEST_F(ShardedWeights, OpensEveryShard) {
  const slm::WeightFiles files = slm::WeightFiles::open(dir_);
  EXPECT_NE(files.describe().find("3 shards"), std::string::npos) << files.describe();
  EXPECT_TRUE(files.contains("model.embed_tokens.weight"));
  EXPECT_TRUE(files.contains("model.norm.weight"));
  EXPECT_EQ(files.names().size(), index()["weight_map"].size());
  EXPECT_TRUE(ThrowsErrorWith([&] { files.tensor("model.nope"); }, {"missing tensor", "model.nope"}));
}

TEST_F(ShardedWeights, TensorMissingFromItsShard) {
  auto j = index();
  const std::string first = j["weight_map"]["model.embed_tokens.weight"];
  const std::string other = j["weight_map"]["model.norm.weight"];
  ASSERT_NE(first, other);
  j["weight_map"]["model.norm.weight"] = first;
  set_index(j);
  EXPECT_TRUE(ThrowsErrorWith([&] { slm::WeightFiles::open(dir_); },
                              {"model.safetensors.index.json", "model.norm.weight", first}));
}

TEST_F(ShardedWeights, ShardFileMissing) {
  auto j = index();
  j["weight_map"]["model.norm.weight"] = "model-00009-of-00009.safetensors";
  set_index(j);
  EXPECT_TRUE(ThrowsErrorWith([&] { slm::WeightFiles::open(dir_); }, {"model-00009-of-00009.safetensors"}));
}

TEST_F(ShardedWeights, ShardOutsideTheFolder) {
  auto j = index();
  j["weight_map"]["model.norm.weight"] = "../model.safetensors";
  set_index(j);
  EXPECT_TRUE(ThrowsErrorWith([&] { slm::WeightFiles::open(dir_); }, {"model.norm.weight", "../model.safetensors"}));
  j["weight_map"]["model.norm.weight"] = "..";
  set_index(j);
  EXPECT_TRUE(ThrowsErrorWith([&] { slm::WeightFiles::open(dir_); }, {"model.norm.weight"}));
}

TEST_F(ShardedWeights, MalformedIndex) {
  write("model.safetensors.index.json", "{\"weight_map\": ");
  EXPECT_TRUE(ThrowsErrorWith([&] { slm::WeightFiles::open(dir_); }, {"model.safetensors.index.json", "not valid JSON"}));
  write("model.safetensors.index.json", "{\"metadata\": {}}");
  EXPECT_TRUE(ThrowsErrorWith([&] { slm::WeightFiles::open(dir_); }, {"model.safetensors.index.json", "weight_map"}));
  write("model.safetensors.index.json", "{\"weight_map\": {\"a\": 3}}");
  EXPECT_TRUE(ThrowsErrorWith([&] { slm::WeightFiles::open(dir_); }, {"model.safetensors.index.json", "weight_map.a"}));
}

TEST_F(ShardedWeights, NoWeightsAtAll) {
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    if (e.path().extension() == ".safetensors" || e.path().extension() == ".json") std::filesystem::remove(e.path());
  }
  EXPECT_TRUE(ThrowsErrorWith([&] { slm::WeightFiles::open(dir_); }, {dir_.string(), "model.safetensors"}));
}

}  // namespace
