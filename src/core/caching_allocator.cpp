#include "core/caching_allocator.h"

#include <slm/error.h>

#include <algorithm>
#include <utility>

namespace slm {

namespace {

constexpr size_t kSmallGranule = 512;
constexpr size_t kLargeGranule = size_t{2} << 20;
constexpr size_t kLargeFrom = size_t{1} << 20;

size_t round_up(size_t n, size_t granule) { return (n + granule - 1) / granule * granule; }

}  // namespace

CachingAllocator::CachingAllocator(std::string name, Driver driver) : name_(std::move(name)), driver_(std::move(driver)) {}

CachingAllocator::~CachingAllocator() {
  for (const auto& [block, size] : in_use_) driver_.release(block);
  empty_cache_locked();
}

size_t CachingAllocator::round_size(size_t bytes) {
  bytes = std::max<size_t>(bytes, 1);
  return bytes < kLargeFrom ? round_up(bytes, kSmallGranule) : round_up(bytes, kLargeGranule);
}

void* CachingAllocator::take_cached(size_t size) {
  const auto it = free_.lower_bound(size);
  if (it == free_.end() || it->first > 2 * size) return nullptr;
  void* block = it->second;
  const size_t block_size = it->first;
  free_.erase(it);
  stats_.cached -= block_size;
  in_use_.emplace(block, block_size);
  stats_.in_use += block_size;
  stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
  return block;
}

void* CachingAllocator::allocate(size_t bytes) {
  const size_t size = round_size(bytes);
  const std::lock_guard lock(mutex_);
  if (void* block = take_cached(size)) return block;
  void* block = driver_.allocate(size);
  if (block == nullptr && !free_.empty()) {
    empty_cache_locked();
    block = driver_.allocate(size);
  }
  if (block == nullptr) {
    fail(name_, ": out of memory allocating ", size, " bytes (", stats_.in_use, " bytes in use, ", stats_.cached,
         " cached)");
  }
  ++stats_.driver_allocations;
  in_use_.emplace(block, size);
  stats_.in_use += size;
  stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
  return block;
}

void CachingAllocator::release(void* block) {
  const std::lock_guard lock(mutex_);
  const auto it = in_use_.find(block);
  if (it == in_use_.end()) fail(name_, ": release of a block this allocator did not hand out (or freed twice)");
  const size_t size = it->second;
  in_use_.erase(it);
  stats_.in_use -= size;
  free_.emplace(size, block);
  stats_.cached += size;
}

void CachingAllocator::empty_cache() {
  const std::lock_guard lock(mutex_);
  empty_cache_locked();
}

void CachingAllocator::empty_cache_locked() {
  for (const auto& [size, block] : free_) driver_.release(block);
  free_.clear();
  stats_.cached = 0;
}

CachingAllocator::Stats CachingAllocator::stats() const {
  const std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace slm
