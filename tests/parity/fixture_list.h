// The fixture scripts (make_fixtures.sh, make_lora_fixtures.sh) write the
// names of the fixtures they made, in order, to DIR/models.txt; each parity
// test holds its own list of models to that file, so that a fixture added to
// one list and not the other fails instead of going untested.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace slm::test {

// The test's models against DIR/models.txt, DIR named by the environment
// variable `dir_variable` (the test is skipped when it is not set).
template <size_t N>
void expect_fixture_list(const char* dir_variable, const char* const (&models)[N]) {
  const char* dir = std::getenv(dir_variable);
  if (dir == nullptr || *dir == '\0') GTEST_SKIP() << dir_variable << " is not set: run through ctest";
  std::ifstream in(std::filesystem::path(dir) / "models.txt");
  ASSERT_TRUE(in) << "no models.txt in " << dir << " (the fixture script writes it)";
  std::vector<std::string> made;
  for (std::string line; std::getline(in, line);) made.push_back(line);
  EXPECT_EQ(std::vector<std::string>(std::begin(models), std::end(models)), made);
}

}  // namespace slm::test
