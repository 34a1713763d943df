// Random numbers that are the same on every platform and standard library
// (xoshiro256** seeded through splitmix64), so a seed always means one result.
#pragma once

#include <cstdint>

namespace slm {

class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next();
  double uniform();  // [0, 1)
  double normal();   // standard normal (Box–Muller)

 private:
  uint64_t state_[4];
};

// Mixes several values into one well-spread seed.
uint64_t mix_seed(uint64_t a, uint64_t b);

}  // namespace slm
