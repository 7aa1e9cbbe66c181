// Crash-safe run files: atomic replacement, checkpoint directories that exist only when complete,
// rotation of old checkpoints, the JSONL log.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "train/run_files.h"

using namespace mlr;
namespace fs = std::filesystem;

namespace {
std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
fs::path fresh_dir(const char* name) {
  const fs::path d = fs::temp_directory_path() / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}
}  // namespace

TEST_CASE("checkpoint directories: staged, committed, rotated; interrupted writes are invisible") {
  const fs::path d = fresh_dir("mlr_ckpt_test");
  CheckpointDirectory ckpt(d.string());
  CHECK(!ckpt.latest().has_value());
  for (int64_t step : {10, 20, 30}) {
    const std::string staging = ckpt.begin(step);
    std::ofstream(fs::path(staging) / "weights.bin") << "step " << step;
    ckpt.commit(step, /*keep_last=*/2);
  }
  CHECK(ckpt.steps() == std::vector<int64_t>{20, 30});
  CHECK(read_all(fs::path(*ckpt.latest()) / "weights.bin") == "step 30");
  // A write killed before commit: the staging directory is not a checkpoint, and the next begin()
  // clears it.
  const std::string staging = ckpt.begin(40);
  std::ofstream(fs::path(staging) / "weights.bin") << "partial";
  CHECK(ckpt.steps() == std::vector<int64_t>{20, 30});
  ckpt.begin(40);
  CHECK(!fs::exists(fs::path(staging) / "weights.bin"));
  CHECK_THROWS_WITH_AS(ckpt.commit(50, 2), doctest::Contains("no staging directory"), std::exception);
  fs::remove_all(d);
}

TEST_CASE("metrics log appends one JSON object per line") {
  const fs::path d = fresh_dir("mlr_metrics_test");
  const fs::path f = d / "metrics.jsonl";
  {
    MetricsLog log(f.string(), false);
    log.write({{"step", 1}, {"loss", 2.5}});
  }
  {
    MetricsLog log(f.string(), true);  // a resumed run continues the file
    log.write({{"step", 2}, {"loss", 2.0}});
  }
  CHECK(read_all(f) == "{\"loss\":2.5,\"step\":1}\n{\"loss\":2.0,\"step\":2}\n");
  fs::remove_all(d);
}

TEST_CASE("human sizes and durations") {
  CHECK(human_bytes(512) == "512 B");
  CHECK(human_bytes(1536) == "1.5 KiB");
  CHECK(human_bytes(3.0 * (1 << 30)) == "3.0 GiB");
  CHECK(human_duration(12.4) == "12s");
  CHECK(human_duration(185) == "3m05s");
  CHECK(human_duration(3725) == "1h02m");
}
