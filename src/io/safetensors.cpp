#include "io/safetensors.h"

#include <slm/error.h>

#include "core/atomic_file.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>

namespace slm {

namespace {

using json = nlohmann::json;

// Hugging Face's reader refuses headers above 100 MB; so do we, before parsing.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

const char* safetensors_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::Q8:
    case DType::Q4: fail("safetensors: quantized tensors (", dtype_name(dtype), ") cannot be written");
  }
  return "?";
}

TensorEntry parse_entry(const json& value, const std::string& where, size_t data_size) {
  if (!value.is_object()) fail(where, ": expected an object with dtype, shape and data_offsets");
  const auto dtype_it = value.find("dtype");
  if (dtype_it == value.end() || !dtype_it->is_string()) fail(where, ": missing string field \"dtype\"");
  const std::string dtype_text = dtype_it->get<std::string>();
  TensorEntry entry{};
  if (dtype_text == "F32") {
    entry.dtype = DType::F32;
  } else if (dtype_text == "F16") {
    entry.dtype = DType::F16;
  } else if (dtype_text == "BF16") {
    entry.dtype = DType::BF16;
  } else {
    fail(where, ": dtype \"", dtype_text, "\" is not supported (expected F32, F16 or BF16)");
  }

  const auto shape_it = value.find("shape");
  if (shape_it == value.end() || !shape_it->is_array()) fail(where, ": missing array field \"shape\"");
  uint64_t numel = 1;
  for (const json& d : *shape_it) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) fail(where, ": shape must hold non-negative integers");
    const uint64_t dim = d.get<uint64_t>();
    if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / dim) fail(where, ": shape is absurdly large");
    numel *= dim;
    entry.shape.push_back(static_cast<int64_t>(dim));
  }

  const auto offsets_it = value.find("data_offsets");
  if (offsets_it == value.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
    fail(where, ": \"data_offsets\" must be two non-negative integers [begin, end]");
  }
  const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
  const uint64_t end = (*offsets_it)[1].get<uint64_t>();
  if (begin > end) fail(where, ": data_offsets [", begin, ", ", end, "] are reversed");
  if (end > data_size) {
    fail(where, ": data_offsets [", begin, ", ", end, "] run past the end of the data (", data_size, " bytes)");
  }
  const uint64_t expected = dtype_bytes(entry.dtype, static_cast<int64_t>(numel));
  if (end - begin != expected) {
    fail(where, ": holds ", end - begin, " bytes but shape ", value["shape"].dump(), " of ", dtype_text, " needs ",
         expected);
  }
  entry.begin = static_cast<size_t>(begin);
  entry.end = static_cast<size_t>(end);
  return entry;
}

}  // namespace

std::map<std::string, TensorEntry> SafetensorsFile::parse_header(const uint8_t* bytes, size_t size,
                                                                 const std::string& file_name,
                                                                 std::map<std::string, std::string>* metadata) {
  if (size < 8) fail(file_name, ": too short to be a safetensors file (", size, " bytes)");
  const uint64_t header_size = read_u64_le(bytes);
  if (header_size > size - 8) {
    fail(file_name, ": header length ", header_size, " runs past the end of the file (", size, " bytes)");
  }
  if (header_size > kMaxHeaderBytes) fail(file_name, ": header length ", header_size, " exceeds 100 MB");
  const size_t data_size = size - 8 - static_cast<size_t>(header_size);

  json header;
  try {
    header = json::parse(bytes + 8, bytes + 8 + header_size);
  } catch (const json::exception& e) {
    fail(file_name, ": header is not valid JSON: ", e.what());
  }
  if (!header.is_object()) fail(file_name, ": header must be a JSON object");

  std::map<std::string, TensorEntry> entries;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) fail(file_name, ": __metadata__ must be an object of strings");
      for (const auto& [key, text] : value.items()) {
        if (!text.is_string()) fail(file_name, ": __metadata__.", key, " must be a string");
        if (metadata) (*metadata)[key] = text.get<std::string>();
      }
      continue;
    }
    entries.emplace(name, parse_entry(value, file_name + ": tensor \"" + name + "\"", data_size));
  }

  std::vector<std::pair<const std::string*, const TensorEntry*>> by_offset;
  for (const auto& [name, entry] : entries) by_offset.emplace_back(&name, &entry);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto& a, const auto& b) { return a.second->begin < b.second->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i].second->begin < by_offset[i - 1].second->end) {
      fail(file_name, ": tensors \"", *by_offset[i - 1].first, "\" and \"", *by_offset[i].first,
           "\" overlap in the data section");
    }
  }
  return entries;
}

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  SafetensorsFile file;
  file.file_ = MappedFile::open(path);
  file.entries_ = parse_header(file.file_->data(), file.file_->size(), path.string(), &file.metadata_);
  file.data_ = file.file_->data() + 8 + read_u64_le(file.file_->data());
  return file;
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const auto it = entries_.find(name);
  if (it == entries_.end()) fail(path().string(), ": no tensor named \"", name, "\"");
  const TensorEntry& e = it->second;
  // The mapping is read-only; tensors from files are never written through.
  void* data = const_cast<uint8_t*>(data_ + e.begin);
  return Tensor(e.dtype, e.shape, data, file_);
}

void write_safetensors(const std::filesystem::path& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  // Wider dtypes first (as Hugging Face's writer does): every tensor then
  // starts at a multiple of its element size, so an f32 tensor after an
  // odd-sized bf16 one is still aligned for float loads from the mapping.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return dtype_bytes(tensors[a].second.dtype(), 1) > dtype_bytes(tensors[b].second.dtype(), 1);
  });
  size_t offset = 0;
  for (const size_t i : order) {
    const auto& [name, t] = tensors[i];
    if (header.contains(name)) fail(path.string(), ": tensor \"", name, "\" given twice");
    header[name] = {{"dtype", safetensors_dtype_name(t.dtype())},
                    {"shape", t.shape()},
                    {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string text = header.dump();
  // Pad with spaces so the data section starts 8-byte aligned, as the format recommends.
  text.append((8 - text.size() % 8) % 8, ' ');
  write_file_atomically(path, [&](std::ostream& out) {
    uint8_t length[8];
    uint64_t n = text.size();
    for (uint8_t& b : length) {
      b = static_cast<uint8_t>(n & 0xff);
      n >>= 8;
    }
    out.write(reinterpret_cast<const char*>(length), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const size_t i : order) {
      const Tensor& t = tensors[i].second;
      out.write(static_cast<const char*>(t.data()), static_cast<std::streamsize>(t.nbytes()));
    }
  });
}

WeightFiles WeightFiles::open(const std::filesystem::path& dir) {
  WeightFiles weights;
  const auto index_path = dir / "model.safetensors.index.json";
  const auto single_path = dir / "model.safetensors";
  if (std::filesystem::exists(index_path)) {
    json index;
    try {
      std::ifstream in(index_path);
      index = json::parse(in);
    } catch (const json::exception& e) {
      fail(index_path.string(), ": not valid JSON: ", e.what());
    }
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      fail(index_path.string(), ": expected an object with a \"weight_map\" object");
    }
    std::map<std::string, size_t> shard_of_file;
    for (const auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string()) fail(index_path.string(), ": weight_map.", name, " must be a file name");
      const std::string shard = file.get<std::string>();
      if (shard.find('/') != std::string::npos || shard == "..") {
        fail(index_path.string(), ": weight_map.", name, ": shard \"", shard, "\" must be a file in the folder");
      }
      auto [it, inserted] = shard_of_file.emplace(shard, weights.files_.size());
      if (inserted) weights.files_.push_back(SafetensorsFile::open(dir / shard));
      if (!weights.files_[it->second].contains(name)) {
        fail(index_path.string(), ": tensor \"", name, "\" is listed in ", shard, " but that file does not hold it");
      }
      weights.where_[name] = it->second;
    }
    weights.description_ = std::to_string(weights.files_.size()) + " shards listed in model.safetensors.index.json";
  } else if (std::filesystem::exists(single_path)) {
    weights.files_.push_back(SafetensorsFile::open(single_path));
    for (const auto& [name, entry] : weights.files_[0].entries()) weights.where_[name] = 0;
    weights.description_ = "model.safetensors";
  } else {
    fail(dir.string(), ": no model.safetensors or model.safetensors.index.json (expected Hugging Face safetensors weights)");
  }
  return weights;
}

Tensor WeightFiles::tensor(const std::string& name) const {
  const auto it = where_.find(name);
  if (it == where_.end()) fail(description_, ": missing tensor \"", name, "\"");
  return files_[it->second].tensor(name);
}

std::vector<std::string> WeightFiles::names() const {
  std::vector<std::string> out;
  for (const auto& [name, index] : where_) out.push_back(name);
  return out;
}

std::string WeightFiles::describe() const { return description_; }

void WeightFiles::release(const Tensor& view) const {
  for (const SafetensorsFile& file : files_) file.mapping().release(view.data(), view.nbytes());
}

}  // namespace slm
