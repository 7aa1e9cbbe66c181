// Safetensors reader and writer against files written by the Python `safetensors` package and by
// huggingface_hub's save_torch_state_dict (scripts/fixtures/make_safetensors_fixtures.py records
// them, with their exact values, in tests/fixtures/llama/), malformed files with the error each
// gets, and a fuzz of the header parser.
#include <doctest/doctest.h>

#include "tests/test_support.h"
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "llama/safetensors.h"
#include "tensor/error.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace mlr;

namespace {

const fs::path kFixtures = fs::path(MLR_SOURCE_DIR) / "tests" / "fixtures" / "llama";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
void spit(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }
json expected() { return json::parse(slurp(kFixtures / "safetensors_expected.json")); }


template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

DType dtype_of_name(const std::string& s) {
  static const std::map<std::string, DType> m = {{"F32", DType::f32},  {"F64", DType::f64}, {"BF16", DType::bf16},
                                                 {"F16", DType::f16},  {"I32", DType::i32}, {"I64", DType::i64},
                                                 {"BOOL", DType::boolean}};
  return m.at(s);
}

// The recorded tensor as an mlr tensor of its own dtype (values are exact in f64 / i64).
Tensor tensor_of(const json& e) {
  const DType dt = dtype_of_name(e["dtype"]);
  const Shape shape = e["shape"].get<Shape>();
  if (dt == DType::boolean) return from_vector(e["values"].get<std::vector<bool>>(), shape);
  if (is_integral(dt)) return from_vector(e["values"].get<std::vector<int64_t>>(), shape, dt);
  return from_vector(e["values"].get<std::vector<double>>(), shape, dt);
}

std::vector<std::pair<std::string, Tensor>> tensors_of(const json& set) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& e : set["tensors"]) out.emplace_back(e["name"].get<std::string>(), tensor_of(e));
  return out;
}

// Bitwise equality of dtype, shape and contents (so -0.0 and subnormals count).
void check_same(const Tensor& got, const Tensor& want, const std::string& name) {
  CAPTURE(name);
  REQUIRE(got.dtype() == want.dtype());
  REQUIRE(got.shape() == want.shape());
  Tensor a = got.contiguous(), b = want.contiguous();
  CHECK(std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0);
}

std::map<std::string, std::string> metadata_of(const json& set) {
  return set["metadata"].get<std::map<std::string, std::string>>();
}

// A safetensors file from a header string and data bytes; `n` overrides the header length field.
std::string make_file(const std::string& header, const std::string& data, std::optional<uint64_t> n = {}) {
  uint64_t len = n.value_or(header.size());
  std::string s(8, '\0');
  std::memcpy(s.data(), &len, 8);
  return s + header + data;
}

}  // namespace

TEST_CASE("safetensors: reads every dtype of a file written by python safetensors") {
  const json set = expected()["mixed"];
  auto f = SafetensorsFile::open((kFixtures / "mixed.safetensors").string());
  CHECK(f.metadata() == metadata_of(set));
  CHECK(f.header_bytes() % 8 == 0);
  std::vector<std::string> names;
  for (const auto& e : set["tensors"]) names.push_back(e["name"]);
  CHECK(std::set<std::string>(f.names().begin(), f.names().end()) == std::set<std::string>(names.begin(), names.end()));
  for (const auto& [name, want] : tensors_of(set)) {
    const auto& info = f.info(name);
    CHECK(info.dtype == want.dtype());
    CHECK(info.shape == want.shape());
    check_same(f.get(name), want, name);
    // Conversion on request: f32 values of the floating tensors are exact conversions.
    if (want.is_floating_point() && want.dtype() != DType::f64) {
      check_same(f.get(name, DType::f32), want.to(DType::f32), name + " as f32");
    }
  }
  CHECK(error_of([&] { f.info("nope"); }).find("no tensor named 'nope'") != std::string::npos);
}

TEST_CASE("safetensors: unconverted tensors are zero-copy views that keep the mapping alive") {
  Tensor a, a2;
  std::vector<float> values;
  {
    auto f = SafetensorsFile::open((kFixtures / "mixed.safetensors").string());
    a = f.get("lm_head.weight");
    a2 = f.get("lm_head.weight");
    values = a.to_vector<float>();
    CHECK(a.data_ptr() == a2.data_ptr());                         // same mapped bytes, no copy
    CHECK(f.get("lm_head.weight", DType::f64).data_ptr() != a.data_ptr());  // converted: a copy
  }
  // The file object is gone; the views still read the mapping.
  CHECK(a.to_vector<float>() == values);
  // Writes land in private pages: the file on disk does not change.
  a.fill_(7.0);
  CHECK(a2.to_vector<float>() == std::vector<float>(values.size(), 7.0f));
  auto again = SafetensorsFile::open((kFixtures / "mixed.safetensors").string());
  CHECK(again.get("lm_head.weight").to_vector<float>() == values);
}

TEST_CASE("safetensors: get_range reads one element range of the flattened tensor, as a view when aligned") {
  auto f = SafetensorsFile::open((kFixtures / "mixed.safetensors").string());
  const Tensor whole = f.get("lm_head.weight").reshape({-1});
  REQUIRE(whole.numel() >= 8);
  const Tensor part = f.get_range("lm_head.weight", 3, 5);
  CHECK(part.shape() == Shape{5});
  CHECK(part.to_vector<float>() == whole.narrow(0, 3, 5).to_vector<float>());
  CHECK(part.data_ptr() == static_cast<const char*>(whole.data_ptr()) + 3 * whole.element_size());  // no copy
  CHECK(f.get_range("lm_head.weight", whole.numel(), 0).numel() == 0);
  const std::string msg = error_of([&] { f.get_range("lm_head.weight", whole.numel() - 1, 2); });
  CAPTURE(msg);
  CHECK(msg.find(fmt::format("mixed.safetensors: elements [{}, {}) of tensor 'lm_head.weight' are outside its {} "
                             "elements", whole.numel() - 1, whole.numel() + 1, whole.numel())) != std::string::npos);

  // A tensor at an offset unaligned for its dtype: the range is copied (only its bytes).
  TempDir tmp;
  const fs::path p = tmp.path / "unaligned.safetensors";
  std::string data(2, '\0');
  for (float v : {1.5f, -2.0f, 3.25f}) data.append(reinterpret_cast<const char*>(&v), 4);
  std::string header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[2,14]}}";
  header.append((8 - header.size() % 8) % 8, ' ');
  spit(p, make_file(header, data));
  auto u = SafetensorsFile::open(p.string());
  CHECK(u.get_range("w", 1, 2).to_vector<float>() == std::vector<float>{-2.0f, 3.25f});
}

TEST_CASE("safetensors: sharded checkpoint written by huggingface_hub") {
  const json set = expected()["sharded"];
  const auto want = tensors_of(set);
  for (const fs::path& p : {kFixtures / "sharded", kFixtures / "sharded" / "model.safetensors.index.json"}) {
    CAPTURE(p.string());
    auto c = Checkpoint::open(p.string());
    CHECK(c.files().size() == 3);
    CHECK(c.names().size() == want.size());
    for (const auto& [name, t] : want) {
      check_same(c.get(name), t, name);
      CHECK(fs::path(c.file_of(name).path()).filename().string() == set["weight_map"][name].get<std::string>());
    }
  }
  auto all = load_checkpoint_tensors((kFixtures / "sharded").string(), DType::f32);
  CHECK(all.size() == want.size());
  for (const auto& [name, t] : want) check_same(all.at(name), t.to(DType::f32), name);
  // A single file is a checkpoint too.
  CHECK(load_checkpoint_tensors((kFixtures / "mixed.safetensors").string()).size() == expected()["mixed"]["tensors"].size());
}

TEST_CASE("safetensors: mlr writes files byte-identical to python safetensors and huggingface_hub") {
  // With MLR_SAFETENSORS_EXPORT set (by the fixture script), the files are also left there for
  // python safetensors to load.
  const char* exported = std::getenv("MLR_SAFETENSORS_EXPORT");
  TempDir tmp;
  const fs::path out = exported ? fs::path(exported) : tmp.path;
  const json all = expected();

  save_safetensors((out / "mixed.safetensors").string(), tensors_of(all["mixed"]), metadata_of(all["mixed"]));
  CHECK(slurp(out / "mixed.safetensors") == slurp(kFixtures / "mixed.safetensors"));

  const json set = all["sharded"];
  auto files = save_sharded((out / "sharded").string(), tensors_of(set), set["max_shard_bytes"].get<uint64_t>(),
                            metadata_of(set));
  CHECK(files.size() == 4);
  const json index = json::parse(slurp(out / "sharded" / "model.safetensors.index.json"));
  CHECK(index["weight_map"] == set["weight_map"]);
  CHECK(index["metadata"]["total_size"] == set["total_size"]);
  for (const auto& [name, shard] : set["weight_map"].items()) {
    CAPTURE(shard);
    CHECK(slurp(out / "sharded" / shard.get<std::string>()) ==
          slurp(kFixtures / "sharded" / shard.get<std::string>()));
  }
}

TEST_CASE("safetensors: writer round trip, ordering, atomic replace, single file when it fits") {
  TempDir tmp;
  Generator gen(5);
  Tensor w = randn({3, 5}, gen);
  std::vector<std::pair<std::string, Tensor>> ts = {
      {"z.weight", w.t()},  // non-contiguous: written contiguous
      {"a.bias", randn({3}, gen, DType::bf16)},
      {"m.ids", arange(7)},
      {"émoji 🦙", ones({2}, DType::f16)},
      {"flags", from_vector(std::vector<bool>{true, false, true}, {3})},
  };
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"b", "2"}, {"a", "1"}};
  const std::string path = (tmp.path / "x.safetensors").string();
  save_safetensors(path, ts, meta);
  auto f = SafetensorsFile::open(path);
  CHECK(f.metadata() == meta);
  CHECK((fs::status(path).permissions() & fs::perms::group_read) != fs::perms::none);
  // Wider Rust dtypes first (I64 > F32 > BF16 > F16 > BOOL), names alphabetical within one.
  CHECK(f.names() == std::vector<std::string>{"m.ids", "z.weight", "a.bias", "émoji 🦙", "flags"});
  uint64_t at = 0;
  for (const auto& n : f.names()) {
    CHECK(f.info(n).begin == at);  // contiguous, in header order
    at = f.info(n).end;
  }
  CHECK(at == f.data_bytes());
  for (const auto& [n, t] : ts) check_same(f.get(n), t, n);
  const std::string header = slurp(path).substr(8, f.header_bytes());
  CHECK(header.rfind("{\"__metadata__\":{\"a\":\"1\",\"b\":\"2\",\"format\":\"pt\"}", 0) == 0);

  // Overwriting is atomic: no temporary is left beside it and the new contents are complete.
  save_safetensors(path, {{"only", zeros({2})}});
  CHECK(SafetensorsFile::open(path).names() == std::vector<std::string>{"only"});
  CHECK(std::distance(fs::directory_iterator(tmp.path), fs::directory_iterator()) == 1);

  // save_sharded: shards, then a resave that fits one file removes the stale shards and index.
  const fs::path dir = tmp.path / "ckpt";
  std::vector<std::pair<std::string, Tensor>> big;
  for (int i = 0; i < 5; ++i) big.emplace_back("layer." + std::to_string(i), full({10}, i));  // 40 bytes each
  big.emplace_back("huge", zeros({100}));  // 400 bytes: over the limit, a shard of its own
  auto files = save_sharded(dir.string(), big, 100);
  // [l0 l1] [l2 l3] [l4] [huge]: huge goes out alone, l4 starts a third shard.
  CHECK(files.size() == 5);
  auto c = Checkpoint::open(dir.string());
  CHECK(c.files().size() == 4);
  CHECK(fs::path(c.file_of("huge").path()).filename() == "model-00003-of-00004.safetensors");
  CHECK(fs::path(c.file_of("layer.4").path()).filename() == "model-00004-of-00004.safetensors");
  for (const auto& [n, t] : big) check_same(c.get(n), t, n);
  const json index = json::parse(slurp(dir / "model.safetensors.index.json"));
  CHECK(index["metadata"]["total_size"] == 5 * 40 + 400);
  CHECK(SafetensorsFile::open(c.file_of("huge").path()).metadata().at("format") == "pt");

  files = save_sharded(dir.string(), big, 1 << 20);
  CHECK(files == std::vector<std::string>{(dir / "model.safetensors").string()});
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);
  CHECK(Checkpoint::open(dir.string()).names().size() == big.size());

  CHECK(error_of([&] { save_safetensors(path, {{"a", zeros({1})}, {"a", zeros({1})}}); })
            .find("tensor 'a' is given twice") != std::string::npos);
}

TEST_CASE("safetensors: malformed files get an error naming the file and the tensor") {
  TempDir tmp;
  const fs::path p = tmp.path / "model-00002-of-00003.safetensors";
  auto err = [&](const std::string& bytes) {
    spit(p, bytes);
    return error_of([&] { SafetensorsFile::open(p.string()); });
  };
  auto has = [](const std::string& msg, const std::string& part) {
    CAPTURE(msg);
    CHECK(msg.find(part) != std::string::npos);
  };
  const std::string data16(16, '\0');
  auto entry = [](const std::string& name, const std::string& dtype, const std::string& shape, uint64_t b,
                  uint64_t e) {
    return fmt::format("\"{}\":{{\"dtype\":\"{}\",\"shape\":{},\"data_offsets\":[{},{}]}}", name, dtype, shape, b, e);
  };

  has(err("abc"), "model-00002-of-00003.safetensors: file has 3 bytes, fewer than the 8-byte header length");
  has(err(make_file("{}", "", 1000)), "header length 1000 is beyond the file's 2 bytes");
  has(err(make_file("{\"a\":", "")), "header JSON is invalid at byte 6 of 5");
  has(err(make_file("[1,2]   ", "")), "header is a JSON array, expected an object");
  has(err(make_file("{" + entry("w", "X99", "[2]", 0, 8) + "}", data16)),
      "tensor 'w' has dtype X99, which is not a safetensors dtype");
  has(err(make_file("{" + entry("w", "U8", "[2]", 0, 2) + "}", data16)),
      "tensor 'w' has dtype U8, which mlr does not support");
  has(err(make_file("{" + entry("w", "F32", "[-2]", 0, 8) + "}", data16)),
      "tensor 'w' has shape [-2], expected non-negative integers");
  has(err(make_file("{" + entry("w", "F32", "[2.5]", 0, 8) + "}", data16)), "expected non-negative integers");
  has(err(make_file("{" + entry("w", "F32", "[4294967296,4294967296,4294967296]", 0, 8) + "}", data16)),
      "more elements than fit in 64 bits");
  has(err(make_file("{" + entry("model.layers.17.mlp.up_proj.weight", "F32", "[2]", 8, 24) + "}", data16)),
      "model-00002-of-00003.safetensors: tensor 'model.layers.17.mlp.up_proj.weight' has data_offsets [8, 24) "
      "beyond the file's 16 data bytes (file truncated?)");
  has(err(make_file("{" + entry("w", "F32", "[2]", 8, 4) + "}", data16)), "with end before begin");
  has(err(make_file("{" + entry("w", "F32", "[3]", 0, 8) + "}", data16)),
      "tensor 'w' has data_offsets [0, 8) = 8 bytes, but shape [3] of F32 needs 12 bytes");
  has(err(make_file("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 4, 12) + "}", data16)),
      "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
  has(err(make_file("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("a", "F32", "[2]", 8, 16) + "}", data16)),
      "header lists 'a' twice");
  has(err(make_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", data16)), "tensor 'w' has no \"data_offsets\"");
  has(err(make_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", data16)),
      "tensor 'w' has data_offsets [0], expected [begin, end]");
  has(err(make_file("{\"__metadata__\":{\"k\":1}}", "")), "__metadata__ entry 'k' is a JSON number");
  has(err(make_file("{\"w\":3}", "")), "tensor 'w' is a JSON number, expected an object");
  // A fixture cut short by one byte: the last tensor now ends past the data.
  const std::string good = slurp(kFixtures / "mixed.safetensors");
  has(err(good.substr(0, good.size() - 1)), "(file truncated?)");
  // Header length past the 100 MB limit (a sparse file, so the length check is what fails).
  {
    spit(p, make_file("{}", ""));
    fs::resize_file(p, (200ull << 20));
    std::fstream fs_(p, std::ios::in | std::ios::out | std::ios::binary);
    uint64_t n = 150ull << 20;
    fs_.write(reinterpret_cast<const char*>(&n), 8);
    fs_.close();
    has(error_of([&] { SafetensorsFile::open(p.string()); }), "exceeds the 104857600 byte limit");
  }
  has(error_of([&] { SafetensorsFile::open((tmp.path / "missing.safetensors").string()); }), "cannot open");
  // An empty tensor and an empty header are fine.
  spit(p, make_file("{" + entry("e", "F32", "[0,3]", 0, 0) + "}", ""));
  CHECK(SafetensorsFile::open(p.string()).get("e").shape() == Shape{0, 3});
}

TEST_CASE("safetensors: sharded index errors name the index, the shard and the tensor") {
  TempDir tmp;
  auto copy_fixture = [&] {
    for (const auto& e : fs::directory_iterator(kFixtures / "sharded"))
      fs::copy_file(e.path(), tmp.path / e.path().filename(), fs::copy_options::overwrite_existing);
  };
  auto has = [](const std::string& msg, const std::string& part) {
    CAPTURE(msg);
    CHECK(msg.find(part) != std::string::npos);
  };
  const fs::path index = tmp.path / "model.safetensors.index.json";
  auto open_err = [&] { return error_of([&] { Checkpoint::open(tmp.path.string()); }); };

  copy_fixture();
  fs::remove(tmp.path / "model-00002-of-00003.safetensors");
  has(open_err(), "model.safetensors.index.json: shard model-00002-of-00003.safetensors (holding "
                  "'model.layers.0.input_layernorm.weight' and 2 more tensors) is missing");

  copy_fixture();
  json j = json::parse(slurp(index));
  j["weight_map"]["model.embed_tokens.weight"] = "model-00002-of-00003.safetensors";
  spit(index, j.dump());
  has(open_err(), "tensor 'model.embed_tokens.weight' is mapped to model-00002-of-00003.safetensors but it is in "
                  "model-00001-of-00003.safetensors");

  copy_fixture();
  j = json::parse(slurp(index));
  j["weight_map"]["ghost.weight"] = "model-00001-of-00003.safetensors";
  spit(index, j.dump());
  has(open_err(), "tensor 'ghost.weight' is mapped to model-00001-of-00003.safetensors but no shard holds it");

  copy_fixture();
  j = json::parse(slurp(index));
  j["weight_map"].erase("model.layers.0.self_attn.q_proj.weight");
  spit(index, j.dump());
  has(open_err(), "shard model-00001-of-00003.safetensors holds tensor 'model.layers.0.self_attn.q_proj.weight', "
                  "which the weight_map lacks");

  // The same tensor in two shards.
  copy_fixture();
  save_safetensors((tmp.path / "model-00002-of-00003.safetensors").string(),
                   {{"model.layers.0.mlp.up_proj.weight", zeros({6, 4})}, {"model.norm.weight", zeros({4}, DType::f16)},
                    {"lm_head.weight", zeros({8, 4})}});
  has(open_err(), "tensor 'lm_head.weight' is present in two shards, model-00002-of-00003.safetensors and "
                  "model-00003-of-00003.safetensors");

  copy_fixture();
  spit(index, "{\"weight_map\": {\"a\": \"../etc/passwd\"}}");
  has(open_err(), "expected a file name in the same directory");
  spit(index, "{\"weight_map\": [}");
  has(open_err(), "model.safetensors.index.json: invalid JSON at byte 17");

  TempDir empty;
  has(error_of([&] { Checkpoint::open(empty.path.string()); }),
      "has neither model.safetensors.index.json nor model.safetensors");
}

// Mutations of a valid file: open() either succeeds with offsets inside the data (and every tensor
// reads) or throws mlr::Error. Any other exception fails the test; an out-of-bounds read shows
// under AddressSanitizer or valgrind.
TEST_CASE("safetensors: header parser fuzz") {
  TempDir tmp;
  const fs::path p = tmp.path / "fuzz.safetensors";
  const std::string good = slurp(kFixtures / "mixed.safetensors");
  uint64_t n = 0;
  std::memcpy(&n, good.data(), 8);
  const size_t header_end = 8 + n;
  int opened = 0, rejected = 0;

  auto attempt = [&](const std::string& bytes) {
    // Unlinked first: rewriting a file through truncation makes ext4 flush it to disk each time.
    fs::remove(p);
    spit(p, bytes);
    try {
      auto f = SafetensorsFile::open(p.string());
      ++opened;
      for (const auto& name : f.names()) {
        const auto& info = f.info(name);
        REQUIRE(info.end <= f.data_bytes());
        REQUIRE(info.end - info.begin == static_cast<uint64_t>(shape_numel(info.shape)) * dtype_size(info.dtype));
        Tensor t = f.get(name);
        volatile unsigned char sink = 0;  // touch every byte of the view
        const auto* b = static_cast<const unsigned char*>(t.data_ptr());
        for (size_t i = 0; i < t.nbytes(); ++i) sink = sink ^ b[i];
        (void)sink;
        if (t.is_floating_point()) (void)f.get(name, DType::f32);
      }
    } catch (const Error&) {
      ++rejected;
    }
  };

  // Truncation at every length.
  for (size_t len = 0; len <= good.size(); ++len) attempt(good.substr(0, len));
  std::mt19937_64 rng(20261124);
  const std::string json_chars = "{}[]\",:0123456789-.eE \\u";
  for (int iter = 0; iter < 3000; ++iter) {
    std::string s = good;
    switch (iter % 5) {
      case 0:  // flip bits in 1-4 header bytes
        for (int k = 0, m = 1 + static_cast<int>(rng() % 4); k < m; ++k)
          s[8 + rng() % n] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1:  // a JSON-significant character somewhere in the header
        s[8 + rng() % n] = json_chars[rng() % json_chars.size()];
        break;
      case 2: {  // a random header length: near the real one, within the file, or anything
        uint64_t len = rng() % 3 == 0 ? n + (rng() % 17) - 8 : rng() % 3 == 1 ? rng() % (good.size() + 16) : rng();
        std::memcpy(s.data(), &len, 8);
        break;
      }
      case 3: {  // digits of the offsets and shapes replaced by other digits
        for (int k = 0; k < 3; ++k) {
          size_t at = 8 + rng() % n;
          if (s[at] >= '0' && s[at] <= '9') s[at] = static_cast<char>('0' + rng() % 10);
        }
        s.resize(header_end + rng() % (good.size() - header_end + 1));  // and maybe truncated data
        break;
      }
      case 4:  // a header byte deleted, the length kept
        s.erase(8 + rng() % n, 1);
        break;
    }
    attempt(s);
  }
  MESSAGE(opened << " mutated files opened, " << rejected << " rejected");
  CHECK(opened > 0);
  CHECK(rejected > 0);
}
