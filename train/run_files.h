// Files of a training run that must survive a crash: checkpoint directories that appear only when
// complete, and the JSONL metrics log. Single files are replaced atomically by atomic_write_file
// (base/atomic_file.h, included here for the trainer).
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/atomic_file.h"

namespace mlr {

// Checkpoints live in <root>/step-<N>/. A checkpoint is written into <root>/.partial-step-<N>/ and
// renamed when complete, so a directory named step-<N> is always whole; leftovers of a killed write
// are removed by the next begin().
class CheckpointDirectory {
 public:
  explicit CheckpointDirectory(std::string root);
  // A fresh, empty staging directory for step `step`; write the checkpoint's files there.
  std::string begin(int64_t step);
  // fsyncs every file of the staging directory, renames it to step-<N> (replacing an older one of
  // the same step) and keeps only the newest `keep_last` checkpoints (0: keep all). Returns the path.
  std::string commit(int64_t step, int keep_last);
  // Steps of the complete checkpoints, ascending.
  std::vector<int64_t> steps() const;
  std::optional<std::string> latest() const;
  std::string path_of(int64_t step) const;

 private:
  std::string root_;
};

// One JSON object per line, flushed per line. Opening in append mode continues a resumed run.
class MetricsLog {
 public:
  MetricsLog(const std::string& path, bool append);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  void write(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// "1.2 GiB", "340.0 MiB": human sizes for logs.
std::string human_bytes(double bytes);
// "1h02m", "3m05s", "12s": durations for ETAs.
std::string human_duration(double seconds);

}  // namespace mlr
