#include "train/lora.h"

#include <slm/error.h>

#include "kernels/cpu/kernels.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace slm::train {

namespace {

int as_int(int64_t v) { return static_cast<int>(v); }

}  // namespace

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

const float* LoraAdapter::dropped_input(const float* x, int64_t M, double dropout, uint64_t seed,
                                        std::vector<float>& scratch) const {
  if (dropout <= 0.0) return x;
  scratch.resize(static_cast<size_t>(M * in_));
  Rng rng(seed);
  const float keep_scale = static_cast<float>(1.0 / (1.0 - dropout));
  for (int64_t i = 0; i < M * in_; ++i) {
    scratch[static_cast<size_t>(i)] = rng.uniform() < dropout ? 0.0f : x[i] * keep_scale;
  }
  return scratch.data();
}

void LoraAdapter::forward(const float* x, int64_t M, double dropout, uint64_t dropout_seed, float* u, float* y,
                          std::vector<float>& scratch) const {
  cpu::low_rank_add(dropped_input(x, M, dropout, dropout_seed, scratch), M, A_, B_, scale_, u, y);
}

void LoraAdapter::backward(const float* x, const float* u, const float* dy, int64_t M, double dropout,
                           uint64_t dropout_seed, float* dx, std::vector<float>& scratch) {
  // dB += scale · dyᵀ·u ; du = scale · dy·B ; dA += duᵀ·xd ; dx += (du·A) ⊙ dropout mask
  std::vector<float> du(static_cast<size_t>(M * rank_));
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, as_int(out_), as_int(rank_), as_int(M), scale_, dy,
              as_int(out_), u, as_int(rank_), 1.0f, dB_.data_as<float>(), as_int(rank_));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, as_int(M), as_int(rank_), as_int(out_), scale_, dy,
              as_int(out_), B_.data_as<const float>(), as_int(rank_), 0.0f, du.data(), as_int(rank_));
  const float* xd = dropped_input(x, M, dropout, dropout_seed, scratch);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, as_int(rank_), as_int(in_), as_int(M), 1.0f, du.data(),
              as_int(rank_), xd, as_int(in_), 1.0f, dA_.data_as<float>(), as_int(in_));
  if (dropout <= 0.0) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, as_int(M), as_int(in_), as_int(rank_), 1.0f, du.data(),
                as_int(rank_), A_.data_as<const float>(), as_int(in_), 1.0f, dx, as_int(in_));
    return;
  }
  // ∂xd/∂x = mask / (1−p); the mask is drawn again from forward's seed.
  std::vector<float> dxd(static_cast<size_t>(M * in_));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, as_int(M), as_int(in_), as_int(rank_), 1.0f, du.data(),
              as_int(rank_), A_.data_as<const float>(), as_int(in_), 0.0f, dxd.data(), as_int(in_));
  Rng rng(dropout_seed);
  const float keep_scale = static_cast<float>(1.0 / (1.0 - dropout));
  for (int64_t i = 0; i < M * in_; ++i) {
    if (!(rng.uniform() < dropout)) dx[i] += dxd[static_cast<size_t>(i)] * keep_scale;
  }
}

}  // namespace slm::train
