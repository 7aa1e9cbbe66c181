// Crash-safe files of a training run (see run_files.h).
#include "train/run_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "tensor/error.h"

namespace fs = std::filesystem;

namespace mlr {

CheckpointDirectory::CheckpointDirectory(std::string root) : root_(std::move(root)) {
  std::error_code ec;
  fs::create_directories(root_, ec);
  MLR_CHECK(!ec, "cannot create the checkpoint directory {}: {}", root_, ec.message());
}

std::string CheckpointDirectory::path_of(int64_t step) const {
  return (fs::path(root_) / fmt::format("step-{}", step)).string();
}

std::string CheckpointDirectory::begin(int64_t step) {
  // Leftovers of checkpoints whose write was interrupted.
  for (const auto& entry : fs::directory_iterator(root_))
    if (entry.path().filename().string().rfind(".partial-step-", 0) == 0) fs::remove_all(entry.path());
  const std::string staging = (fs::path(root_) / fmt::format(".partial-step-{}", step)).string();
  fs::create_directories(staging);
  return staging;
}

std::string CheckpointDirectory::commit(int64_t step, int keep_last) {
  const std::string staging = (fs::path(root_) / fmt::format(".partial-step-{}", step)).string();
  MLR_CHECK(fs::is_directory(staging), "checkpoint commit: no staging directory {} (call begin first)", staging);
  for (const auto& entry : fs::recursive_directory_iterator(staging))
    if (entry.is_regular_file()) fsync_path(entry.path().string());
  fsync_path(staging);
  const std::string final_path = path_of(step);
  if (fs::exists(final_path)) fs::remove_all(final_path);
  fs::rename(staging, final_path);
  fsync_path(root_);
  if (keep_last > 0) {
    std::vector<int64_t> all = steps();
    for (size_t i = 0; i + static_cast<size_t>(keep_last) < all.size(); ++i) fs::remove_all(path_of(all[i]));
  }
  return final_path;
}

std::vector<int64_t> CheckpointDirectory::steps() const {
  std::vector<int64_t> out;
  for (const auto& entry : fs::directory_iterator(root_)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.rfind("step-", 0) != 0) continue;
    const std::string digits = name.substr(5);
    if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) continue;
    out.push_back(std::stoll(digits));
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<std::string> CheckpointDirectory::latest() const {
  const std::vector<int64_t> all = steps();
  if (all.empty()) return std::nullopt;
  return path_of(all.back());
}

MetricsLog::MetricsLog(const std::string& path, bool append) : path_(path) {
  const fs::path p(path);
  if (p.has_parent_path()) fs::create_directories(p.parent_path());
  file_ = std::fopen(path.c_str(), append ? "ab" : "wb");
  MLR_CHECK(file_ != nullptr, "cannot open the metrics log {}: {}", path, std::strerror(errno));
}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

void MetricsLog::write(const nlohmann::json& record) {
  const std::string line = record.dump() + "\n";
  MLR_CHECK(std::fwrite(line.data(), 1, line.size(), file_) == line.size() && std::fflush(file_) == 0,
            "write to the metrics log {} failed: {}", path_, std::strerror(errno));
}

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 4) {
    bytes /= 1024.0;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.1f} {}", bytes, units[u]);
}

std::string human_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

}  // namespace mlr
