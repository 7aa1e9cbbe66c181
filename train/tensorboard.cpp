// TensorBoard event files: TFRecord framing, CRC-32C and the few protobuf fields of an Event
// (see tensorboard.h for the layout).
#include "train/tensorboard.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "tensor/error.h"

namespace mlr {

namespace {

// CRC-32C, reflected polynomial 0x82F63B78, byte-at-a-time table.
const std::array<uint32_t, 256>& crc_table() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}

// ---- protobuf wire format: tag = (field << 3) | wire type ----
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void put_fixed(std::string& out, const void* p, size_t n) {  // little-endian hosts (x86-64, aarch64)
  out.append(static_cast<const char*>(p), n);
}

void put_key(std::string& out, int field, int wire) { put_varint(out, (uint64_t(field) << 3) | uint64_t(wire)); }

void put_bytes_field(std::string& out, int field, std::string_view bytes) {
  put_key(out, field, 2);
  put_varint(out, bytes.size());
  out.append(bytes.data(), bytes.size());
}

std::string event_header(double wall_time, int64_t step) {
  std::string e;
  put_key(e, 1, 1);  // wall_time: double
  put_fixed(e, &wall_time, 8);
  put_key(e, 2, 0);  // step: int64 varint
  put_varint(e, static_cast<uint64_t>(step));
  return e;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

uint32_t crc32c(std::string_view bytes) {
  const auto& t = crc_table();
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : bytes) c = t[(c ^ b) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(std::string_view bytes) {
  const uint32_t c = crc32c(bytes);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string tfrecord_frame(std::string_view payload) {
  std::string out;
  const uint64_t n = payload.size();
  std::string len(reinterpret_cast<const char*>(&n), 8);
  const uint32_t len_crc = masked_crc32c(len), data_crc = masked_crc32c(payload);
  out += len;
  out.append(reinterpret_cast<const char*>(&len_crc), 4);
  out.append(payload.data(), payload.size());
  out.append(reinterpret_cast<const char*>(&data_crc), 4);
  return out;
}

std::string scalar_event(double wall_time, int64_t step, const std::vector<std::pair<std::string, float>>& scalars) {
  std::string summary;
  for (const auto& [tag, value] : scalars) {
    std::string v;
    put_bytes_field(v, 1, tag);  // tag
    put_key(v, 2, 5);            // simple_value: float (fixed32)
    put_fixed(v, &value, 4);
    put_bytes_field(summary, 1, v);
  }
  std::string e = event_header(wall_time, step);
  put_bytes_field(e, 5, summary);
  return e;
}

TensorBoardWriter::TensorBoardWriter(const std::string& logdir) {
  std::error_code ec;
  std::filesystem::create_directories(logdir, ec);
  MLR_CHECK(!ec, "tensorboard: cannot create the log directory {}: {}", logdir, ec.message());
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  const auto seconds = static_cast<long long>(now_seconds());
  path_ = (std::filesystem::path(logdir) / fmt::format("events.out.tfevents.{}.{}", seconds, host)).string();
  file_ = std::fopen(path_.c_str(), "ab");
  MLR_CHECK(file_ != nullptr, "tensorboard: cannot open {} for writing: {}", path_, std::strerror(errno));
  std::string first = event_header(now_seconds(), 0);
  put_bytes_field(first, 3, "brain.Event:2");  // file_version
  write_record(first);
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_) std::fclose(file_);
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  add_scalars({{tag, static_cast<float>(value)}}, step);
}

void TensorBoardWriter::add_scalars(const std::vector<std::pair<std::string, float>>& scalars, int64_t step) {
  write_record(scalar_event(now_seconds(), step, scalars));
}

void TensorBoardWriter::write_record(const std::string& payload) {
  const std::string framed = tfrecord_frame(payload);
  MLR_CHECK(std::fwrite(framed.data(), 1, framed.size(), file_) == framed.size() && std::fflush(file_) == 0,
            "tensorboard: write to {} failed: {}", path_, std::strerror(errno));
}

}  // namespace mlr
