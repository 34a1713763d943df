#include <slm/error.h>
#include <slm/tensor.h>

#include "core/allocator.h"
#include "core/half.h"
#include "core/quant.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

namespace slm {

bool is_quantized(DType dtype) { return dtype == DType::Q8 || dtype == DType::Q4; }

size_t dtype_bytes(DType dtype, int64_t numel) {
  const auto n = static_cast<size_t>(numel);
  switch (dtype) {
    case DType::F32: return 4 * n;
    case DType::F16: return 2 * n;
    case DType::BF16: return 2 * n;
    case DType::Q8: return n / kQuantBlock * sizeof(BlockQ8);
    case DType::Q4: return n / kQuantBlock * sizeof(BlockQ4);
  }
  return 0;
}

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::Q8: return "q8";
    case DType::Q4: return "q4";
  }
  return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  if (name == "f32" || name == "F32" || name == "float32") return DType::F32;
  if (name == "f16" || name == "F16" || name == "float16") return DType::F16;
  if (name == "bf16" || name == "BF16" || name == "bfloat16") return DType::BF16;
  if (name == "q8") return DType::Q8;
  if (name == "q4") return DType::Q4;
  return std::nullopt;
}

Tensor::Tensor(DType dtype, std::vector<int64_t> shape, void* data, std::shared_ptr<void> owner, Device device)
    : dtype_(dtype), device_(device), shape_(std::move(shape)), data_(data), owner_(std::move(owner)) {}

namespace {

// 64-byte alignment so vector loads never straddle a cache line start.
std::shared_ptr<void> allocate_cpu(size_t bytes) {
  const size_t rounded = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
  void* memory = std::aligned_alloc(64, rounded);
  if (!memory) throw std::bad_alloc();
  std::memset(memory, 0, rounded);
  return std::shared_ptr<void>(memory, std::free);
}

std::array<DeviceAllocator, 2>& allocators() {
  static std::array<DeviceAllocator, 2> table{allocate_cpu, nullptr};
  return table;
}

}  // namespace

void register_allocator(Device device, DeviceAllocator allocate) { allocators()[static_cast<size_t>(device)] = allocate; }

std::shared_ptr<void> allocate_on(Device device, size_t bytes) {
  const DeviceAllocator allocate = allocators()[static_cast<size_t>(device)];
  if (!allocate) fail("no memory allocator for device ", device == Device::CUDA ? "cuda" : "cpu", " in this build");
  return allocate(bytes);
}

Tensor Tensor::zeros(DType dtype, std::vector<int64_t> shape, Device device) {
  Tensor t(dtype, std::move(shape), nullptr, nullptr, device);
  t.owner_ = allocate_on(device, t.nbytes());
  t.data_ = t.owner_.get();
  return t;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

float Tensor::at(int64_t i) const {
  switch (dtype_) {
    case DType::F32: return data_as<const float>()[i];
    case DType::F16: return f16_to_f32(data_as<const uint16_t>()[i]);
    case DType::BF16: return bf16_to_f32(data_as<const uint16_t>()[i]);
    case DType::Q8: {
      const BlockQ8& b = data_as<const BlockQ8>()[i / kQuantBlock];
      return f16_to_f32(b.scale) * static_cast<float>(b.q[i % kQuantBlock]);
    }
    case DType::Q4: {
      const BlockQ4& b = data_as<const BlockQ4>()[i / kQuantBlock];
      const int64_t j = i % kQuantBlock;
      const int level = j < kQuantBlock / 2 ? (b.q[j] & 0x0f) : (b.q[j - kQuantBlock / 2] >> 4);
      return f16_to_f32(b.scale) * static_cast<float>(level - 8);
    }
  }
  return 0.0f;
}

Tensor Tensor::to(DType target) const {
  if (target == dtype_) return *this;
  if (is_quantized(target) && (shape_.empty() || shape_.back() % kQuantBlock != 0)) {
    fail("cannot quantize a tensor of shape ", shape_string(), " to ", dtype_name(target), ": its last dimension must be a multiple of ",
         kQuantBlock);
  }
  Tensor out = zeros(target, shape_);
  const int64_t n = numel();
  if (is_quantized(target)) {
    const int64_t row = shape_.back();
    const int64_t rows = n / row;
#pragma omp parallel
    {
      std::vector<float> values(static_cast<size_t>(row));
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t i = 0; i < row; ++i) values[static_cast<size_t>(i)] = at(r * row + i);
        if (target == DType::Q8) {
          quantize_q8(values.data(), row, out.data_as<BlockQ8>() + r * (row / kQuantBlock));
        } else {
          quantize_q4(values.data(), row, out.data_as<BlockQ4>() + r * (row / kQuantBlock));
        }
      }
    }
  } else if (target == DType::F32) {
    float* dst = out.data_as<float>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) dst[i] = at(i);
  } else {
    uint16_t* dst = out.data_as<uint16_t>();
    const bool to_bf16 = target == DType::BF16;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) dst[i] = to_bf16 ? f32_to_bf16(at(i)) : f32_to_f16(at(i));
  }
  return out;
}

Tensor Tensor::rows(int64_t begin, int64_t count) const {
  if (shape_.empty() || begin < 0 || count < 0 || begin + count > shape_[0]) {
    fail("rows [", begin, ", ", begin + count, ") of a tensor of shape ", shape_string());
  }
  std::vector<int64_t> shape = shape_;
  shape[0] = count;
  const size_t row_bytes = shape_[0] == 0 ? 0 : nbytes() / static_cast<size_t>(shape_[0]);
  return Tensor(dtype_, std::move(shape), static_cast<char*>(data_) + static_cast<size_t>(begin) * row_bytes, owner_,
                device_);
}

Tensor concat_rows(std::span<const Tensor> parts) {
  if (parts.empty()) fail("concat_rows: no tensors");
  std::vector<int64_t> shape = parts[0].shape();
  shape[0] = 0;
  for (const Tensor& p : parts) {
    const bool same_rows = p.rank() == shape.size() && std::equal(shape.begin() + 1, shape.end(), p.shape().begin() + 1);
    if (p.dtype() != parts[0].dtype() || !same_rows) {
      fail("concat_rows: ", p.shape_string(), " ", dtype_name(p.dtype()), " does not continue ",
           parts[0].shape_string(), " ", dtype_name(parts[0].dtype()));
    }
    shape[0] += p.dim(0);
  }
  Tensor out = Tensor::zeros(parts[0].dtype(), std::move(shape), parts[0].device());
  char* dst = out.data_as<char>();
  for (const Tensor& p : parts) {
    std::memcpy(dst, p.data(), p.nbytes());
    dst += p.nbytes();
  }
  return out;
}

std::string Tensor::shape_string() const {
  std::string s = "[";
  for (size_t i = 0; i < shape_.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape_[i]);
  }
  return s + "]";
}

}  // namespace slm
