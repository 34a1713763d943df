#include "backend/backend.h"

#include <slm/error.h>

namespace slm {

namespace cpu {
const Backend& backend();
}

#ifdef SLM_WITH_CUDA
namespace cuda {
GpuInventory inventory();
}
GpuInventory gpu_inventory() { return cuda::inventory(); }
#else
GpuInventory gpu_inventory() { return {0, "this build of slm has no CUDA backend"}; }
#endif

const Backend& backend_for(Device device) {
  if (device == Device::CPU) return cpu::backend();
  fail("--device cuda: this build of slm has no CUDA backend (only the CPU is available)");
}

}  // namespace slm
