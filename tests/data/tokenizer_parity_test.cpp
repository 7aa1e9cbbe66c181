// Token parity with transformers over every text field of every shared data file (BoolQ,
// SuperGLUE, MMLU, Alpaca): the hashes that scripts/fixtures/make_tokenizer_parity_fixture.py
// recorded from transformers.AutoTokenizer (rows, fields and hashes are defined in its docstring)
// recomputed from mlr's tokenizer, for the LLaMA tokenizer and stories260K's tok512.model, each
// with a tokenizer_config.json naming LlamaTokenizer. Skips when ../shared is absent.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/csv.h"
#include "llama/tokenizer.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const fs::path kShared = fs::path(MLR_SOURCE_DIR).parent_path() / "shared";
const fs::path kFixture = fs::path(MLR_SOURCE_DIR) / "tests/fixtures/tokenizer/parity/shared_data_parity.json";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Fnv {
  uint64_t h = 0xcbf29ce484222325ull;
  void bytes(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) {
      h ^= p[i];
      h *= 0x100000001b3ull;
    }
  }
  // Little-endian, as the script packs them (this machine is little-endian; checked below).
  void i32(int32_t v) { bytes(&v, 4); }
  void u64(uint64_t v) { bytes(&v, 8); }
};

void fields_of(const json& v, std::vector<std::string>& out) {
  if (v.is_string()) {
    out.push_back(v.get<std::string>());
  } else if (v.is_object()) {  // nlohmann orders keys bytewise, as Python's sorted() on str
    for (const auto& [key, value] : v.items()) fields_of(value, out);
  } else if (v.is_array()) {
    for (const json& e : v) fields_of(e, out);
  }
}

std::vector<std::vector<std::string>> rows_of(const fs::path& path) {
  std::vector<std::vector<std::string>> rows;
  const std::string text = slurp(path);
  if (path.extension() == ".jsonl") {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      fields_of(json::parse(line), rows.emplace_back());
    }
  } else if (path.extension() == ".json") {
    for (const json& e : json::parse(text)) fields_of(e, rows.emplace_back());
  } else {
    for (auto& record : mlr::data::parse_csv(text, path.string())) rows.push_back(std::move(record.fields));
  }
  return rows;
}

}  // namespace

TEST_CASE("tokenizer parity with transformers over every shared data file" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(fs::exists(kShared / "data") && fs::exists(kShared / "models"), "../shared/data or ../shared/models is absent");
  const uint32_t one = 1;
  unsigned char first_byte;
  std::memcpy(&first_byte, &one, 1);
  REQUIRE(first_byte == 1);  // the hashes pack integers little-endian

  const json fixture = json::parse(slurp(kFixture));
  REQUIRE(fixture["tokenizers_under_test"].size() == 2);
  for (const auto& [name, spec] : fixture["tokenizers_under_test"].items()) {
    CAPTURE(name);
    TempDir dir;
    fs::copy_file(kShared / spec["model"].get<std::string>(), dir.path / "tokenizer.model");
    std::ofstream(dir.path / "tokenizer_config.json") << spec["tokenizer_config"].dump();
    const auto tok = mlr::load_tokenizer(dir.path.string());
    CHECK(tok->fingerprint().starts_with("spbpe-"));
    CHECK(tok->adds_bos());
    int64_t files = 0, rows_total = 0;
    for (const auto& [rel, expected] : fixture["files"][name].items()) {
      CAPTURE(rel);
      const auto rows = rows_of(kShared / "data" / rel);
      REQUIRE(static_cast<int64_t>(rows.size()) == expected["rows"].get<int64_t>());
      const std::string row_hashes = expected["row_hashes"];
      Fnv file_hash;
      int64_t differing = 0;
      for (size_t r = 0; r < rows.size(); ++r) {
        Fnv row;
        for (const std::string& field : rows[r]) {
          const auto ids = tok->encode(field);
          row.i32(static_cast<int32_t>(ids.size()));
          for (int32_t id : ids) row.i32(id);
          const std::string decoded = tok->decode(ids);
          row.bytes(decoded.data(), decoded.size());
          row.bytes("\xff", 1);
        }
        file_hash.u64(row.h);
        char hex[5];
        std::snprintf(hex, sizeof hex, "%04x", static_cast<unsigned>(row.h & 0xFFFF));
        if (row_hashes.compare(r * 4, 4, hex) != 0 && ++differing <= 3) {
          CAPTURE(r);
          CAPTURE(rows[r].empty() ? std::string() : rows[r][0].substr(0, 200));
          CHECK_MESSAGE(false, "row differs from transformers");
        }
      }
      char hex[17];
      std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(file_hash.h));
      CHECK(std::string(hex) == expected["hash"].get<std::string>());
      CHECK(differing == 0);
      ++files;
      rows_total += static_cast<int64_t>(rows.size());
    }
    MESSAGE(name << ": " << files << " files, " << rows_total << " rows identical to transformers "
                 << fixture["transformers"].get<std::string>());
    CHECK(files >= 190);
  }
}
