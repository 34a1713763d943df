// Errors: every failure a user can cause (a bad file, a bad option, an
// unsupported model) is reported as one slm::Error whose message names the
// file, field or option and what was expected. The CLI prints it and exits 1.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace slm {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Builds the message from its parts, streamed in order: fail("config.json: ", field, " must be positive").
template <class... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  std::ostringstream message;
  (message << ... << std::forward<Parts>(parts));
  throw Error(message.str());
}

}  // namespace slm
