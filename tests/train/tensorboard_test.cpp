// TensorBoard event files: CRC-32C, record framing and the Event encoding, byte for byte against
// what tensorboard's own Python protobuf classes and crc32c produce (the expected bytes below were
// printed by tensorboard 2.x: event_pb2.Event(wall_time=1.5, step=7) with two simple_value scalars).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <cstring>

#include "train/tensorboard.h"

using namespace mlr;

namespace {
std::string hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}
}  // namespace

TEST_CASE("crc32c and its masked form match the reference values") {
  CHECK(crc32c("123456789") == 0xE3069283u);  // the standard CRC-32C check value
  CHECK(crc32c("") == 0u);
  CHECK(masked_crc32c("123456789") == 0xc78ab0e5u);  // tensorboard's masked_crc32c
}

TEST_CASE("a scalar event and its record are byte-identical to tensorboard's") {
  const std::string event = scalar_event(1.5, 7, {{"loss", 2.25f}, {"lr", 0.001f}});
  CHECK(hex(event) == "09000000000000f83f10072a180a0b0a046c6f737315000010400a090a026c72156f12833a");
  CHECK(hex(tfrecord_frame(event)) ==
        "2500000000000000eabc36f309000000000000f83f10072a180a0b0a046c6f737315000010400a090a026c72156f12833a"
        "8355915a");
}

TEST_CASE("TensorBoardWriter writes framed records, the first one carrying the file version") {
  const auto dir = std::filesystem::temp_directory_path() / "mlr_tensorboard_test";
  std::filesystem::remove_all(dir);
  std::string path;
  {
    TensorBoardWriter writer(dir.string());
    writer.add_scalar("train/loss", 1.25, 1);
    writer.add_scalars({{"train/loss", 1.0f}, {"train/lr", 2e-4f}}, 2);
    path = writer.path();
  }
  CHECK(std::filesystem::path(path).filename().string().rfind("events.out.tfevents.", 0) == 0);
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string bytes = ss.str();
  // Walk the records: each length and payload checksum must verify.
  size_t pos = 0;
  int records = 0;
  while (pos < bytes.size()) {
    REQUIRE(pos + 12 <= bytes.size());
    uint64_t n;
    std::memcpy(&n, bytes.data() + pos, 8);
    uint32_t len_crc, data_crc;
    std::memcpy(&len_crc, bytes.data() + pos + 8, 4);
    CHECK(len_crc == masked_crc32c(bytes.substr(pos, 8)));
    REQUIRE(pos + 12 + n + 4 <= bytes.size());
    const std::string payload = bytes.substr(pos + 12, n);
    std::memcpy(&data_crc, bytes.data() + pos + 12 + n, 4);
    CHECK(data_crc == masked_crc32c(payload));
    if (records == 0) CHECK(payload.find("brain.Event:2") != std::string::npos);
    if (records == 2) CHECK(payload.find("train/lr") != std::string::npos);
    pos += 12 + n + 4;
    ++records;
  }
  CHECK(records == 3);
  std::filesystem::remove_all(dir);
}
