#include "train/lora.h"

#include <slm/error.h>

#include "kernels/cpu/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace slm::train {

std::string lora_module_path(LoraModule module) {
  const auto index = static_cast<size_t>(module);
  return std::string(index < 4 ? "self_attn." : "mlp.") + std::string(kLoraModuleNames[index]);
}

std::vector<LoraModule> parse_lora_targets(const std::vector<std::string>& names) {
  if (names.empty()) fail("--lora-targets: no target modules given");
  std::array<bool, kLoraModuleCount> chosen{};
  for (const std::string& name : names) {
    if (name == "all-linear") {
      chosen.fill(true);
      continue;
    }
    const auto it = std::find(kLoraModuleNames.begin(), kLoraModuleNames.end(), name);
    if (it == kLoraModuleNames.end()) {
      std::string valid;
      for (std::string_view n : kLoraModuleNames) valid += std::string(n) + ", ";
      fail("--lora-targets: unknown module \"", name, "\" (the model has ", valid, "or all-linear)");
    }
    chosen[static_cast<size_t>(it - kLoraModuleNames.begin())] = true;
  }
  std::vector<LoraModule> modules;
  for (int i = 0; i < kLoraModuleCount; ++i) {
    if (chosen[static_cast<size_t>(i)]) modules.push_back(static_cast<LoraModule>(i));
  }
  return modules;
}

LoraAdapter::LoraAdapter(int64_t in, int64_t out, int64_t rank, double alpha, Rng& rng)
    : in_(in), out_(out), rank_(rank), scale_(static_cast<float>(alpha / static_cast<double>(rank))) {
  if (rank <= 0) fail("--lora-r: rank must be positive, got ", rank);
  A_ = Tensor::zeros(DType::F32, {rank, in});
  B_ = Tensor::zeros(DType::F32, {out, rank});
  dA_ = Tensor::zeros(DType::F32, {rank, in});
  dB_ = Tensor::zeros(DType::F32, {out, rank});
  // torch's kaiming_uniform_(a=√5): gain √(2/(1+a²)) = √(1/3), bound = gain·√(3/fan_in) = 1/√fan_in.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  float* a = A_.data_as<float>();
  for (int64_t i = 0; i < A_.numel(); ++i) a[i] = static_cast<float>((2.0 * rng.uniform() - 1.0) * bound);
}

void LoraAdapter::zero_grad() {
  std::memset(dA_.data(), 0, dA_.nbytes());
  std::memset(dB_.data(), 0, dB_.nbytes());
}

namespace {

// Calls keep(i) for each input element dropout keeps and drop(i) for the
// others (i = row · in + column). Each row of the mask is drawn from its own
// generator, so rows go to threads freely and backward draws the same mask
// again from the same seed. One 64-bit draw decides four elements, each
// dropped when its 16 bits fall below p·2^16 (p to within 2^-17): the
// generator was a tenth of a training step when every element took a draw.
template <typename Keep, typename Drop>
void for_each_mask_row(int64_t M, int64_t in, double dropout, uint64_t seed, Keep keep, Drop drop) {
  const auto threshold = static_cast<uint64_t>(std::llround(dropout * 65536.0));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < M; ++r) {
    Rng rng(mix_seed(seed, static_cast<uint64_t>(r)));
    uint64_t bits = 0;
    for (int64_t i = 0; i < in; ++i) {
      if (i % 4 == 0) bits = rng.next();
      if ((bits & 0xffff) < threshold) {
        drop(r * in + i);
      } else {
        keep(r * in + i);
      }
      bits >>= 16;
    }
  }
}

}  // namespace

const float* LoraAdapter::dropped_input(const float* x, int64_t M, double dropout, uint64_t seed,
                                        std::vector<float>& scratch) const {
  if (dropout <= 0.0) return x;
  if (scratch.size() < static_cast<size_t>(M * in_)) scratch.resize(static_cast<size_t>(M * in_));
  float* out = scratch.data();
  const float keep_scale = static_cast<float>(1.0 / (1.0 - dropout));
  for_each_mask_row(
      M, in_, dropout, seed, [&](int64_t i) { out[i] = x[i] * keep_scale; }, [&](int64_t i) { out[i] = 0.0f; });
  return out;
}

void LoraAdapter::forward(const float* x, int64_t M, double dropout, uint64_t dropout_seed, float* u, float* y,
                          std::vector<float>& scratch) const {
  cpu::low_rank_add(dropped_input(x, M, dropout, dropout_seed, scratch), M, A_, B_, scale_, u, y);
}

void LoraAdapter::backward(const float* x, const float* u, const float* dy, int64_t M, double dropout,
                           uint64_t dropout_seed, float* dx, std::vector<float>& scratch) {
  // dB += scale · dyᵀ·u ; du = scale · dy·B ; dA += duᵀ·xd ; dx += (du·A) ⊙ dropout mask
  // scratch: the dropped input (then du·A) [M, in], and du [M, rank].
  scratch.resize(static_cast<size_t>(M * (in_ + rank_)));
  float* du = scratch.data() + M * in_;
  cpu::sgemm_parallel(true, false, out_, rank_, M, scale_, dy, out_, u, rank_, 1.0f, dB_.data_as<float>(), rank_);
  cpu::sgemm_parallel(false, false, M, rank_, out_, scale_, dy, out_, B_.data_as<const float>(), rank_, 0.0f, du,
                      rank_);
  const float* xd = dropped_input(x, M, dropout, dropout_seed, scratch);
  cpu::sgemm_parallel(true, false, rank_, in_, M, 1.0f, du, rank_, xd, in_, 1.0f, dA_.data_as<float>(), in_);
  if (dropout <= 0.0) {
    cpu::sgemm_parallel(false, false, M, in_, rank_, 1.0f, du, rank_, A_.data_as<const float>(), in_, 1.0f, dx, in_);
    return;
  }
  // ∂xd/∂x = mask / (1−p): du·A goes to the scratch (xd is no longer
  // needed), then through the mask forward drew.
  float* dxd = scratch.data();
  cpu::sgemm_parallel(false, false, M, in_, rank_, 1.0f, du, rank_, A_.data_as<const float>(), in_, 0.0f, dxd, in_);
  const float keep_scale = static_cast<float>(1.0 / (1.0 - dropout));
  for_each_mask_row(M, in_, dropout, dropout_seed, [&](int64_t i) { dx[i] += dxd[i] * keep_scale; }, [](int64_t) {});
}

}  // namespace slm::train
