#include <slm/error.h>
#include <slm/model.h>

#include <omp.h>

namespace slm {

void set_num_threads(int threads) {
  if (threads < 1 || threads > 1024) fail("--threads must be between 1 and 1024, got ", threads);
  omp_set_num_threads(threads);
}

int num_threads() { return omp_get_max_threads(); }

}  // namespace slm
