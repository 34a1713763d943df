// Tensor: a typed view of memory with a shape. A tensor never owns its bytes
// directly; it holds a shared handle to whatever does (a memory-mapped file, a
// heap buffer), so weights can point straight into a mapped safetensors file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace slm {

// Q8 and Q4 hold weights in blocks of 32 with one f16 scale each (see
// src/core/quant.h); they exist only in memory, made at load.
enum class DType : uint8_t { F32, F16, BF16, Q8, Q4 };

// Where a tensor's bytes live; a backend (src/backend/) computes over its own.
enum class Device : uint8_t { CPU, CUDA };

bool is_quantized(DType dtype);
// Bytes of `numel` elements (for Q8/Q4, numel is a multiple of 32).
size_t dtype_bytes(DType dtype, int64_t numel);
std::string_view dtype_name(DType dtype);  // "f32", "f16", "bf16", "q8", "q4"
// Accepts slm's names (f32, f16, bf16, q8, q4) and safetensors' (F32, F16, BF16).
std::optional<DType> parse_dtype(std::string_view name);

class Tensor {
 public:
  Tensor() = default;
  // A view of `data` (memory of `device`), kept alive by `owner`.
  Tensor(DType dtype, std::vector<int64_t> shape, void* data, std::shared_ptr<void> owner, Device device = Device::CPU);
  // A fresh, zero-filled tensor in memory of `device` (from its allocator).
  static Tensor zeros(DType dtype, std::vector<int64_t> shape, Device device = Device::CPU);

  bool empty() const { return data_ == nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_.at(i); }
  size_t rank() const { return shape_.size(); }
  int64_t numel() const;
  size_t nbytes() const { return dtype_bytes(dtype_, numel()); }

  void* data() const { return data_; }
  template <class T>
  T* data_as() const { return static_cast<T*>(data_); }

  // Converts to `dtype` (a no-op view when it already is that dtype).
  // Quantizing needs a last dimension that is a multiple of 32.
  Tensor to(DType dtype) const;
  // Element i (in row-major order) as float, for tests and small reads.
  float at(int64_t i) const;
  std::string shape_string() const;  // "[576, 49152]"
  // A view of rows [begin, begin + count) of the first dimension, sharing
  // this tensor's memory (quantized rows are whole blocks, so any row range is).
  Tensor rows(int64_t begin, int64_t count) const;

 private:
  DType dtype_ = DType::F32;
  Device device_ = Device::CPU;
  std::vector<int64_t> shape_;
  void* data_ = nullptr;
  std::shared_ptr<void> owner_;
};

// One tensor holding the rows of `parts` in order (equal dtypes and
// trailing dimensions): the fused checkpoint tensors of Phi-3. A copy.
Tensor concat_rows(std::span<const Tensor> parts);

}  // namespace slm
