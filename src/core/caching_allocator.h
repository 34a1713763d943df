// A caching allocator for device memory (the idea of PyTorch's CUDA caching
// allocator, kept small): a freed block goes back to a pool by size instead
// of to the driver, so steps that free and allocate the same sizes (every
// decode step does) never call the driver's allocate or free, which
// synchronise the device. The driver's functions are given, so this logic
// is the same for every device and is tested on the host over malloc.
//
// Sizes round up to 512 bytes below 1 MiB and to 2 MiB above. A request
// takes the smallest cached block at least its size and at most twice it
// (a larger one would waste more than the request). When the driver is out
// of memory, every cached block is returned to it and the request is tried
// once more; then it fails naming the size and what is in use and cached.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

namespace slm {

class CachingAllocator {
 public:
  struct Driver {
    std::function<void*(size_t)> allocate;  // null when out of memory
    std::function<void(void*)> release;
  };
  struct Stats {
    size_t in_use = 0;          // bytes of blocks handed out
    size_t cached = 0;          // bytes of free blocks held for reuse
    size_t peak_in_use = 0;
    size_t driver_allocations = 0;  // calls of Driver::allocate that succeeded
  };

  // `name` names the device in errors ("cuda:0").
  CachingAllocator(std::string name, Driver driver);
  ~CachingAllocator();  // returns every block to the driver
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // At least `bytes` (0 counts as 1), never null: fails with slm::Error.
  void* allocate(size_t bytes);
  // Back to the pool; `block` must come from allocate() and not be freed twice.
  void release(void* block);
  // Returns every cached block to the driver.
  void empty_cache();
  Stats stats() const;

  static size_t round_size(size_t bytes);

 private:
  void* take_cached(size_t size);  // under mutex_
  void empty_cache_locked();

  std::string name_;
  Driver driver_;
  mutable std::mutex mutex_;
  std::multimap<size_t, void*> free_;          // size → cached block
  std::unordered_map<void*, size_t> in_use_;  // block → size
  Stats stats_;
};

}  // namespace slm
