#include "core/caching_allocator.h"

#include <slm/error.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <set>
#include <unordered_map>

using slm::CachingAllocator;

namespace {

// A driver over malloc with a byte budget, counting what it is asked.
struct FakeDriver {
  size_t budget = size_t{1} << 40;
  size_t used = 0;
  int allocations = 0;
  int releases = 0;
  std::unordered_map<void*, size_t> live;

  CachingAllocator::Driver driver() {
    return {[this](size_t n) -> void* {
              if (used + n > budget) return nullptr;
              void* p = std::malloc(n);
              live[p] = n;
              used += n;
              ++allocations;
              return p;
            },
            [this](void* p) {
              used -= live.at(p);
              live.erase(p);
              ++releases;
              std::free(p);
            }};
  }
};

TEST(CachingAllocator, RoundsSmallSizesTo512BytesAndLargeTo2MiB) {
  EXPECT_EQ(CachingAllocator::round_size(0), 512u);
  EXPECT_EQ(CachingAllocator::round_size(1), 512u);
  EXPECT_EQ(CachingAllocator::round_size(513), 1024u);
  EXPECT_EQ(CachingAllocator::round_size((1u << 20) - 1), 1u << 20);
  EXPECT_EQ(CachingAllocator::round_size((1u << 20) + 1), 2u << 20);
  EXPECT_EQ(CachingAllocator::round_size((2u << 20) + 1), 4u << 20);
}

TEST(CachingAllocator, RepeatedStepsReuseBlocksWithoutCallingTheDriver) {
  FakeDriver fake;
  CachingAllocator allocator("test", fake.driver());
  for (int step = 0; step < 10; ++step) {
    void* a = allocator.allocate(1000);
    void* b = allocator.allocate(3u << 20);
    void* c = allocator.allocate(1000);
    EXPECT_NE(a, c);
    allocator.release(a);
    allocator.release(b);
    allocator.release(c);
  }
  EXPECT_EQ(fake.allocations, 3);
  EXPECT_EQ(allocator.stats().driver_allocations, 3u);
  EXPECT_EQ(allocator.stats().in_use, 0u);
  EXPECT_EQ(allocator.stats().cached, 1024u + 1024u + (4u << 20));
  EXPECT_EQ(allocator.stats().peak_in_use, 1024u + 1024u + (4u << 20));
}

TEST(CachingAllocator, TakesTheSmallestFittingBlockButNotOneOverTwiceTheRequest) {
  FakeDriver fake;
  CachingAllocator allocator("test", fake.driver());
  void* big = allocator.allocate(8192);
  void* mid = allocator.allocate(4096);
  allocator.release(big);
  allocator.release(mid);
  EXPECT_EQ(allocator.allocate(3000), mid);  // 4096 fits and is the smallest
  void* small = allocator.allocate(1000);    // 8192 > 2 × 1024: a new block
  EXPECT_NE(small, big);
  EXPECT_EQ(fake.allocations, 3);
  EXPECT_EQ(allocator.allocate(5000), big);
}

TEST(CachingAllocator, OutOfMemoryReturnsTheCacheAndRetriesThenNamesTheDevice) {
  FakeDriver fake;
  fake.budget = 6u << 20;
  CachingAllocator allocator("cuda:3", fake.driver());
  void* a = allocator.allocate(3u << 20);  // 4 MiB
  allocator.release(a);
  void* b = allocator.allocate(5u << 20);  // 6 MiB: fits only once the cached 4 MiB is returned
  EXPECT_EQ(fake.releases, 1);
  EXPECT_EQ(allocator.stats().cached, 0u);
  try {
    allocator.allocate(1u << 20);
    FAIL() << "expected an out-of-memory error";
  } catch (const slm::Error& e) {
    EXPECT_STREQ(e.what(), "cuda:3: out of memory allocating 2097152 bytes (6291456 bytes in use, 0 cached)");
  }
  allocator.release(b);
}

TEST(CachingAllocator, ReleasingAForeignOrFreedBlockFails) {
  FakeDriver fake;
  CachingAllocator allocator("test", fake.driver());
  void* a = allocator.allocate(10);
  allocator.release(a);
  EXPECT_THROW(allocator.release(a), slm::Error);
  int local = 0;
  EXPECT_THROW(allocator.release(&local), slm::Error);
}

TEST(CachingAllocator, EmptyCacheAndDestructionReturnEveryBlock) {
  FakeDriver fake;
  {
    CachingAllocator allocator("test", fake.driver());
    void* a = allocator.allocate(100);
    allocator.allocate(200);  // still in use at destruction
    allocator.release(a);
    allocator.empty_cache();
    EXPECT_EQ(fake.releases, 1);
    EXPECT_EQ(allocator.stats().cached, 0u);
  }
  EXPECT_EQ(fake.releases, 2);
  EXPECT_TRUE(fake.live.empty());
}

}  // namespace
