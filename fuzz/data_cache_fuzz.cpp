// The tokenized-data cache's index.json (data/cache.cpp), read back by prepare_dataset: the index
// promises shard files, example and token counts, windowed marks and totals, and load_shard reads
// the decompressed arrays with those counts, so a damaged index must be refused before any read.
// A cache of a small Alpaca file is built once; each input is a JSON merge patch (RFC 7386) applied
// to its real index (input that is not JSON is written as the index itself), so the fuzzer spends
// its time on indexes that are nearly valid.
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "data/cache.h"
#include "fuzz/fuzz_support.h"
#include "llama/tokenizer.h"

namespace {

using namespace mlr;

// One id per byte (ids 0..2 left to unk/BOS/EOS): no tokenizer file is needed.
class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<int32_t> encode(const std::string& text, bool add_special) const override {
    std::vector<int32_t> ids;
    if (add_special) ids.push_back(1);
    for (unsigned char c : text) ids.push_back(static_cast<int32_t>(c) + 3);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids, bool) const override {
    std::string out;
    for (int32_t id : ids)
      if (id >= 3) out += static_cast<char>(id - 3);
    return out;
  }
  int32_t vocab_size() const override { return 259; }
  std::optional<int32_t> bos_id() const override { return 1; }
  std::optional<int32_t> eos_id() const override { return 2; }
  std::optional<int32_t> pad_id() const override { return std::nullopt; }
  bool adds_bos() const override { return true; }
  bool adds_eos() const override { return false; }
  std::string id_to_piece(int32_t id) const override { return decode({id}, false); }
  std::string fingerprint() const override { return "bytes-fuzz-v1"; }
};

struct Cache {
  ByteTokenizer tokenizer;
  data::DatasetSpec spec;
  data::CacheOptions options;
  std::filesystem::path index_path;
  nlohmann::json index;
};

Cache& cache() {
  static Cache c = [] {
    Cache c;
    std::string rows;
    for (int i = 0; i < 700; ++i)
      rows += fmt::format(R"({{"instruction": "Count to {}.", "input": "", "output": "{}"}})" "\n", i,
                          std::string(static_cast<size_t>(i % 7 + 1), 'x'));
    c.spec.name = "instr";
    c.spec.format = data::Format::alpaca;
    c.spec.path = fuzz::scratch().write("instr.jsonl", rows);
    c.spec.tmpl = data::default_template(data::Format::alpaca);
    c.options.dir = fuzz::scratch().path() / "cache";
    c.options.threads = 1;
    const auto built = data::prepare_dataset(c.spec, c.tokenizer, c.options);
    c.index_path = built->info().cache_dir / "index.json";
    std::ifstream in(c.index_path);
    std::stringstream text;
    text << in.rdbuf();
    c.index = nlohmann::json::parse(text.str());
    return c;
  }();
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)cache();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Cache& c = cache();
  const std::string_view input = fuzz::as_text(data, size);
  std::string index_text;
  const nlohmann::json patch = nlohmann::json::parse(input, nullptr, /*allow_exceptions=*/false);
  if (patch.is_discarded()) {
    index_text = std::string(input);
  } else {
    nlohmann::json index = c.index;
    index.merge_patch(patch);
    index_text = index.dump();
  }
  {
    std::ofstream out(c.index_path, std::ios::binary | std::ios::trunc);
    out << index_text;
  }
  data::CacheOptions no_rebuild = c.options;
  fuzz::expect_clean_rejection([&] { (void)data::prepare_dataset(c.spec, c.tokenizer, no_rebuild); });
  return 0;
}
