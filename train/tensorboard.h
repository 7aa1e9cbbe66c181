// TensorBoard event files written by us (no TensorFlow, no protobuf library): scalars as
// Summary.Value.simple_value in Event records, framed as TFRecords, readable by `tensorboard
// --logdir` and by tensorboard's Python event reader.
//
// TFRecord framing of one record of n bytes:
//   uint64 n (little-endian) | uint32 masked_crc32c(bytes of n) | n bytes | uint32 masked_crc32c(bytes)
//   masked_crc32c(x) = ((c >> 15) | (c << 17)) + 0xa282ead8,  c = CRC-32C (Castagnoli) of x
// Event protobuf fields used: wall_time = 1 (double), step = 2 (int64), file_version = 3 (string,
// "brain.Event:2" in the first record), summary = 5 (Summary { repeated Value value = 1 },
// Value { string tag = 1; float simple_value = 2 }).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mlr {

uint32_t crc32c(std::string_view bytes);
uint32_t masked_crc32c(std::string_view bytes);

// One framed record (exposed for tests and readers).
std::string tfrecord_frame(std::string_view payload);

// The serialised Event holding `scalars` (tag, value) at `step`.
std::string scalar_event(double wall_time, int64_t step, const std::vector<std::pair<std::string, float>>& scalars);

// Writes events.out.tfevents.<unix seconds>.<host> in `logdir` (created if missing). Every add
// flushes, so a killed run loses nothing already logged.
class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::string& logdir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  void add_scalar(const std::string& tag, double value, int64_t step);
  void add_scalars(const std::vector<std::pair<std::string, float>>& scalars, int64_t step);
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& payload);
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace mlr
