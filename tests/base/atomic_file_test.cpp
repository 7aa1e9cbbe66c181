// Atomic replacement: the new file appears whole or not at all; a failed write (an exception in
// the writer, an errno from the system) leaves the old file and no temporary behind.
#include <doctest/doctest.h>
#include <sys/resource.h>

#include <csignal>
#include <stdexcept>

#include "base/atomic_file.h"
#include "tests/test_support.h"

using namespace mlr;
namespace fs = std::filesystem;

namespace {

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The names in `dir`, so a test can see that no temporary is left.
std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// Lowers the file-size limit of this process for its lifetime, so that writes past it fail with
// EFBIG (SIGXFSZ ignored) whatever the user's permissions.
struct FileSizeLimit {
  rlimit saved{};
  void (*saved_handler)(int) = nullptr;
  explicit FileSizeLimit(rlim_t bytes) {
    getrlimit(RLIMIT_FSIZE, &saved);
    saved_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit lower = saved;
    lower.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &lower);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, saved_handler);
  }
};

}  // namespace

TEST_CASE("atomic_write_file replaces the file and leaves no temporary behind") {
  TempDir dir;
  const fs::path f = dir.path / "state.json";
  atomic_write_file(f, "first");
  atomic_write_file(f, "second, longer");
  CHECK(read_all(f) == "second, longer");
  CHECK(entries(dir.path) == std::vector<std::string>{"state.json"});
  CHECK((fs::status(f).permissions() & fs::perms::others_read) != fs::perms::none);
}

TEST_CASE("a writer that throws leaves the old file intact and removes the temporary") {
  TempDir dir;
  const fs::path f = dir.write("config.json", "old contents");
  fs::path temporary;
  CHECK_THROWS_WITH_AS(atomic_write_file(f,
                                         [&](AtomicFile& out) {
                                           temporary = out.temporary_path();
                                           out.write("new cont");
                                           CHECK(fs::exists(temporary));
                                           throw std::runtime_error("writer failed halfway");
                                         }),
                       "writer failed halfway", std::runtime_error);
  CHECK(temporary.parent_path() == dir.path);
  CHECK(!fs::exists(temporary));
  CHECK(read_all(f) == "old contents");
  CHECK(entries(dir.path) == std::vector<std::string>{"config.json"});
}

TEST_CASE("a failing write system call: error names the path and the errno text; old file kept") {
  TempDir dir;
  const fs::path f = dir.write("weights.bin", "old weights");
  const std::string big(1 << 16, 'x');
  {
    const FileSizeLimit limit(4096);
    CHECK_ERROR_CONTAINS(atomic_write_file(f, big), "writing " + f.string() + " failed: File too large");
  }
  CHECK(read_all(f) == "old weights");
  CHECK(entries(dir.path) == std::vector<std::string>{"weights.bin"});
}

TEST_CASE("a directory that cannot hold the temporary: error names the path and the errno text") {
  TempDir dir;
  const fs::path f = dir.path / "missing_dir" / "x.json";
  CHECK_ERROR_CONTAINS(atomic_write_file(f, "x"), f.string());
  CHECK_ERROR_CONTAINS(atomic_write_file(f, "x"), "No such file or directory");
  CHECK(entries(dir.path).empty());
}

TEST_CASE("an uncommitted AtomicFile is discarded; a committed one cannot be written again") {
  TempDir dir;
  const fs::path f = dir.write("a.txt", "kept");
  {
    AtomicFile out(f);
    out.write("discarded");
  }
  CHECK(read_all(f) == "kept");
  CHECK(entries(dir.path) == std::vector<std::string>{"a.txt"});
  AtomicFile out(f);
  out.write("replaced");
  out.commit();
  CHECK(read_all(f) == "replaced");
  CHECK_ERROR_CONTAINS(out.write("more"), "already committed");
}

TEST_CASE("fsync_path syncs files and directories and names a missing path") {
  TempDir dir;
  const fs::path f = dir.write("x", "1");
  fsync_path(f);
  fsync_path(dir.path);
  CHECK_ERROR_CONTAINS(fsync_path(dir.path / "nope"), (dir.path / "nope").string());
}
