// Internals shared by the tokenizer implementations (not part of the public API): file reading,
// JSON parsing with errors that name the file, the content hash behind fingerprint(), and
// tokenizer_config.json.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "llama/tokenizer.h"

namespace mlr::tokenizer_detail {

// Whole file as bytes; mlr::Error naming the path when it cannot be read.
std::string read_file(const std::filesystem::path& path);

// Parses contents (read from path); a syntax error becomes an mlr::Error with the path and the
// byte position.
nlohmann::json parse_json(const std::filesystem::path& path, const std::string& contents);

// FNV-1a, 64 bit: fnv1a64(b, fnv1a64(a)) hashes a then b.
inline constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ull;
uint64_t fnv1a64(std::string_view data, uint64_t hash = kFnvOffset);
// "<kind>-<16 hex digits>"
std::string make_fingerprint(std::string_view kind, uint64_t hash);

// The parts of a Hugging Face tokenizer_config.json that change encoding. Absent keys stay
// unset; a token given as null is unset too.
struct TokenizerConfig {
  std::filesystem::path path;  // empty when there is no file
  std::string contents;        // raw bytes, hashed into the fingerprint
  std::optional<bool> add_bos_token, add_eos_token;
  std::optional<std::string> bos_token, eos_token, pad_token, unk_token;
};
// Reads dir/tokenizer_config.json if it exists (an empty config otherwise).
TokenizerConfig read_tokenizer_config(const std::filesystem::path& dir);

std::unique_ptr<Tokenizer> make_sentencepiece(const std::filesystem::path& model_path,
                                              TokenizerConfig config);

// True when the parsed tokenizer.json describes a byte-level BPE (model.type "BPE" and a
// ByteLevel pre-tokenizer, alone or in a Sequence), i.e. one make_byte_level_bpe can load.
bool is_byte_level_bpe(const nlohmann::json& tokenizer_json);
std::unique_ptr<Tokenizer> make_byte_level_bpe(const std::filesystem::path& json_path,
                                               const std::string& contents,
                                               const nlohmann::json& tokenizer_json,
                                               TokenizerConfig config);

}  // namespace mlr::tokenizer_detail
