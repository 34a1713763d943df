// Per-device memory: each device's backend registers how it allocates, and
// Tensor::zeros takes its bytes from there. The CPU's is built in.
#pragma once

#include <slm/tensor.h>

#include <cstddef>
#include <memory>

namespace slm {

// Zero-filled bytes of `device`, freed when the last owner lets go.
using DeviceAllocator = std::shared_ptr<void> (*)(size_t bytes);

// Installs the allocator of a device (a backend does, when it starts).
void register_allocator(Device device, DeviceAllocator allocate);
// Fails naming the device when no backend registered one.
std::shared_ptr<void> allocate_on(Device device, size_t bytes);

}  // namespace slm
