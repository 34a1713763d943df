#include <slm/error.h>
#include <slm/model.h>

#include <omp.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace slm {

void set_num_threads(int threads) {
  if (threads < 1 || threads > 1024) fail("--threads must be between 1 and 1024, got ", threads);
  omp_set_num_threads(threads);
}

int num_threads() { return omp_get_max_threads(); }

namespace {

// Per CPU of the machine, from /proc/stat: clock ticks spent busy and in
// all since boot.
struct CpuTicks {
  uint64_t busy = 0, total = 0;
};

std::optional<std::vector<CpuTicks>> read_cpu_ticks() {
  std::ifstream stat("/proc/stat");
  std::vector<CpuTicks> cpus;
  for (std::string line; std::getline(stat, line);) {
    if (line.rfind("cpu", 0) != 0 || line.size() < 4 || !std::isdigit(static_cast<unsigned char>(line[3]))) continue;
    std::istringstream fields(line);
    std::string name;
    uint64_t user, nice, system, idle, iowait, irq, softirq, steal;
    if (!(fields >> name >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal)) return std::nullopt;
    const uint64_t busy = user + nice + system + irq + softirq + steal;
    cpus.push_back({busy, busy + idle + iowait});
  }
  if (cpus.empty()) return std::nullopt;
  return cpus;
}

// Clock ticks this process (every thread of it) has run: its idle OpenMP
// workers may still be spinning, and they are no other process.
uint64_t own_ticks() {
  std::ifstream stat("/proc/self/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const size_t name_end = text.rfind(')');
  if (name_end == std::string::npos) return 0;
  std::istringstream fields(text.substr(name_end + 2));
  std::string field;
  uint64_t utime = 0, stime = 0;
  // After the name: state is field 3 of the file; utime and stime are 14 and 15.
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return utime + stime;
}

}  // namespace

int idle_cores() {
  const int cores = omp_get_num_procs();
  // CPUs of the machine that something other than this process keeps busy:
  // over each of three 40 ms windows, those busy more than half the time,
  // less the CPUs this process itself used (its idle OpenMP workers may
  // still spin); the median window, so that a process merely starting
  // beside this one (the other end of a pipe) does not count. A process
  // running flat out shows as one busy core. Without /proc/stat (not
  // Linux), every core.
  std::vector<int> busy_cores;
  auto before = read_cpu_ticks();
  uint64_t own_before = own_ticks();
  for (int window = 0; window < 3; ++window) {
    std::this_thread::sleep_for(std::chrono::milliseconds(40));
    const auto after = read_cpu_ticks();
    const uint64_t own_after = own_ticks();
    if (!before || !after || after->size() != before->size()) return cores;
    int busy = 0;
    uint64_t ticks_per_cpu = 0;
    for (size_t c = 0; c < after->size(); ++c) {
      const uint64_t total = (*after)[c].total - (*before)[c].total, used = (*after)[c].busy - (*before)[c].busy;
      busy += total > 0 && 2 * used > total ? 1 : 0;
      ticks_per_cpu = std::max(ticks_per_cpu, total);
    }
    const int own = ticks_per_cpu > 0 ? static_cast<int>(std::lround(static_cast<double>(own_after - own_before) /
                                                                       static_cast<double>(ticks_per_cpu)))
                                      : 0;
    busy_cores.push_back(std::max(0, busy - own));
    before = after;
    own_before = own_after;
  }
  std::sort(busy_cores.begin(), busy_cores.end());
  return std::clamp(cores - busy_cores[1], 1, cores);
}
}  // namespace slm
