// The data section of a run: which tokenizer, which datasets with which templates and mixing,
// how they are packed. Read from YAML (data/README.md documents every key):
//
//   tokenizer: ../models/llama-tokenizer/tokenizer.model   # file or checkpoint directory
//   cache_dir: .cache/mlr-data
//   seed: 1234
//   mixture: {mode: temperature, temperature: 2, rate_limit: 3000, shuffle: true}
//   packing: {seq_len: 2048, batch_rows: 8, packed: true, train_on_prompt: false,
//             truncation: right, drop_overlong: false}
//   datasets:
//     - {name: alpaca, format: alpaca, path: alpaca/alpaca_data_5000_subset.json, eos: true}
//     - {name: boolq, format: boolq, path: boolq/val.jsonl, weight: 2, max_examples: 1000,
//        template: {prompt: "{{passage}}\nQ: {{question}}?\nA:"}}
//
// Relative paths are relative to the YAML file's directory. An unknown key, a value of the wrong
// type or an out-of-range value is an error naming the file, line and key.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "data/cache.h"
#include "data/loader.h"
#include "data/mixture.h"

namespace mlr::data {

struct DataConfig {
  std::string tokenizer;  // path (empty when not given)
  CacheOptions cache;
  MixtureOptions mixture;
  LoaderOptions loader;
  std::vector<DatasetSpec> datasets;
  std::vector<MixtureSource> sources;  // one per dataset (sizes filled in once prepared)
};

// `name` is used in error messages; relative paths resolve against base_dir.
DataConfig parse_data_config(const std::string& yaml_text, const std::string& name, const std::filesystem::path& base_dir);
DataConfig load_data_config(const std::filesystem::path& yaml_file);

// Checks what the parser cannot see alone: at least one dataset, unique names.
void validate_data_config(const DataConfig& config);

}  // namespace mlr::data
