// load_tokenizer and the helpers shared by both tokenizer kinds (llama/tokenizer_detail.h).
#include "llama/tokenizer.h"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "llama/tokenizer_detail.h"
#include "tensor/error.h"

namespace mlr {

namespace fs = std::filesystem;

namespace tokenizer_detail {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  MLR_CHECK(in.good(), "tokenizer: {}: cannot open file", path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  MLR_CHECK(!in.bad(), "tokenizer: {}: read error", path.string());
  return std::move(ss).str();
}

nlohmann::json parse_json(const fs::path& path, const std::string& contents) {
  try {
    return nlohmann::json::parse(contents);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(fmt::format("tokenizer: {}: invalid JSON at byte {}: {}", path.string(), e.byte, e.what()));
  // A number too large for a double ("1e999") is not a parse_error but out_of_range.
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("tokenizer: {}: invalid JSON: {}", path.string(), e.what()));
  }
}

uint64_t fnv1a64(std::string_view data, uint64_t hash) {
  for (char c : data) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 0x100000001b3ull;
  }
  return hash;
}

std::string make_fingerprint(std::string_view kind, uint64_t hash) {
  return fmt::format("{}-{:016x}", kind, hash);
}

namespace {

// A special token in tokenizer_config.json is a string, an AddedToken object {"content": ...},
// or null (no such token).
std::optional<std::string> config_token(const nlohmann::json& j, const char* key, const fs::path& path) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  throw Error(fmt::format("tokenizer: {}: \"{}\" must be a string, an object with \"content\" or null",
                          path.string(), key));
}

std::optional<bool> config_bool(const nlohmann::json& j, const char* key, const fs::path& path) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  MLR_CHECK(it->is_boolean(), "tokenizer: {}: \"{}\" must be true or false", path.string(), key);
  return it->get<bool>();
}

}  // namespace

TokenizerConfig read_tokenizer_config(const fs::path& dir) {
  TokenizerConfig config;
  const fs::path path = dir / "tokenizer_config.json";
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return config;
  config.path = path;
  config.contents = read_file(path);
  const nlohmann::json j = parse_json(path, config.contents);
  MLR_CHECK(j.is_object(), "tokenizer: {}: expected a JSON object at the top level", path.string());
  config.add_bos_token = config_bool(j, "add_bos_token", path);
  config.add_eos_token = config_bool(j, "add_eos_token", path);
  config.bos_token = config_token(j, "bos_token", path);
  config.eos_token = config_token(j, "eos_token", path);
  config.pad_token = config_token(j, "pad_token", path);
  config.unk_token = config_token(j, "unk_token", path);
  return config;
}

}  // namespace tokenizer_detail

// A directory: tokenizer.json when it holds a byte-level BPE, else tokenizer.model (the
// sentencepiece model; LLaMA-2-style checkpoints ship both, and their tokenizer.json is a
// sentencepiece-style BPE we do not read), else tokenizer.json anyway so that its error is
// reported. A file: *.json is read as tokenizer.json, anything else as a sentencepiece model.
// tokenizer_config.json is taken from the same directory.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path_string) {
  using namespace tokenizer_detail;
  const fs::path path(path_string);
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path json_path = path / "tokenizer.json", model_path = path / "tokenizer.model";
    const bool has_json = fs::is_regular_file(json_path, ec), has_model = fs::is_regular_file(model_path, ec);
    MLR_CHECK(has_json || has_model, "tokenizer: {}: directory has neither tokenizer.json nor tokenizer.model",
              path.string());
    if (has_json) {
      std::string contents = read_file(json_path);
      nlohmann::json j = parse_json(json_path, contents);
      if (is_byte_level_bpe(j) || !has_model)
        return make_byte_level_bpe(json_path, contents, j, read_tokenizer_config(path));
    }
    return make_sentencepiece(model_path, read_tokenizer_config(path));
  }
  MLR_CHECK(fs::exists(path, ec), "tokenizer: {}: no such file or directory", path.string());
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  if (path.extension() == ".json") {
    std::string contents = read_file(path);
    nlohmann::json j = parse_json(path, contents);
    return make_byte_level_bpe(path, contents, j, read_tokenizer_config(dir));
  }
  return make_sentencepiece(path, read_tokenizer_config(dir));
}

}  // namespace mlr
