// Read-only file mappings: contents, empty files, errors naming the path, private pages.
#include <doctest/doctest.h>

#include <cstring>

#include "base/mapped_file.h"
#include "tests/test_support.h"

using namespace mlr;
namespace fs = std::filesystem;

TEST_CASE("a mapping holds the file's bytes; an empty file maps to nothing") {
  TempDir dir;
  const std::string bytes = std::string("header\0body", 11);
  const MappedFile m(dir.write("f.bin", bytes), "test");
  REQUIRE(m.size() == bytes.size());
  CHECK(std::string(m.data(), m.size()) == bytes);
  const MappedFile empty(dir.write("empty", ""), "test");
  CHECK(empty.size() == 0);
  CHECK(empty.data() == nullptr);
}

TEST_CASE("copy-on-write pages take writes without touching the file") {
  TempDir dir;
  const fs::path p = dir.write("f.bin", "abcdef");
  {
    const MappedFile m(p, "test", MappedFile::Pages::copy_on_write);
    std::memcpy(m.mutable_data(), "XY", 2);
    CHECK(std::string(m.data(), 6) == "XYcdef");
  }
  std::ifstream in(p, std::ios::binary);
  CHECK(std::string(std::istreambuf_iterator<char>(in), {}) == "abcdef");
}

TEST_CASE("mapping errors start with the context and name the path") {
  TempDir dir;
  CHECK_ERROR_CONTAINS(MappedFile(dir.path / "missing.bin", "safetensors"),
                       "safetensors: cannot open " + (dir.path / "missing.bin").string() + ": No such file or directory");
  CHECK_ERROR_CONTAINS(MappedFile(dir.path, "data: cache"), "data: cache: " + dir.path.string() + " is not a regular file");
}
