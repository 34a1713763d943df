// The CUDA runtime as slm uses it (built with -DSLM_CUDA=ON): errors checked
// at every call, naming the call and where it was made; the GPUs present;
// device memory from one caching allocator per GPU. The binary runs the same
// on a machine without a GPU or driver: the runtime is linked statically and
// finds the driver at run time, and gpu_inventory() then says why there is
// no GPU.
#pragma once

#include "backend/backend.h"
#include "core/caching_allocator.h"

#include <cuda_runtime_api.h>

namespace slm::cuda {

// Fails with slm::Error "FILE:LINE: CALL failed: message (cudaErrorName)".
void check(cudaError_t status, const char* call, const char* file, int line);
#define SLM_CUDA_CHECK(call) ::slm::cuda::check((call), #call, __FILE__, __LINE__)

// Counted once per process.
GpuInventory inventory();

// The allocator of GPU `device` (blocks on that device; see CachingAllocator).
CachingAllocator& allocator(int device);

}  // namespace slm::cuda
