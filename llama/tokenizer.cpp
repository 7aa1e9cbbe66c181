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
  config.legacy = config_bool(j, "legacy", path);
  config.add_prefix_space = config_bool(j, "add_prefix_space", path);
  if (auto it = j.find("tokenizer_class"); it != j.end() && !it->is_null()) {
    MLR_CHECK(it->is_string(), "tokenizer: {}: \"tokenizer_class\" must be a string", path.string());
    config.tokenizer_class = it->get<std::string>();
  }
  if (auto it = j.find("added_tokens_decoder"); it != j.end() && !it->is_null()) {
    MLR_CHECK(it->is_object(), "tokenizer: {}: \"added_tokens_decoder\" must be an object", path.string());
    config.added_tokens_decoder = *it;
  }
  return config;
}

}  // namespace tokenizer_detail

TokenizerBackend parse_tokenizer_backend(std::string_view name) {
  if (name == "transformers") return TokenizerBackend::transformers;
  if (name == "sentencepiece") return TokenizerBackend::sentencepiece;
  throw Error(fmt::format("tokenizer: backend '{}' is not one of: transformers, sentencepiece", name));
}

const char* tokenizer_backend_name(TokenizerBackend backend) {
  return backend == TokenizerBackend::sentencepiece ? "sentencepiece" : "transformers";
}

namespace {

using namespace tokenizer_detail;

// tokenizer.json, as transformers 5 reads it: a sentencepiece-style BPE under tokenizer_class
// LlamaTokenizer is rebuilt by that class; anything else is used as written. Its post-processor
// decides BOS/EOS: from_pretrained drops add_bos_token / add_eos_token whenever a tokenizer.json
// is present.
std::unique_ptr<Tokenizer> load_tokenizer_json(const fs::path& json_path, const std::string& contents,
                                               nlohmann::json j, TokenizerConfig config) {
  config.add_bos_token.reset();
  config.add_eos_token.reset();
  if (bpe_kind(j) == BpeKind::kSentencePiece && is_llama_tokenizer_class(config)) {
    apply_llama_tokenizer(j, config);
    // LlamaTokenizer's default special tokens, where the vocabulary has them.
    const nlohmann::json& vocab = j["model"]["vocab"];
    for (auto [token, fallback] : {std::pair{&config.bos_token, "<s>"}, {&config.eos_token, "</s>"}, {&config.unk_token, "<unk>"}})
      if (!*token && vocab.is_object() && vocab.contains(fallback)) *token = fallback;
  }
  return make_bpe(json_path, contents, j, std::move(config));
}

// tokenizer.model with a tokenizer_config.json naming LlamaTokenizer: transformers' conversion.
// Without that class (or without a config) transformers does not build a LlamaTokenizer, and the
// sentencepiece library's own tokens are kept.
std::unique_ptr<Tokenizer> load_tokenizer_model(const fs::path& model_path, TokenizerConfig config,
                                                TokenizerBackend backend) {
  if (backend == TokenizerBackend::sentencepiece || !is_llama_tokenizer_class(config))
    return make_sentencepiece(model_path, std::move(config));
  const std::string contents = read_file(model_path);
  const nlohmann::json j = sentencepiece_to_tokenizer_json(model_path, contents, config);
  return make_bpe(model_path, contents, j, std::move(config));
}

}  // namespace

// A directory: with the sentencepiece backend, tokenizer.model; otherwise tokenizer.json when it
// holds a BPE we read (byte-level or sentencepiece-style), else tokenizer.model, else
// tokenizer.json anyway so that its error is reported. A file: *.json is read as tokenizer.json,
// anything else as a sentencepiece model. tokenizer_config.json is taken from the same directory.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path_string, TokenizerBackend backend) {
  const fs::path path(path_string);
  std::error_code ec;
  const bool sentencepiece = backend == TokenizerBackend::sentencepiece;
  if (fs::is_directory(path, ec)) {
    const fs::path json_path = path / "tokenizer.json", model_path = path / "tokenizer.model";
    const bool has_json = fs::is_regular_file(json_path, ec), has_model = fs::is_regular_file(model_path, ec);
    MLR_CHECK(has_json || has_model, "tokenizer: {}: directory has neither tokenizer.json nor tokenizer.model",
              path.string());
    MLR_CHECK(has_model || !sentencepiece,
              "tokenizer: {}: the sentencepiece backend needs tokenizer.model, and the directory has none",
              path.string());
    if (has_json && !sentencepiece) {
      const std::string contents = read_file(json_path);
      nlohmann::json j = parse_json(json_path, contents);
      if (!has_model || bpe_kind(j)) return load_tokenizer_json(json_path, contents, std::move(j), read_tokenizer_config(path));
    }
    return load_tokenizer_model(model_path, read_tokenizer_config(path), backend);
  }
  MLR_CHECK(fs::exists(path, ec), "tokenizer: {}: no such file or directory", path.string());
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  if (path.extension() == ".json") {
    MLR_CHECK(!sentencepiece, "tokenizer: {}: the sentencepiece backend needs a tokenizer.model, not a .json file",
              path.string());
    const std::string contents = read_file(path);
    return load_tokenizer_json(path, contents, parse_json(path, contents), read_tokenizer_config(dir));
  }
  return load_tokenizer_model(path, read_tokenizer_config(dir), backend);
}

}  // namespace mlr
