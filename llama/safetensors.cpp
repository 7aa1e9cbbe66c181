#include "llama/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/atomic_file.h"
#include "base/mapped_file.h"

namespace fs = std::filesystem;

namespace mlr {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian data; mlr maps it without byte swapping");

namespace {

// Header lengths past this are certainly corrupt (real headers are a few MB at most), and bounding
// it keeps a flipped high bit from asking the JSON parser for gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

std::string base_name(const std::string& path) { return fs::path(path).filename().string(); }

// Safetensors dtype names. Only the ones mlr has a DType for are readable; the others are named in
// the error so the user knows the file is fine but the type is not supported.
std::optional<DType> dtype_from_safetensors(const std::string& s) {
  if (s == "F32") return DType::f32;
  if (s == "F64") return DType::f64;
  if (s == "BF16") return DType::bf16;
  if (s == "F16") return DType::f16;
  if (s == "I32") return DType::i32;
  if (s == "I64") return DType::i64;
  if (s == "BOOL") return DType::boolean;
  return std::nullopt;
}
bool known_unsupported_dtype(const std::string& s) {
  static const std::set<std::string> names = {"U8",  "I8",  "I16",     "U16",     "U32",     "U64",
                                              "F4",  "F6_E2M3", "F6_E3M2", "F8_E5M2", "F8_E4M3", "F8_E8M0"};
  return names.count(s) != 0;
}
const char* safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::boolean: return "BOOL";
  }
  return "?";
}
// Position of each dtype in the Rust `Dtype` enum (declaration order, which its derived Ord uses):
// BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, I16, U16, F16, BF16, I32, U32, F32,
// F64, I64, U64. The writer sorts by it, descending, exactly as safetensors' serialize does.
int rust_dtype_rank(DType t) {
  switch (t) {
    case DType::boolean: return 0;
    case DType::f16: return 11;
    case DType::bf16: return 12;
    case DType::i32: return 13;
    case DType::f32: return 15;
    case DType::f64: return 16;
    case DType::i64: return 17;
  }
  return -1;
}

// A non-negative JSON integer that fits u64, else nullopt (floats, negatives, strings, ...).
std::optional<uint64_t> as_u64(const nlohmann::json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  return std::nullopt;
}

}  // namespace

// ------------------------------------------------------------------------------------- reading

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  const std::string file = base_name(path);
  SafetensorsFile f;
  f.path_ = path;

  // The whole file mapped MAP_PRIVATE with write permission: the file is opened read-only and
  // never changes, while a caller that writes into a zero-copy tensor gets private copy-on-write
  // pages instead of a SIGSEGV.
  auto mapping = std::make_shared<MappedFile>(path, "safetensors", MappedFile::Pages::copy_on_write);
  const uint64_t file_size = mapping->size();
  MLR_CHECK(file_size >= 8,
            "safetensors: {}: file has {} bytes, fewer than the 8-byte header length (file truncated?)", file,
            file_size);
  f.mapping_ = mapping;
  const auto* bytes = reinterpret_cast<const unsigned char*>(mapping->data());

  uint64_t n = 0;
  std::memcpy(&n, bytes, 8);
  MLR_CHECK(n <= file_size - 8,
            "safetensors: {}: header length {} is beyond the file's {} bytes after the length field (file "
            "truncated, or not a safetensors file?)",
            file, n, file_size - 8);
  MLR_CHECK(n <= kMaxHeaderBytes, "safetensors: {}: header length {} exceeds the {} byte limit (corrupt file?)",
            file, n, kMaxHeaderBytes);
  MLR_CHECK(n >= 2, "safetensors: {}: header length {} cannot hold a JSON object", file, n);
  f.header_bytes_ = n;
  f.data_bytes_ = file_size - 8 - n;

  // Parse, rejecting duplicate top-level keys (the JSON library would keep one silently, and two
  // entries for one tensor mean the file is corrupt). The callback sees each key at depth 1.
  const char* header = reinterpret_cast<const char*>(bytes + 8);
  std::set<std::string> seen;
  std::string duplicate;
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(
        header, header + n,
        [&](int depth, nlohmann::ordered_json::parse_event_t event, nlohmann::ordered_json& parsed) {
          if (depth == 1 && event == nlohmann::ordered_json::parse_event_t::key && parsed.is_string()) {
            if (!seen.insert(parsed.get<std::string>()).second && duplicate.empty()) duplicate = parsed.get<std::string>();
          }
          return true;
        });
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(fmt::format("safetensors: {}: header JSON is invalid at byte {} of {}: {}", file, e.byte, n,
                            e.what()));
  // A number too large for a double ("1e999") is not a parse_error but out_of_range.
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("safetensors: {}: header JSON is invalid: {}", file, e.what()));
  }
  MLR_CHECK(j.is_object(), "safetensors: {}: header is a JSON {}, expected an object", file, j.type_name());
  MLR_CHECK(duplicate.empty(), "safetensors: {}: header lists '{}' twice", file, duplicate);

  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const auto& e = it.value();
    if (name == "__metadata__") {
      MLR_CHECK(e.is_object(), "safetensors: {}: __metadata__ is a JSON {}, expected an object of strings", file,
                e.type_name());
      for (auto m = e.begin(); m != e.end(); ++m) {
        MLR_CHECK(m.value().is_string(), "safetensors: {}: __metadata__ entry '{}' is a JSON {}, expected a string",
                  file, m.key(), m.value().type_name());
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    MLR_CHECK(e.is_object(), "safetensors: {}: tensor '{}' is a JSON {}, expected an object", file, name,
              e.type_name());
    for (const char* key : {"dtype", "shape", "data_offsets"})
      MLR_CHECK(e.contains(key), "safetensors: {}: tensor '{}' has no \"{}\"", file, name, key);
    SafetensorInfo info;

    const auto& jd = e["dtype"];
    MLR_CHECK(jd.is_string(), "safetensors: {}: tensor '{}' has a dtype that is a JSON {}, expected a string",
              file, name, jd.type_name());
    const std::string ds = jd.get<std::string>();
    auto dt = dtype_from_safetensors(ds);
    if (!dt) {
      throw Error(fmt::format(
          "safetensors: {}: tensor '{}' has dtype {}, which {} (supported: BF16, F16, F32, F64, I32, I64, BOOL)",
          file, name, ds, known_unsupported_dtype(ds) ? "mlr does not support" : "is not a safetensors dtype"));
    }
    info.dtype = *dt;

    const auto& js = e["shape"];
    MLR_CHECK(js.is_array(), "safetensors: {}: tensor '{}' has a shape that is a JSON {}, expected an array", file,
              name, js.type_name());
    // numel in 128 bits: a corrupt shape must not wrap around and pass the size check.
    unsigned __int128 numel = 1;
    bool overflow = false;
    for (const auto& d : js) {
      auto v = as_u64(d);
      MLR_CHECK(v && *v <= static_cast<uint64_t>(INT64_MAX),
                "safetensors: {}: tensor '{}' has shape {}, expected non-negative integers", file, name, js.dump());
      info.shape.push_back(static_cast<int64_t>(*v));
      numel *= *v;
      if (numel > (static_cast<unsigned __int128>(1) << 64)) overflow = true, numel = 0;
    }
    MLR_CHECK(!overflow, "safetensors: {}: tensor '{}' has shape {} with more elements than fit in 64 bits", file,
              name, js.dump());

    const auto& jo = e["data_offsets"];
    std::optional<uint64_t> b, en;
    if (jo.is_array() && jo.size() == 2) b = as_u64(jo[0]), en = as_u64(jo[1]);
    MLR_CHECK(b && en, "safetensors: {}: tensor '{}' has data_offsets {}, expected [begin, end] as non-negative "
              "integers", file, name, jo.dump());
    MLR_CHECK(*en >= *b, "safetensors: {}: tensor '{}' has data_offsets [{}, {}) with end before begin", file, name,
              *b, *en);
    MLR_CHECK(*en <= f.data_bytes_,
              "safetensors: {}: tensor '{}' has data_offsets [{}, {}) beyond the file's {} data bytes (file "
              "truncated?)",
              file, name, *b, *en, f.data_bytes_);
    const unsigned __int128 expected = numel * dtype_size(info.dtype);
    MLR_CHECK(expected == *en - *b,
              "safetensors: {}: tensor '{}' has data_offsets [{}, {}) = {} bytes, but shape {} of {} needs {} bytes",
              file, name, *b, *en, *en - *b, shape_str(info.shape), ds, static_cast<uint64_t>(expected));
    info.begin = *b;
    info.end = *en;
    f.names_.push_back(name);
    f.infos_.emplace(name, std::move(info));
  }

  // No two tensors may share bytes: sorted by begin, each must end before the next starts
  // (empty tensors occupy nothing and are skipped).
  std::vector<const std::string*> order;
  for (const auto& name : f.names_)
    if (f.infos_.at(name).end > f.infos_.at(name).begin) order.push_back(&name);
  std::sort(order.begin(), order.end(),
            [&](const std::string* a, const std::string* b) { return f.infos_.at(*a).begin < f.infos_.at(*b).begin; });
  for (size_t i = 1; i < order.size(); ++i) {
    const auto& prev = f.infos_.at(*order[i - 1]);
    const auto& cur = f.infos_.at(*order[i]);
    MLR_CHECK(prev.end <= cur.begin,
              "safetensors: {}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap", file, *order[i - 1], prev.begin,
              prev.end, *order[i], cur.begin, cur.end);
  }
  return f;
}

const SafetensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = infos_.find(name);
  MLR_CHECK(it != infos_.end(), "safetensors: {}: no tensor named '{}' ({} tensors in the file)", base_name(path_),
            name, names_.size());
  return it->second;
}

Tensor SafetensorsFile::get(const std::string& name, std::optional<DType> as, Device device) const {
  const SafetensorInfo& inf = info(name);
  const DType want = as.value_or(inf.dtype);
  auto* p = static_cast<unsigned char*>(mapping_->mutable_data()) + 8 + header_bytes_ + inf.begin;
  const size_t nbytes = inf.end - inf.begin;
  Tensor stored;
  if (reinterpret_cast<uintptr_t>(p) % dtype_size(inf.dtype) == 0) {
    // The release callback owns a reference to the mapping: the file stays mapped while any
    // tensor viewing it lives, even after this SafetensorsFile is gone.
    auto keep = mapping_;
    auto storage = std::make_shared<Storage>(p, nbytes, Device::cpu(), [keep](void*) mutable { keep.reset(); });
    stored = Tensor(storage, inf.shape, contiguous_strides(inf.shape), 0, inf.dtype);
  } else {
    // Writers other than safetensors may leave tensors at unaligned offsets; typed access to them
    // would be undefined, so copy into aligned memory.
    stored = empty(inf.shape, {inf.dtype, Device::cpu()});
    if (nbytes > 0) std::memcpy(stored.data_ptr(), p, nbytes);
  }
  return stored.to(device, want);
}

Tensor SafetensorsFile::get_range(const std::string& name, int64_t begin, int64_t count) const {
  const SafetensorInfo& inf = info(name);
  const int64_t numel = shape_numel(inf.shape);
  MLR_CHECK(begin >= 0 && count >= 0 && begin <= numel && count <= numel - begin,
            "safetensors: {}: elements [{}, {}) of tensor '{}' are outside its {} elements (shape {})",
            base_name(path_), begin, begin + count, name, numel, shape_str(inf.shape));
  const size_t element = dtype_size(inf.dtype);
  auto* p = static_cast<unsigned char*>(mapping_->mutable_data()) + 8 + header_bytes_ + inf.begin +
            static_cast<size_t>(begin) * element;
  const size_t nbytes = static_cast<size_t>(count) * element;
  if (reinterpret_cast<uintptr_t>(p) % element == 0) {
    auto keep = mapping_;  // as in get(): the view keeps the file mapped
    auto storage = std::make_shared<Storage>(p, nbytes, Device::cpu(), [keep](void*) mutable { keep.reset(); });
    return Tensor(storage, {count}, contiguous_strides({count}), 0, inf.dtype);
  }
  Tensor copy = empty({count}, {inf.dtype, Device::cpu()});
  if (nbytes > 0) std::memcpy(copy.data_ptr(), p, nbytes);
  return copy;
}

// ------------------------------------------------------------------------------------ checkpoints

Checkpoint Checkpoint::open(const std::string& path) {
  Checkpoint c;
  c.path_ = path;
  fs::path p(path);
  fs::path index;
  if (fs::is_directory(p)) {
    if (fs::exists(p / "model.safetensors.index.json")) {
      index = p / "model.safetensors.index.json";
    } else if (fs::exists(p / "model.safetensors")) {
      p = p / "model.safetensors";
    } else {
      throw Error(fmt::format("safetensors: {} has neither model.safetensors.index.json nor model.safetensors", path));
    }
  } else {
    MLR_CHECK(fs::exists(p), "safetensors: {} does not exist", path);
    const std::string fname = p.filename().string();
    if (fname.size() >= 11 && fname.compare(fname.size() - 11, 11, ".index.json") == 0) index = p;
  }

  if (index.empty()) {
    c.files_.push_back(SafetensorsFile::open(p.string()));
    for (const auto& n : c.files_[0].names()) {
      c.names_.push_back(n);
      c.where_[n] = 0;
    }
    return c;
  }

  const std::string iname = index.filename().string();
  std::ifstream in(index, std::ios::binary);
  MLR_CHECK(in, "safetensors: cannot open {}", index.string());
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(fmt::format("safetensors: {}: invalid JSON at byte {}: {}", iname, e.byte, e.what()));
  // A number too large for a double ("1e999") is not a parse_error but out_of_range.
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("safetensors: {}: invalid JSON: {}", iname, e.what()));
  }
  MLR_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
            "safetensors: {}: expected an object with a \"weight_map\" object", iname);
  // Shards in file-name order (model-00001-of-00003 first), each opened once.
  std::map<std::string, std::vector<std::string>> listed;  // shard -> names the index puts there
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    MLR_CHECK(it.value().is_string(), "safetensors: {}: weight_map entry '{}' is a JSON {}, expected a file name",
              iname, it.key(), it.value().type_name());
    const std::string shard = it.value().get<std::string>();
    MLR_CHECK(!shard.empty() && shard.find('/') == std::string::npos && shard != "." && shard != "..",
              "safetensors: {}: weight_map entry '{}' names '{}', expected a file name in the same directory", iname,
              it.key(), shard);
    listed[shard].push_back(it.key());
  }
  const fs::path dir = index.parent_path();
  std::map<std::string, std::string> shard_of;  // name -> shard actually holding it
  for (const auto& [shard, names] : listed) {
    const fs::path sp = dir / shard;
    std::error_code ec;  // a name the file system refuses (too long, say) is an error, not an exception
    const bool present = fs::exists(sp, ec);
    MLR_CHECK(!ec, "safetensors: {}: shard {} cannot be looked up: {}", iname, shard, ec.message());
    MLR_CHECK(present, "safetensors: {}: shard {} (holding '{}' and {} more tensors) is missing", iname, shard,
              names.front(), names.size() - 1);
    c.files_.push_back(SafetensorsFile::open(sp.string()));
    const SafetensorsFile& f = c.files_.back();
    for (const auto& n : f.names()) {
      auto [it, fresh] = shard_of.emplace(n, shard);
      MLR_CHECK(fresh, "safetensors: {}: tensor '{}' is present in two shards, {} and {}", iname, n, it->second,
                shard);
      c.names_.push_back(n);
      c.where_[n] = c.files_.size() - 1;
    }
  }
  for (const auto& [shard, names] : listed) {
    for (const auto& n : names) {
      auto it = shard_of.find(n);
      MLR_CHECK(it != shard_of.end() && it->second == shard,
                "safetensors: {}: tensor '{}' is mapped to {} but {}", iname, n, shard,
                it == shard_of.end() ? std::string("no shard holds it") : "it is in " + it->second);
    }
  }
  for (const auto& [n, shard] : shard_of)
    MLR_CHECK(j["weight_map"].contains(n), "safetensors: {}: shard {} holds tensor '{}', which the weight_map lacks",
              iname, shard, n);
  return c;
}

const SafetensorInfo& Checkpoint::info(const std::string& name) const { return file_of(name).info(name); }

const SafetensorsFile& Checkpoint::file_of(const std::string& name) const {
  auto it = where_.find(name);
  MLR_CHECK(it != where_.end(), "safetensors: {}: no tensor named '{}' ({} tensors in the checkpoint)", path_, name,
            names_.size());
  return files_[it->second];
}

Tensor Checkpoint::get(const std::string& name, std::optional<DType> as, Device device) const {
  return file_of(name).get(name, as, device);
}

Tensor Checkpoint::get_range(const std::string& name, int64_t begin, int64_t count) const {
  return file_of(name).get_range(name, begin, count);
}

std::map<std::string, Tensor> load_checkpoint_tensors(const std::string& path, std::optional<DType> as,
                                                      Device device) {
  Checkpoint c = Checkpoint::open(path);
  std::map<std::string, Tensor> out;
  for (const auto& n : c.names()) out.emplace(n, c.get(n, as, device));
  return out;
}

// ------------------------------------------------------------------------------------- writing

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::string file = base_name(path);
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    MLR_CHECK(t.defined(), "safetensors: {}: tensor '{}' is undefined", file, name);
    MLR_CHECK(name != "__metadata__", "safetensors: {}: '__metadata__' cannot name a tensor", file);
    MLR_CHECK(seen.insert(name).second, "safetensors: {}: tensor '{}' is given twice", file, name);
  }
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    int ra = rust_dtype_rank(tensors[a].second.dtype()), rb = rust_dtype_rank(tensors[b].second.dtype());
    if (ra != rb) return ra > rb;
    return tensors[a].first < tensors[b].first;
  });

  // Header: built by hand (not through a JSON map) because the order of its keys is part of the
  // format we reproduce. Names and metadata are escaped by the JSON library.
  std::string header = "{";
  bool first = true;
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header += "\"__metadata__\":" + m.dump();
    first = false;
  }
  uint64_t offset = 0;
  for (size_t i : order) {
    const auto& [name, t] = tensors[i];
    nlohmann::ordered_json e;
    e["dtype"] = safetensors_dtype_name(t.dtype());
    e["shape"] = t.shape();
    e["data_offsets"] = {offset, offset + t.nbytes()};
    offset += t.nbytes();
    if (!first) header += ",";
    first = false;
    header += nlohmann::json(name).dump() + ":" + e.dump();
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');

  AtomicFile out(path);
  const uint64_t n = header.size();
  out.write(&n, 8);
  out.write(header.data(), header.size());
  for (size_t i : order) {
    const Tensor& t = tensors[i].second;
    if (t.numel() == 0) continue;
    // One tensor at a time on the host, so saving from a GPU never holds two copies of the model.
    Tensor host = t.cpu().contiguous();
    out.write(host.data_ptr(), host.nbytes());
  }
  out.commit();
}

std::vector<std::string> save_sharded(const std::string& dir,
                                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                                      uint64_t max_shard_bytes, const std::map<std::string, std::string>& metadata) {
  MLR_CHECK(max_shard_bytes > 0, "safetensors: save_sharded: max_shard_bytes must be positive");
  fs::create_directories(dir);
  // huggingface_hub's split_torch_state_dict_into_shards, which save_pretrained uses.
  std::vector<std::vector<std::pair<std::string, Tensor>>> shards;
  std::vector<std::pair<std::string, Tensor>> current;
  uint64_t current_bytes = 0, total = 0;
  for (const auto& nt : tensors) {
    const uint64_t size = nt.second.defined() ? nt.second.nbytes() : 0;
    total += size;
    if (size > max_shard_bytes) {
      shards.push_back({nt});
      continue;
    }
    if (current_bytes + size > max_shard_bytes) {
      shards.push_back(std::move(current));
      current.clear();
      current_bytes = 0;
    }
    current.push_back(nt);
    current_bytes += size;
  }
  if (!current.empty() || shards.empty()) shards.push_back(std::move(current));

  std::vector<std::string> written;
  const fs::path d(dir);
  const fs::path index_path = d / "model.safetensors.index.json";
  if (shards.size() == 1) {
    save_safetensors((d / "model.safetensors").string(), shards[0], metadata);
    written.push_back((d / "model.safetensors").string());
  } else {
    nlohmann::json index;
    index["metadata"]["total_size"] = total;
    index["weight_map"] = nlohmann::json::object();
    const size_t k = shards.size();
    for (size_t i = 0; i < k; ++i) {
      const std::string name = fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, k);
      save_safetensors((d / name).string(), shards[i], metadata);
      written.push_back((d / name).string());
      for (const auto& nt : shards[i]) index["weight_map"][nt.first] = name;
    }
    // nlohmann::json keeps keys sorted, as json.dumps(sort_keys=True) does.
    atomic_write_file(index_path, index.dump(2) + "\n");
    written.push_back(index_path.string());
  }
  // Remove what an earlier save left that would now be read instead of (or mixed with) these files.
  static const std::regex shard_re(R"(model-\d{5}-of-\d{5}\.safetensors)");
  std::set<std::string> keep(written.begin(), written.end());
  for (const auto& entry : fs::directory_iterator(d)) {
    const std::string fname = entry.path().filename().string();
    const bool ours = std::regex_match(fname, shard_re) || fname == "model.safetensors.index.json" ||
                      fname == "model.safetensors";
    if (ours && !keep.count(entry.path().string())) fs::remove(entry.path());
  }
  return written;
}

}  // namespace mlr
