#include "backend/cuda/cuda_runtime.h"

#include <slm/error.h>

#include "core/allocator.h"

#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace slm::cuda {

namespace {

// Memory of Tensor::zeros on Device::CUDA: the first GPU's (a split model
// places its parts by DevicePlacement, not through this).
std::shared_ptr<void> zeros_on_first_gpu(size_t bytes) {
  CachingAllocator& pool = allocator(0);
  void* block = pool.allocate(bytes);
  SLM_CUDA_CHECK(cudaSetDevice(0));
  SLM_CUDA_CHECK(cudaMemset(block, 0, bytes));
  return {block, [&pool](void* p) { pool.release(p); }};
}

}  // namespace

void check(cudaError_t status, const char* call, const char* file, int line) {
  if (status == cudaSuccess) return;
  fail(file, ":", line, ": ", call, " failed: ", cudaGetErrorString(status), " (", cudaGetErrorName(status), ")");
}

GpuInventory inventory() {
  static const GpuInventory once = [] {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
      return GpuInventory{0, std::string("cudaGetDeviceCount: ") + cudaGetErrorString(status)};
    }
    if (count == 0) return GpuInventory{0, "the CUDA driver reports no device"};
    register_allocator(Device::CUDA, zeros_on_first_gpu);
    return GpuInventory{count, ""};
  }();
  return once;
}

CachingAllocator& allocator(int device) {
  // One per GPU, made on first use and never destroyed: tensors destroyed at
  // exit still release their blocks to it, and the driver frees the rest.
  static std::mutex mutex;
  static auto& pools = *new std::vector<std::unique_ptr<CachingAllocator>>;
  const int count = inventory().count;
  if (device < 0 || device >= count) fail("cuda:", device, ": no such GPU (", count, " present)");
  const std::lock_guard lock(mutex);
  if (pools.empty()) pools.resize(static_cast<size_t>(count));
  auto& pool = pools[static_cast<size_t>(device)];
  if (!pool) {
    CachingAllocator::Driver driver{[device](size_t bytes) -> void* {
                                      void* p = nullptr;
                                      SLM_CUDA_CHECK(cudaSetDevice(device));
                                      if (cudaMalloc(&p, bytes) != cudaSuccess) {
                                        (void)cudaGetLastError();  // out of memory: the allocator retries
                                        return nullptr;
                                      }
                                      return p;
                                    },
                                    [device](void* p) {
                                      SLM_CUDA_CHECK(cudaSetDevice(device));
                                      SLM_CUDA_CHECK(cudaFree(p));
                                    }};
    pool = std::make_unique<CachingAllocator>("cuda:" + std::to_string(device), std::move(driver));
  }
  return *pool;
}

}  // namespace slm::cuda
