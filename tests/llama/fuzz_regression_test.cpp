// Inputs the fuzz targets (fuzz/) found to escape the loaders' error handling, kept as tests.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>

#include "llama/config.h"
#include "llama/safetensors.h"
#include "llama/tokenizer.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;

// fuzz_tokenizer_model: a sentencepiece model with a zero-length piece made libsentencepiece's trie
// builder throw its own exception type (Darts::Details::Exception) through load_tokenizer.
TEST_CASE("tokenizer: a sentencepiece model with an empty piece is an error naming the file") {
  const fs::path model = fs::path(MLR_SOURCE_DIR) / "tests" / "fixtures" / "tokenizer" / "empty_piece.model";
  CHECK_ERROR_CONTAINS(mlr::load_tokenizer(model.string()), "empty_piece.model: not a valid sentencepiece model");
}

// fuzz_safetensors, fuzz_safetensors_index, fuzz_llama_config, fuzz_tokenizer_config: nlohmann::json
// throws out_of_range, not parse_error, for a number too large for a double; it escaped every
// loader's error handling. The numbers are the ones the fuzzer found.
TEST_CASE("loaders: a number too large for a double is an error naming the file") {
  TempDir tmp;
  const std::string header = R"({"w":{"dtype":"F32","shape":[188888888888E88888888888888],"data_offsets":[0,4]}})";
  std::string file(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(file.data(), &n, 8);
  file += header + std::string(4, '\0');
  CHECK_ERROR_CONTAINS(mlr::SafetensorsFile::open(tmp.write("w.safetensors", file).string()),
                       "w.safetensors: header JSON is invalid: [json.exception.out_of_range.406] number overflow");

  tmp.write("ckpt/model.safetensors.index.json", R"({"metadata": {"total_size": 3095e779814779813095}, "weight_map": {}})");
  CHECK_ERROR_CONTAINS(mlr::Checkpoint::open((tmp.path / "ckpt").string()),
                       "model.safetensors.index.json: invalid JSON: [json.exception.out_of_range.406]");

  CHECK_ERROR_CONTAINS(mlr::LlamaConfig::load(tmp.write("config.json", R"({"rope_theta": 9000000E000000000002000000000000})").string()),
                       "config.json: invalid JSON: [json.exception.out_of_range.406]");

  tmp.write("tok/tokenizer.json", R"({"model": {"type": "BPE", "dropout": 88E8888}})");
  CHECK_ERROR_CONTAINS(mlr::load_tokenizer((tmp.path / "tok").string()),
                       "tokenizer.json: invalid JSON: [json.exception.out_of_range.406]");
}

TEST_CASE("safetensors index: a shard name the file system refuses is an error, not an exception") {
  // Found by fuzz/safetensors_index_fuzz.cpp: a 600-character shard name made std::filesystem::exists
  // throw filesystem_error (ENAMETOOLONG), which escaped the loader.
  TempDir tmp;
  const std::string shard(600, 'n');
  tmp.write("ckpt/model.safetensors.index.json", R"({"weight_map": {"w": ")" + shard + R"("}})");
  CHECK_ERROR_CONTAINS(mlr::Checkpoint::open((tmp.path / "ckpt").string()), "cannot be looked up");
}
