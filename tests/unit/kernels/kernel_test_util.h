// Shared helpers of the kernel tests: random tensors, and running a check
// once per instruction-set path the CPU offers (slm::cpu::force_isa).
#pragma once

#include <slm/random.h>
#include <slm/tensor.h>

#include "core/half.h"
#include "backend/cpu/simd.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

namespace slm::test {

inline std::vector<float> random_vector(int64_t n, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = static_cast<float>(rng.normal() * scale);
  return v;
}

// A [rows, cols] weight of `dtype` holding N(0, scale²) values, rounded (or
// quantized, for q8/q4: cols a multiple of 32) by Tensor::to.
inline Tensor random_weight(DType dtype, int64_t rows, int64_t cols, uint64_t seed, double scale = 1.0) {
  Tensor t = Tensor::zeros(DType::F32, {rows, cols});
  Rng rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = static_cast<float>(rng.normal() * scale);
  return t.to(dtype);
}

// Restores the detected path when a test ends, whatever it forced.
class IsaGuard {
 public:
  IsaGuard() : saved_(cpu::active_isa()) {}
  ~IsaGuard() { cpu::force_isa(saved_); }

 private:
  cpu::Isa saved_;
};

// Runs `body` once per path this CPU supports (scalar always), with a
// SCOPED_TRACE naming it. Returns the paths run.
inline std::vector<cpu::Isa> for_each_isa(const std::function<void(cpu::Isa)>& body) {
  IsaGuard guard;
  std::vector<cpu::Isa> ran;
  for (cpu::Isa isa : {cpu::Isa::Scalar, cpu::Isa::Avx2, cpu::Isa::Avx2Vnni, cpu::Isa::Avx512, cpu::Isa::Avx512Bf16, cpu::Isa::Amx, cpu::Isa::Neon,
                       cpu::Isa::NeonDot, cpu::Isa::NeonBf16}) {
    cpu::force_isa(isa);
    if (cpu::active_isa() != isa) continue;  // above what the CPU has
    SCOPED_TRACE(std::string("isa ") + std::string(cpu::isa_name(isa)));
    body(isa);
    ran.push_back(isa);
  }
  return ran;
}

}  // namespace slm::test
