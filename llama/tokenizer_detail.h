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
  std::optional<std::string> tokenizer_class;  // e.g. "LlamaTokenizer"
  std::optional<bool> legacy, add_prefix_space;  // LlamaTokenizer's Metaspace settings
  nlohmann::json added_tokens_decoder;            // {"id": {"content": ...}, ...} or null
};
// Reads dir/tokenizer_config.json if it exists (an empty config otherwise).
TokenizerConfig read_tokenizer_config(const std::filesystem::path& dir);

std::unique_ptr<Tokenizer> make_sentencepiece(const std::filesystem::path& model_path,
                                              TokenizerConfig config);

// The two BPE flavours of tokenizer.json that make_bpe loads: byte-level (a ByteLevel
// pre-tokenizer, alone or in a Sequence) and sentencepiece-style (pieces with "▁" for space:
// byte_fallback, a Metaspace pre-tokenizer or a Prepend normalizer). nullopt for anything else
// (model.type other than "BPE", or a shape we do not recognise).
enum class BpeKind { kByteLevel, kSentencePiece };
std::optional<BpeKind> bpe_kind(const nlohmann::json& tokenizer_json);
// contents is what is hashed into the fingerprint (the file, or the converted model and config).
std::unique_ptr<Tokenizer> make_bpe(const std::filesystem::path& json_path, const std::string& contents,
                                    const nlohmann::json& tokenizer_json, TokenizerConfig config);

// Whether tokenizer_config.json names LlamaTokenizer (or its Fast / CodeLlama variants), whose
// constructor in transformers 5 replaces the normalizer, pre-tokenizer and decoder.
bool is_llama_tokenizer_class(const TokenizerConfig& config);
// Rewrites a sentencepiece-style tokenizer.json as LlamaTokenizer.__init__ rebuilds it: no
// normalizer; Metaspace("▁", prepend_scheme: "first", or "always" with legacy=true, or "never"
// with add_prefix_space=false; split=false); model fuse_unk + byte_fallback without unk_token;
// decoder Replace("▁", " "), ByteFallback, Fuse, and Strip(1 leading space) unless
// add_prefix_space=false. Vocabulary, merges, added tokens and post-processor are kept.
void apply_llama_tokenizer(nlohmann::json& tokenizer_json, const TokenizerConfig& config);
// tokenizer.model (its bytes in contents) converted as transformers 5 converts it for
// LlamaTokenizer: vocabulary in piece order, merges generated from it, control pieces (and unk) as
// special added tokens, user-defined pieces as added tokens, BOS/EOS template from
// add_bos_token (default false there) / add_eos_token, then apply_llama_tokenizer. The
// unk/bos/eos tokens it settles on (LlamaTokenizer's defaults when unset) are written to config.
nlohmann::json sentencepiece_to_tokenizer_json(const std::filesystem::path& model_path, const std::string& contents,
                                               TokenizerConfig& config);

}  // namespace mlr::tokenizer_detail
