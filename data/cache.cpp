#include "data/cache.h"

#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/atomic_file.h"
#include "base/mapped_file.h"
#include "base/parallel_for.h"
#include "data/reader_detail.h"
#include "data/text.h"
#include "tensor/error.h"

namespace mlr::data {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int kCacheVersion = 1;
constexpr char kShardMagic[8] = {'M', 'L', 'R', 'D', 'S', 'H', '0', '1'};
constexpr size_t kHeaderBytes = 8 + 8 + 8;

std::string sanitize(const std::string& name) {
  std::string out = name;
  for (char& c : out) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  }
  return out.empty() ? "dataset" : out;
}

// The tokenised examples of one shard, in the order of the shard file's arrays.
struct ShardData {
  std::vector<uint32_t> length, file, line;
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
  int64_t n_bad = 0;
  std::vector<std::string> bad_messages;
  std::vector<uint32_t> windowed;  // examples tokenized as a head and a tail window (kept in the index)
};

size_t payload_bytes(uint64_t n_examples, uint64_t n_tokens) {
  return kHeaderBytes + n_examples * 3 * sizeof(uint32_t) + n_tokens * (sizeof(int32_t) + sizeof(uint8_t));
}

template <typename T>
void put(std::string& out, const std::vector<T>& v) {
  out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

std::string serialize(const ShardData& s) {
  std::string out;
  const uint64_t n = s.length.size(), t = s.ids.size();
  out.reserve(payload_bytes(n, t));
  out.append(kShardMagic, 8);
  out.append(reinterpret_cast<const char*>(&n), 8);
  out.append(reinterpret_cast<const char*>(&t), 8);
  put(out, s.length);
  put(out, s.file);
  put(out, s.line);
  put(out, s.ids);
  put(out, s.mask);
  return out;
}

}  // namespace

std::string cache_key(const DatasetSpec& spec, const Tokenizer& tokenizer, std::string* key_text) {
  const ResolvedSpecials specials = resolve_specials(tokenizer, spec.tokenize);
  std::string text = fmt::format(
      "mlr-data cache {}\nformat {}\ntemplate {}\ntokenizer {} backend {}\nbos {} eos {}\nskip_bad {}\n", kCacheVersion,
      format_name(spec.format), spec.tmpl.canonical(), tokenizer.fingerprint(), tokenizer_backend_name(tokenizer.backend()),
      specials.bos, specials.eos, spec.skip_bad);
  for (const fs::path& file : source_files(spec.format, spec.path)) {
    const std::string contents = detail::read_file(file);
    text += fmt::format("source {} {} {:016x}\n", file.filename().string(), contents.size(), fnv1a64(contents));
  }
  if (key_text) *key_text = text;
  return fmt::format("{:016x}", fnv1a64(text));
}

std::string TokenizedDataset::location(int64_t i) const {
  const uint32_t f = file_[static_cast<size_t>(i)];
  return fmt::format("{}:{}", f < files_.size() ? files_[f] : "?", line_[static_cast<size_t>(i)]);
}

// Fills a TokenizedDataset from shards (built or loaded).
class DatasetBuilder {
 public:
  static std::shared_ptr<TokenizedDataset> assemble(const DatasetSpec& spec, std::vector<ShardData>& shards) {
    auto ds = std::make_shared<TokenizedDataset>();
    ds->spec_ = spec;
    int64_t n = 0, t = 0;
    for (const auto& s : shards) {
      n += static_cast<int64_t>(s.length.size());
      t += static_cast<int64_t>(s.ids.size());
    }
    ds->offsets_.reserve(static_cast<size_t>(n) + 1);
    ds->ids_.reserve(static_cast<size_t>(t));
    ds->mask_.reserve(static_cast<size_t>(t));
    for (auto& s : shards) {
      const int64_t first = static_cast<int64_t>(ds->offsets_.size()) - 1;
      for (uint32_t w : s.windowed) ds->windowed_.push_back(first + w);
      for (uint32_t len : s.length) ds->offsets_.push_back(ds->offsets_.back() + len);
      ds->ids_.insert(ds->ids_.end(), s.ids.begin(), s.ids.end());
      ds->mask_.insert(ds->mask_.end(), s.mask.begin(), s.mask.end());
      ds->file_.insert(ds->file_.end(), s.file.begin(), s.file.end());
      ds->line_.insert(ds->line_.end(), s.line.begin(), s.line.end());
      ds->n_bad_ += s.n_bad;
      for (auto& m : s.bad_messages) {
        if (ds->bad_messages_.size() < 5) ds->bad_messages_.push_back(std::move(m));
      }
      s = ShardData{};  // release as we go
    }
    ds->first_target_.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const auto m = ds->mask(i);
      const auto it = std::find(m.begin(), m.end(), uint8_t{1});
      ds->first_target_[static_cast<size_t>(i)] = static_cast<int32_t>(it - m.begin());
      ds->num_target_tokens_ += std::count(m.begin(), m.end(), uint8_t{1});
    }
    return ds;
  }
  // Bad rows found by the reader come before those found while rendering, in source order.
  static void prepend_bad(TokenizedDataset& ds, int64_t n_bad, std::vector<std::string> messages) {
    ds.n_bad_ += n_bad;
    messages.insert(messages.end(), ds.bad_messages_.begin(), ds.bad_messages_.end());
    if (messages.size() > 5) messages.resize(5);
    ds.bad_messages_ = std::move(messages);
  }
  static void set_bad(TokenizedDataset& ds, int64_t n_bad, std::vector<std::string> messages) {
    ds.n_bad_ = n_bad;
    ds.bad_messages_ = std::move(messages);
  }
  static void set_source(TokenizedDataset& ds, std::vector<std::string> files, PrepareInfo info) {
    ds.files_ = std::move(files);
    ds.info_ = std::move(info);
  }
  static void set_bos(TokenizedDataset& ds, int32_t bos_id) { ds.bos_id_ = bos_id; }
};

namespace {

// Loads one shard: maps the file, checks the frame against the sizes the index promises,
// decompresses and splits it into arrays. Any mismatch throws (the caller rebuilds).
ShardData load_shard(const fs::path& path, uint64_t n_examples, uint64_t n_tokens, int64_t n_files) {
  // Counts from a damaged index must not wrap the size computation below (the arrays are then read
  // with these counts): 2^40 of each keeps payload_bytes far from 2^64.
  constexpr uint64_t kMaxCount = uint64_t{1} << 40;
  MLR_CHECK(n_examples <= kMaxCount && n_tokens <= kMaxCount,
            "data: cache: {}: the index promises {} examples and {} tokens, more than a shard holds", path.string(),
            n_examples, n_tokens);
  const MappedFile file(path, "data: cache");
  const size_t expected = payload_bytes(n_examples, n_tokens);
  const unsigned long long frame = ZSTD_getFrameContentSize(file.data(), file.size());
  MLR_CHECK(frame == expected, "data: cache: {}: frame holds {} bytes, the index promises {}", path.string(),
            frame, expected);
  std::string payload(expected, '\0');
  const size_t got = ZSTD_decompress(payload.data(), payload.size(), file.data(), file.size());
  MLR_CHECK(!ZSTD_isError(got) && got == expected, "data: cache: {}: corrupt zstd frame ({})", path.string(),
            ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short");
  MLR_CHECK(std::memcmp(payload.data(), kShardMagic, 8) == 0, "data: cache: {}: not a shard file", path.string());
  uint64_t n = 0, t = 0;
  std::memcpy(&n, payload.data() + 8, 8);
  std::memcpy(&t, payload.data() + 16, 8);
  MLR_CHECK(n == n_examples && t == n_tokens, "data: cache: {}: header counts differ from the index", path.string());
  ShardData s;
  const char* p = payload.data() + kHeaderBytes;
  const auto take = [&](auto& v, size_t count) {
    using T = typename std::decay_t<decltype(v)>::value_type;
    v.resize(count);
    std::memcpy(v.data(), p, count * sizeof(T));
    p += count * sizeof(T);
  };
  take(s.length, n);
  take(s.file, n);
  take(s.line, n);
  take(s.ids, t);
  take(s.mask, t);
  uint64_t sum = 0;
  for (uint32_t len : s.length) sum += len;
  MLR_CHECK(sum == t, "data: cache: {}: example lengths sum to {}, not {}", path.string(), sum, t);
  for (uint32_t f : s.file) MLR_CHECK(static_cast<int64_t>(f) < n_files, "data: cache: {}: bad file index", path.string());
  return s;
}

// A count in the index: a JSON integer in [0, 2^63), or `fallback` when absent. The JSON library
// would cast 1e21 or -3 into an integer type without complaint (undefined behaviour for the former).
int64_t index_count(const json& object, const char* key, int64_t fallback, const fs::path& index_path) {
  if (!object.is_object() || !object.contains(key)) return fallback;
  const json& v = object.at(key);
  MLR_CHECK(v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0),
            "data: cache: {}: \"{}\" is {}, expected a count", index_path.string(), key, v.dump());
  MLR_CHECK(!v.is_number_unsigned() || v.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX),
            "data: cache: {}: \"{}\" is {}, too large", index_path.string(), key, v.dump());
  return v.get<int64_t>();
}

// Null when the cache holds windowed examples (tokenize_example) and rows longer than its bound
// are asked for: the caller rebuilds it.
std::shared_ptr<TokenizedDataset> load_cache_unchecked(const DatasetSpec& spec, const fs::path& dir,
                                                       const std::string& key, const std::vector<std::string>& files,
                                                       int threads, int64_t max_row_tokens) {
  const auto start = std::chrono::steady_clock::now();
  json index;
  try {
    index = json::parse(detail::read_file(dir / "index.json"));
  } catch (const json::exception& e) {
    throw Error(fmt::format("data: cache: {}: unreadable index ({})", (dir / "index.json").string(), e.what()));
  }
  const fs::path index_path = dir / "index.json";
  MLR_CHECK(index_count(index, "version", 0, index_path) == kCacheVersion && index.value("key", "") == key,
            "data: cache: {}: index version or key does not match", dir.string());
  const int64_t cached_row_tokens = index_count(index, "max_row_tokens", 0, index_path);
  if (index_count(index, "n_windowed", 0, index_path) > 0 && (max_row_tokens == 0 || max_row_tokens > cached_row_tokens)) return nullptr;
  const json& shard_list = index.at("shards");
  MLR_CHECK(shard_list.is_array(), "data: cache: {}: \"shards\" is not a list", (dir / "index.json").string());
  std::vector<ShardData> shards(shard_list.size());
  parallel_for(static_cast<int64_t>(shards.size()), threads, [&](int64_t i) {
    const json& entry = shard_list[static_cast<size_t>(i)];
    ShardData& shard = shards[static_cast<size_t>(i)];
    try {
      MLR_CHECK(entry.contains("n_examples") && entry.contains("n_tokens"),
                "data: cache: {}: shard entry {} has no example or token count", index_path.string(), i);
      shard = load_shard(dir / entry.at("file").get<std::string>(),
                         static_cast<uint64_t>(index_count(entry, "n_examples", -1, index_path)),
                         static_cast<uint64_t>(index_count(entry, "n_tokens", -1, index_path)),
                         static_cast<int64_t>(files.size()));
      if (entry.contains("windowed")) {
        const json& windowed = entry.at("windowed");
        MLR_CHECK(windowed.is_array(), "data: cache: {}: \"windowed\" of shard entry {} is not a list",
                  index_path.string(), i);
        for (const json& w : windowed) {
          MLR_CHECK(w.is_number_integer() && w.get<int64_t>() >= 0 &&
                        w.get<int64_t>() < static_cast<int64_t>(shard.length.size()),
                    "data: cache: {}: shard entry {} marks example {} of {} as windowed", index_path.string(), i,
                    w.dump(), shard.length.size());
          shard.windowed.push_back(static_cast<uint32_t>(w.get<int64_t>()));
        }
      }
    } catch (const json::exception& e) {
      throw Error(fmt::format("data: cache: {}: shard entry {} is malformed ({})", (dir / "index.json").string(), i,
                              e.what()));
    }
  });
  auto ds = DatasetBuilder::assemble(spec, shards);
  MLR_CHECK(ds->size() == index_count(index, "n_examples", -1, index_path) &&
                ds->num_tokens() == index_count(index, "n_tokens", -1, index_path),
            "data: cache: {}: totals differ from the index", dir.string());
  PrepareInfo info;
  info.from_cache = true;
  info.shards_mapped = static_cast<int64_t>(shard_list.size());
  info.cache_dir = dir;
  info.key = key;
  info.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  DatasetBuilder::set_bad(*ds, index_count(index, "n_bad", 0, index_path), index.value("bad_messages", std::vector<std::string>{}));
  DatasetBuilder::set_source(*ds, files, info);
  return ds;
}

std::shared_ptr<TokenizedDataset> load_cache(const DatasetSpec& spec, const fs::path& dir, const std::string& key,
                                             const std::vector<std::string>& files, int threads, int64_t max_row_tokens) {
  try {
    return load_cache_unchecked(spec, dir, key, files, threads, max_row_tokens);
  } catch (const json::exception& e) {
    // A field of the index with the wrong type or missing (the checks above name the usual damage).
    throw Error(fmt::format("data: cache: {}: malformed index ({})", (dir / "index.json").string(), e.what()));
  }
}

std::shared_ptr<TokenizedDataset> build_cache(const DatasetSpec& spec, const Tokenizer& tokenizer, const fs::path& dir,
                                              const std::string& key, const std::string& key_text,
                                              const std::vector<std::string>& files, const CacheOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const int threads = thread_count(options.threads);
  const CompiledTemplate tmpl(spec.tmpl, spec.format, spec.name);
  const ResolvedSpecials specials = resolve_specials(tokenizer, spec.tokenize);
  ReadResult read = read_records(spec.format, spec.path, ReadOptions{spec.skip_bad});
  MLR_CHECK(!read.records.empty(), "data: dataset '{}': no examples in {}{}", spec.name, spec.path.string(),
            read.n_bad > 0 ? fmt::format(" (all {} rows were malformed and skipped; first: {})", read.n_bad,
                                         read.bad_messages.empty() ? "" : read.bad_messages[0])
                           : "");

  // Shards small enough that every thread gets several, large enough to compress well.
  const auto n = static_cast<int64_t>(read.records.size());
  const int64_t per_shard = std::clamp<int64_t>((n + 4 * threads - 1) / (4 * threads), 256, 16384);
  const int64_t n_shards = (n + per_shard - 1) / per_shard;

  // Build in a private directory, then rename it into place.
  std::random_device rd;
  const fs::path tmp = dir.parent_path() / fmt::format(".{}.tmp-{}-{:08x}", dir.filename().string(), ::getpid(), rd());
  fs::create_directories(tmp);
  std::vector<ShardData> shards(static_cast<size_t>(n_shards));
  std::vector<json> shard_index(static_cast<size_t>(n_shards));
  try {
    parallel_for(n_shards, threads, [&](int64_t s) {
      ShardData& shard = shards[static_cast<size_t>(s)];
      const int64_t begin = s * per_shard, end = std::min(n, begin + per_shard);
      for (int64_t i = begin; i < end; ++i) {
        const Record& r = read.records[static_cast<size_t>(i)];
        const std::string where = fmt::format("{}:{}", read.files[static_cast<size_t>(r.file)], r.line);
        TokenizedExample tok;
        try {
          tok = tokenize_example(tokenizer, tmpl.render(r, where), specials, options.max_row_tokens);
        } catch (const Error& e) {
          if (!spec.skip_bad) throw;
          ++shard.n_bad;
          if (shard.bad_messages.size() < 5) shard.bad_messages.push_back(e.message());
          continue;
        }
        if (tok.windowed) shard.windowed.push_back(static_cast<uint32_t>(shard.length.size()));
        shard.length.push_back(static_cast<uint32_t>(tok.ids.size()));
        shard.file.push_back(static_cast<uint32_t>(r.file));
        shard.line.push_back(static_cast<uint32_t>(r.line));
        shard.ids.insert(shard.ids.end(), tok.ids.begin(), tok.ids.end());
        shard.mask.insert(shard.mask.end(), tok.mask.begin(), tok.mask.end());
      }
      const std::string payload = serialize(shard);
      // The frame carries a checksum of its content, so a flipped bit in a shard is detected on
      // load rather than read as wrong token ids.
      std::string compressed(ZSTD_compressBound(payload.size()), '\0');
      const std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> cctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
      MLR_CHECK(cctx != nullptr, "data: cache: cannot create a zstd context");
      ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, options.zstd_level);
      ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_checksumFlag, 1);
      const size_t size = ZSTD_compress2(cctx.get(), compressed.data(), compressed.size(), payload.data(), payload.size());
      MLR_CHECK(!ZSTD_isError(size), "data: cache: zstd compression failed: {}", ZSTD_getErrorName(size));
      const std::string name = fmt::format("shard-{:05d}.zst", s);
      atomic_write_file(tmp / name, std::string_view(compressed.data(), size));
      shard_index[static_cast<size_t>(s)] = {
          {"file", name}, {"n_examples", shard.length.size()}, {"n_tokens", shard.ids.size()}, {"windowed", shard.windowed}};
    });
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }

  int64_t n_windowed = 0;
  for (const auto& shard : shards) n_windowed += static_cast<int64_t>(shard.windowed.size());
  auto ds = DatasetBuilder::assemble(spec, shards);
  DatasetBuilder::prepend_bad(*ds, read.n_bad, read.bad_messages);
  MLR_CHECK(ds->size() > 0, "data: dataset '{}': no examples in {} (all {} rows were malformed and skipped; first: {})",
            spec.name, spec.path.string(), ds->num_bad(), ds->bad_messages().empty() ? "" : ds->bad_messages()[0]);

  const json index = {{"version", kCacheVersion},
                      {"key", key},
                      {"key_text", key_text},
                      {"dataset", spec.name},
                      {"format", format_name(spec.format)},
                      {"files", files},
                      {"n_examples", ds->size()},
                      {"n_tokens", ds->num_tokens()},
                      {"n_bad", ds->num_bad()},
                      {"max_row_tokens", options.max_row_tokens},
                      {"n_windowed", n_windowed},
                      {"bad_messages", ds->bad_messages()},
                      {"shards", shard_index}};
  const std::string index_text = index.dump(1);
  atomic_write_file(tmp / "index.json", index_text);
  std::error_code ec;
  fs::rename(tmp, dir, ec);
  if (ec) {
    // Another process (a second rank) finished the same build first: keep its copy.
    fs::remove_all(tmp, ec);
  } else {
    fsync_path(dir.parent_path());  // makes the directory's rename durable
  }
  PrepareInfo info;
  info.tokenized = ds->size();
  info.cache_dir = dir;
  info.key = key;
  info.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  DatasetBuilder::set_source(*ds, files, info);
  return ds;
}

}  // namespace

std::shared_ptr<const TokenizedDataset> prepare_dataset(const DatasetSpec& spec, const Tokenizer& tokenizer,
                                                        const CacheOptions& options) {
  std::string key_text;
  const std::string key = cache_key(spec, tokenizer, &key_text);
  std::vector<std::string> files;
  for (const auto& f : source_files(spec.format, spec.path)) files.push_back(f.string());
  fs::create_directories(options.dir);
  const fs::path dir = options.dir / fmt::format("{}-{}", sanitize(spec.name), key);
  std::string note;
  const ResolvedSpecials specials = resolve_specials(tokenizer, spec.tokenize);
  const int32_t bos_id = specials.bos ? specials.bos_id : -1;
  if (fs::exists(dir / "index.json") && !options.rebuild) {
    // A damaged cache is an error, not a silent rebuild: it means a disk or copy problem the user
    // should know about. The message says how to rebuild.
    try {
      if (auto ds = load_cache(spec, dir, key, files, thread_count(options.threads), options.max_row_tokens)) {
        DatasetBuilder::set_bos(*ds, bos_id);
        return ds;
      }
      note = fmt::format("rebuilt: it holds only the head and tail of its longest texts, and rows of {} tokens need more",
                         options.max_row_tokens == 0 ? std::string("any length") : std::to_string(options.max_row_tokens));
    } catch (const Error& e) {
      throw Error(fmt::format("{} (dataset '{}'; delete {} or prepare with --rebuild to rebuild it)", e.message(),
                              spec.name, dir.string()));
    }
  }
  if (fs::exists(dir)) {
    // A directory without an index is an interrupted copy; with --rebuild, any old copy goes.
    if (options.rebuild) note = "rebuilt on request";
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  auto ds = build_cache(spec, tokenizer, dir, key, key_text, files, options);
  PrepareInfo info = ds->info();
  info.note = note;
  DatasetBuilder::set_source(*ds, files, info);
  DatasetBuilder::set_bos(*ds, bos_id);
  return ds;
}

}  // namespace mlr::data
