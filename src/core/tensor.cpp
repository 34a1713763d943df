#include <slm/error.h>
#include <slm/tensor.h>

#include "core/half.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace slm {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
  }
  return 0;
}

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
  }
  return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  if (name == "f32" || name == "F32" || name == "float32") return DType::F32;
  if (name == "f16" || name == "F16" || name == "float16") return DType::F16;
  if (name == "bf16" || name == "BF16" || name == "bfloat16") return DType::BF16;
  return std::nullopt;
}

Tensor::Tensor(DType dtype, std::vector<int64_t> shape, void* data, std::shared_ptr<void> owner)
    : dtype_(dtype), shape_(std::move(shape)), data_(data), owner_(std::move(owner)) {}

Tensor Tensor::zeros(DType dtype, std::vector<int64_t> shape) {
  Tensor t(dtype, std::move(shape), nullptr, nullptr);
  // 64-byte alignment so vector loads never straddle a cache line start.
  const size_t bytes = (t.nbytes() + 63) / 64 * 64;
  void* memory = std::aligned_alloc(64, bytes == 0 ? 64 : bytes);
  if (!memory) throw std::bad_alloc();
  std::memset(memory, 0, bytes == 0 ? 64 : bytes);
  t.data_ = memory;
  t.owner_ = std::shared_ptr<void>(memory, std::free);
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
  }
  return 0.0f;
}

Tensor Tensor::to(DType target) const {
  if (target == dtype_) return *this;
  Tensor out = zeros(target, shape_);
  const int64_t n = numel();
  if (target == DType::F32) {
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

std::string Tensor::shape_string() const {
  std::string s = "[";
  for (size_t i = 0; i < shape_.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape_[i]);
  }
  return s + "]";
}

}  // namespace slm
