// write_file_atomically and link_file_atomically: readers see the old file or
// the whole new one, and no temporary file is ever left behind.
#include "core/atomic_file.h"
#include "core/mapped_file.h"

#include <slm/error.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <unistd.h>

namespace fs = std::filesystem;

namespace {

class AtomicFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("slm_atomic_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
  }
  // Every entry of the folder other than `keep`.
  std::vector<std::string> others(const std::string& keep) const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) {
      if (e.path().filename() != keep) out.push_back(e.path().filename().string());
    }
    return out;
  }

  fs::path dir_;
};

TEST_F(AtomicFile, WritesNewFileAndLeavesNoTemporary) {
  const fs::path target = dir_ / "out.bin";
  const std::string payload("binary\0data\n", 12);
  slm::write_file_atomically(target, [&](std::ostream& out) { out.write(payload.data(), 12); });
  EXPECT_EQ(read(target), payload);
  EXPECT_TRUE(others("out.bin").empty());
}

TEST_F(AtomicFile, ReplacesExistingFile) {
  const fs::path target = dir_ / "config.json";
  slm::write_text_atomically(target, "old contents that are longer");
  slm::write_text_atomically(target, "new");
  EXPECT_EQ(read(target), "new");
  EXPECT_TRUE(others("config.json").empty());
}

// A training run publishes its checkpoint's result this way: the next
// checkpoint replaces the source files by rename, never in place, so the
// published name keeps what it was linked to.
TEST_F(AtomicFile, LinkReplacesTheTargetWithTheSourcesContent) {
  const fs::path source = dir_ / "source", target = dir_ / "target";
  slm::write_text_atomically(source, "checkpoint of step 10");
  slm::write_text_atomically(target, "an older result");
  slm::link_file_atomically(source, target);
  EXPECT_EQ(read(target), "checkpoint of step 10");
  EXPECT_TRUE(fs::equivalent(source, target)) << "a hard link, not a second copy";
  slm::write_text_atomically(source, "checkpoint of step 20");
  EXPECT_EQ(read(target), "checkpoint of step 10");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 2);
  try {
    slm::link_file_atomically(dir_ / "missing", target);
    FAIL() << "expected slm::Error";
  } catch (const slm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read(target), "checkpoint of step 10");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 2);
}

TEST_F(AtomicFile, ThrowingWriterKeepsOldFileAndRemovesTemporary) {
  const fs::path target = dir_ / "model.safetensors";
  slm::write_text_atomically(target, "the old file");
  EXPECT_THROW(slm::write_file_atomically(target,
                                          [](std::ostream& out) {
                                            out << "half of the new";
                                            throw std::runtime_error("interrupted");
                                          }),
               std::runtime_error);
  EXPECT_EQ(read(target), "the old file");
  EXPECT_TRUE(others("model.safetensors").empty()) << others("model.safetensors").front();
}

TEST_F(AtomicFile, ThrowingWriterWithNoOldFileLeavesNothing) {
  const fs::path target = dir_ / "fresh.json";
  EXPECT_THROW(slm::write_file_atomically(target, [](std::ostream&) { throw slm::Error("stop"); }), slm::Error);
  EXPECT_FALSE(fs::exists(target));
  EXPECT_TRUE(others("").empty());
}

// Ctrl-C or a kill in the middle of a write (slm create on a big model):
// the process dies by the signal as usual, the old file is intact and no
// temporary file is left behind.
TEST_F(AtomicFile, SignalDuringWriteLeavesNoTemporary) {
  const fs::path target = dir_ / "model.safetensors";
  slm::write_text_atomically(target, "the old file");
  for (const int signal_number : {SIGINT, SIGTERM, SIGHUP}) {
    EXPECT_EXIT(
        {
          slm::write_file_atomically(target, [&](std::ostream& out) {
            out << std::string(1 << 20, 'x');
            out.flush();
            std::raise(signal_number);
          });
          std::exit(0);
        },
        ::testing::KilledBySignal(signal_number), "")
        << "signal " << signal_number;
    EXPECT_EQ(read(target), "the old file");
    EXPECT_TRUE(others("model.safetensors").empty()) << others("model.safetensors").front();
  }
}

TEST_F(AtomicFile, UnwritableFolderIsAnErrorNamingThePath) {
  const fs::path target = dir_ / "missing" / "sub" / "file.txt";
  try {
    slm::write_text_atomically(target, "x");
    FAIL() << "expected slm::Error";
  } catch (const slm::Error& e) {
    EXPECT_NE(std::string(e.what()).find(target.string()), std::string::npos) << e.what();
  }
}

TEST_F(AtomicFile, ReadersOfTheOldMappingKeepTheOldBytes) {
  // A model mapped for reading while `slm create` rewrites its folder must not
  // see torn data: rename replaces the directory entry, not the inode.
  const fs::path target = dir_ / "weights";
  slm::write_text_atomically(target, "AAAAAAAA");
  const auto mapping = slm::MappedFile::open(target);
  slm::write_text_atomically(target, "BBBBBBBB");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(mapping->data()), mapping->size()), "AAAAAAAA");
  EXPECT_EQ(read(target), "BBBBBBBB");
}

TEST_F(AtomicFile, MappedFileErrorsNameThePath) {
  try {
    slm::MappedFile::open(dir_ / "nope.safetensors");
    FAIL();
  } catch (const slm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("nope.safetensors"), std::string::npos) << e.what();
  }
  try {
    slm::MappedFile::open(dir_);
    FAIL();
  } catch (const slm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
  }
  // An empty file maps to nothing without failing.
  slm::write_text_atomically(dir_ / "empty", "");
  EXPECT_EQ(slm::MappedFile::open(dir_ / "empty")->size(), 0u);
}

// Resident pages of this process, from /proc/self/statm.
long resident_pages() {
  std::ifstream statm("/proc/self/statm");
  long size = 0, resident = 0;
  statm >> size >> resident;
  return resident;
}

TEST_F(AtomicFile, ReleasedPagesLeaveTheResidentSetAndReadBackUnchanged) {
  const size_t bytes = size_t{32} << 20;
  std::string content(bytes, '\0');
  for (size_t i = 0; i < bytes; ++i) content[i] = static_cast<char>(i * 131 % 251);
  slm::write_text_atomically(dir_ / "weights", content);
  const auto mapping = slm::MappedFile::open(dir_ / "weights");
  const auto checksum = [&] {
    uint64_t sum = 0;
    for (size_t i = 0; i < mapping->size(); i += 61) sum += mapping->data()[i] * (i % 7 + 1);
    return sum;
  };
  const uint64_t before = checksum();  // every page touched
  const long touched = resident_pages();
  mapping->release(mapping->data(), mapping->size());
  const long page_kib = ::sysconf(_SC_PAGESIZE) / 1024;
  EXPECT_GT((touched - resident_pages()) * page_kib, 24 * 1024) << "at least 24 of the 32 MiB released";
  EXPECT_EQ(checksum(), before);
  // A range outside the mapping is ignored, not an error.
  mapping->release(content.data(), 4096);
  EXPECT_TRUE(mapping->holds(mapping->data() + 10, 20));
  EXPECT_FALSE(mapping->holds(mapping->data() + 10, bytes));
}

}  // namespace
