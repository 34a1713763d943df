// Rng: a seed always means one sequence, and the distributions are what they claim.
#include <slm/random.h>

#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <vector>

namespace {

TEST(Rng, SameSeedSameSequence) {
  slm::Rng a(42), b(42);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(a.next(), b.next());
  slm::Rng c(42), d(42);
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(c.uniform(), d.uniform());
    ASSERT_EQ(c.normal(), d.normal());
  }
}

TEST(Rng, DifferentSeedsDiffer) {
  // Neighbouring seeds (the common case: 0, 1, 2...) must not give related streams.
  std::set<uint64_t> firsts;
  for (uint64_t seed = 0; seed < 1000; ++seed) firsts.insert(slm::Rng(seed).next());
  EXPECT_EQ(firsts.size(), 1000u);
  slm::Rng a(1), b(2);
  int equal = 0;
  for (int i = 0; i < 1000; ++i) equal += a.next() == b.next();
  EXPECT_EQ(equal, 0);
}

TEST(Rng, SeedZeroIsNotDegenerate) {
  // xoshiro's all-zero state would output zeros forever; splitmix seeding must avoid it.
  slm::Rng rng(0);
  int zeros = 0;
  for (int i = 0; i < 100; ++i) zeros += rng.next() == 0;
  EXPECT_EQ(zeros, 0);
}

TEST(Rng, UniformInUnitIntervalWithRightMoments) {
  slm::Rng rng(123);
  constexpr int kN = 200000;
  double sum = 0, sum_sq = 0;
  std::vector<int> buckets(10, 0);
  for (int i = 0; i < kN; ++i) {
    const double u = rng.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    sum_sq += u * u;
    ++buckets[static_cast<size_t>(u * 10)];
  }
  const double mean = sum / kN;
  const double var = sum_sq / kN - mean * mean;
  // mean of U(0,1) is 1/2 with sd sqrt(1/12/N); 5 sigma.
  EXPECT_NEAR(mean, 0.5, 5 * std::sqrt(1.0 / 12 / kN));
  // variance 1/12; the variance of (u-1/2)^2 is 1/180, so 5 sigma is 5*sqrt(1/180/N).
  EXPECT_NEAR(var, 1.0 / 12, 5 * std::sqrt(1.0 / 180 / kN));
  // Each decile holds 1/10 (binomial sd sqrt(N p (1-p))).
  for (int b : buckets) EXPECT_NEAR(b, kN / 10.0, 5 * std::sqrt(kN * 0.1 * 0.9));
}

TEST(Rng, NormalHasMeanZeroVarianceOne) {
  slm::Rng rng(99);
  constexpr int kN = 200000;
  double sum = 0, sum_sq = 0, sum_4 = 0;
  int within_one_sigma = 0;
  for (int i = 0; i < kN; ++i) {
    const double z = rng.normal();
    ASSERT_TRUE(std::isfinite(z));
    sum += z;
    sum_sq += z * z;
    sum_4 += z * z * z * z;
    within_one_sigma += std::fabs(z) < 1.0;
  }
  const double mean = sum / kN;
  const double var = sum_sq / kN - mean * mean;
  EXPECT_NEAR(mean, 0.0, 5 / std::sqrt(kN));
  // Var(z^2) = 2 for a standard normal.
  EXPECT_NEAR(var, 1.0, 5 * std::sqrt(2.0 / kN));
  // Fourth moment 3 (Var(z^4) = 96): a uniform or a Laplace would miss it.
  EXPECT_NEAR(sum_4 / kN, 3.0, 5 * std::sqrt(96.0 / kN));
  const double p = 0.682689492;
  EXPECT_NEAR(within_one_sigma, p * kN, 5 * std::sqrt(kN * p * (1 - p)));
}

TEST(Rng, MixSeedSpreadsNeighbours) {
  std::set<uint64_t> seen;
  for (uint64_t a = 0; a < 32; ++a) {
    for (uint64_t b = 0; b < 32; ++b) seen.insert(slm::mix_seed(a, b));
  }
  EXPECT_EQ(seen.size(), 32u * 32u);
  EXPECT_EQ(slm::mix_seed(5, 7), slm::mix_seed(5, 7));
  EXPECT_NE(slm::mix_seed(5, 7), slm::mix_seed(7, 5));
}

}  // namespace
