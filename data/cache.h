// The tokenised-example cache: one directory per dataset, holding zstd-compressed shards and an
// index. The directory name carries a key hashed from everything the tokens depend on: the
// source files' names, sizes and contents, the format, the template, the tokenizer's fingerprint,
// the resolved BOS/EOS settings and skip_bad. Any change gives a new key, hence a fresh build;
// an unchanged dataset is loaded from its shards (memory-mapped, decompressed) without
// re-tokenising. Layout:
//
//   <cache_dir>/<dataset>-<key>/index.json        counts, shard list, bad-row report, the key text
//   <cache_dir>/<dataset>-<key>/shard-00000.zst   one zstd frame: header "MLRDSH01", u64 examples,
//                                                 u64 tokens, then u32 length[n], u32 file[n],
//                                                 u32 line[n], i32 ids[tokens], u8 mask[tokens]
//
// A build tokenises shards in parallel (threads), writes them into a temporary directory and
// renames it into place, so a reader never sees a half-written cache and concurrent builders (two
// ranks) agree. A cache that fails validation (a truncated or corrupt shard, an index that does
// not match) is an error naming the file; CacheOptions::rebuild rebuilds it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "data/readers.h"
#include "data/template.h"
#include "data/tokenize.h"

namespace mlr::data {

struct DatasetSpec {
  std::string name;
  Format format = Format::alpaca;
  std::filesystem::path path;  // a file, or a directory of files (data/readers.h)
  Template tmpl;
  TokenizeOptions tokenize;
  bool skip_bad = false;
};

struct CacheOptions {
  std::filesystem::path dir = ".cache/mlr-data";
  int threads = 0;      // 0: all hardware threads
  int zstd_level = 3;
  bool rebuild = false;  // tokenise again even when a valid cache exists
  // The longest row the cache will feed (the packer's seq_len); 0: unbounded. Bounds the work on
  // huge texts (tokenize_example's max_row_tokens). A cache built with windowed examples serves
  // rows up to its bound; asked for longer rows (or unbounded), it is rebuilt.
  int64_t max_row_tokens = 0;
};

// How a dataset was obtained, for reports and tests.
struct PrepareInfo {
  bool from_cache = false;     // loaded from existing shards, nothing tokenised
  int64_t tokenized = 0;       // examples tokenised by this call
  int64_t shards_mapped = 0;   // shard files memory-mapped by this call
  std::filesystem::path cache_dir;
  std::string key;
  double seconds = 0;
  std::string note;            // e.g. why an existing cache was rebuilt
};

// All tokenised examples of one dataset, in source order, held in memory.
class TokenizedDataset {
 public:
  const DatasetSpec& spec() const { return spec_; }
  const std::string& name() const { return spec_.name; }
  int64_t size() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  int64_t num_tokens() const { return static_cast<int64_t>(ids_.size()); }
  int32_t length(int64_t i) const { return static_cast<int32_t>(offsets_[i + 1] - offsets_[i]); }
  std::span<const int32_t> ids(int64_t i) const { return {ids_.data() + offsets_[i], static_cast<size_t>(length(i))}; }
  std::span<const uint8_t> mask(int64_t i) const { return {mask_.data() + offsets_[i], static_cast<size_t>(length(i))}; }
  // Index of the first target token (the number of prompt tokens, BOS included).
  int32_t first_target(int64_t i) const { return first_target_[static_cast<size_t>(i)]; }
  int64_t num_target_tokens() const { return num_target_tokens_; }
  // "file:line" of example i.
  std::string location(int64_t i) const;
  // Whether example i holds only the head and tail windows of a huge text (tokenize_example):
  // its real length is larger than length(i).
  bool windowed(int64_t i) const { return std::binary_search(windowed_.begin(), windowed_.end(), i); }

  int64_t num_bad() const { return n_bad_; }                            // rows skipped by skip_bad
  const std::vector<std::string>& bad_messages() const { return bad_messages_; }
  const std::vector<std::string>& files() const { return files_; }
  const PrepareInfo& info() const { return info_; }
  // The BOS id every example starts with, or -1 when BOS is not added.
  int32_t bos_id() const { return bos_id_; }

 private:
  friend class DatasetBuilder;
  DatasetSpec spec_;
  std::vector<int64_t> offsets_{0};  // size() + 1
  std::vector<int32_t> ids_;
  std::vector<uint8_t> mask_;
  std::vector<uint32_t> file_, line_;
  std::vector<int32_t> first_target_;
  std::vector<int64_t> windowed_;  // ascending
  int64_t num_target_tokens_ = 0;
  int64_t n_bad_ = 0;
  std::vector<std::string> bad_messages_;
  std::vector<std::string> files_;
  PrepareInfo info_;
  int32_t bos_id_ = -1;
};

// Loads the dataset from its cache, or reads, renders, tokenises and caches it.
std::shared_ptr<const TokenizedDataset> prepare_dataset(const DatasetSpec& spec, const Tokenizer& tokenizer,
                                                        const CacheOptions& options);

// The cache key of a dataset (hashes the source files); exposed for tests and `mlr-data inspect`.
std::string cache_key(const DatasetSpec& spec, const Tokenizer& tokenizer, std::string* key_text = nullptr);

}  // namespace mlr::data
