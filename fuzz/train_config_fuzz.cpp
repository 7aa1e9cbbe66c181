// The run configuration in YAML (train/config.cpp), with command-line overrides: the lines after a
// line "#overrides" are "a.b=value" assignments. A configuration that parses is written back with
// to_yaml (as mlr-train records it in the run directory) and must parse again to the same YAML.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "data/config.h"
#include "fuzz/fuzz_support.h"
#include "train/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mlr;
  std::string text(fuzz::as_text(data, size));
  std::vector<std::string> overrides;
  const std::string marker = "#overrides\n";
  if (const size_t at = text.find(marker); at != std::string::npos) {
    std::string rest = text.substr(at + marker.size());
    text.resize(at);
    for (size_t begin = 0; begin <= rest.size();) {
      size_t end = rest.find('\n', begin);
      if (end == std::string::npos) end = rest.size();
      if (end > begin) overrides.push_back(rest.substr(begin, end - begin));
      begin = end + 1;
    }
  }
  std::optional<TrainConfig> config;
  fuzz::expect_clean_rejection([&] { config = parse_train_config(text, "run.yaml", overrides, "/fuzz/configs"); });
  if (!config) return 0;
  // What to_yaml writes is the program's own output: reading it back must succeed (an mlr::Error
  // here escapes and fails the run) and give the same configuration.
  const std::string written = to_yaml(*config);
  const std::string again = to_yaml(parse_train_config(written, "written.yaml", {}, "/fuzz/configs"));
  if (again != written) {
    std::fprintf(stderr, "to_yaml is not a fixed point:\n--- first\n%s\n--- second\n%s\n", written.c_str(),
                 again.c_str());
    std::abort();
  }
  if (!config->data_yaml.empty()) {
    fuzz::expect_clean_rejection([&] { (void)data::parse_data_config(config->data_yaml, "run.yaml:data", "/fuzz"); });
  }
  return 0;
}
