// The tokenised cache: built once, reused without tokenising on the next prepare with identical
// contents, keyed by source contents + template + tokenizer + BOS/EOS, and a damaged shard is an
// error naming the file.
#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "data/cache.h"
#include "tests/data/data_test_util.h"

using namespace mlr::data;
using namespace mlr::data::test;

namespace {

std::string alpaca_rows(int n, int offset = 0) {
  std::string text;
  for (int i = 0; i < n; ++i) {
    text += fmt::format(R"({{"instruction": "Count to {}.", "input": "{}", "output": "{}"}})" "\n", i + offset,
                        i % 3 == 0 ? "" : "fast", std::string(static_cast<size_t>(i % 7 + 1), 'x'));
  }
  return text;
}

DatasetSpec alpaca_spec(const fs::path& path) {
  DatasetSpec spec;
  spec.name = "instr";
  spec.format = Format::alpaca;
  spec.path = path;
  spec.tmpl = default_template(Format::alpaca);
  return spec;
}

void check_same(const TokenizedDataset& a, const TokenizedDataset& b) {
  REQUIRE(a.size() == b.size());
  CHECK(a.num_tokens() == b.num_tokens());
  CHECK(a.num_target_tokens() == b.num_target_tokens());
  for (int64_t i = 0; i < a.size(); ++i) {
    REQUIRE(a.length(i) == b.length(i));
    CHECK(std::equal(a.ids(i).begin(), a.ids(i).end(), b.ids(i).begin()));
    CHECK(std::equal(a.mask(i).begin(), a.mask(i).end(), b.mask(i).begin()));
    CHECK(a.location(i) == b.location(i));
    CHECK(a.first_target(i) == b.first_target(i));
  }
}

std::vector<fs::path> shard_files(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".zst") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("cache: a second prepare reads the shards and gives identical data") {
  TempDir tmp;
  const auto file = tmp.write("instr.jsonl", alpaca_rows(1000));
  const ByteTokenizer tok;
  const CacheOptions options{.dir = tmp.path / "cache", .threads = 2};
  const auto first = prepare_dataset(alpaca_spec(file), tok, options);
  CHECK(!first->info().from_cache);
  CHECK(first->info().tokenized == 1000);
  CHECK(first->size() == 1000);
  CHECK(first->location(999) == file.string() + ":1000");
  // Spot-check one example against a direct tokenisation.
  const ReadResult rows = read_records(Format::alpaca, file);
  const CompiledTemplate tmpl(default_template(Format::alpaca), Format::alpaca, "instr");
  const TokenizedExample direct = tokenize_example(tok, tmpl.render(rows.records[500], "x"), resolve_specials(tok, {}));
  CHECK(std::equal(direct.ids.begin(), direct.ids.end(), first->ids(500).begin(), first->ids(500).end()));
  CHECK(std::equal(direct.mask.begin(), direct.mask.end(), first->mask(500).begin(), first->mask(500).end()));

  const fs::path dir = first->info().cache_dir;
  CHECK(fs::exists(dir / "index.json"));
  CHECK(shard_files(dir).size() >= 2);  // 1000 rows at >= 256 per shard

  const auto second = prepare_dataset(alpaca_spec(file), tok, options);
  CHECK(second->info().from_cache);
  CHECK(second->info().tokenized == 0);
  CHECK(second->info().cache_dir == dir);
  check_same(*first, *second);

  // --rebuild tokenises again into the same directory, with the same result.
  CacheOptions rebuild = options;
  rebuild.rebuild = true;
  const auto third = prepare_dataset(alpaca_spec(file), tok, rebuild);
  CHECK(!third->info().from_cache);
  check_same(*first, *third);
}

TEST_CASE("cache: the key follows contents, template, tokenizer and BOS/EOS") {
  TempDir tmp;
  const auto file = tmp.write("instr.jsonl", alpaca_rows(10));
  const ByteTokenizer tok;
  const DatasetSpec spec = alpaca_spec(file);
  const std::string key = cache_key(spec, tok);
  CHECK(key.size() == 16);
  CHECK(cache_key(spec, tok) == key);

  std::set<std::string> keys = {key};
  DatasetSpec other_template = spec;
  other_template.tmpl.target_delimiter = " ";
  keys.insert(cache_key(other_template, tok));
  DatasetSpec other_eos = spec;
  other_eos.tokenize.eos = Special::always;
  keys.insert(cache_key(other_eos, tok));
  class OtherVocabulary : public ByteTokenizer {
    std::string fingerprint() const override { return "bytes-test-v2"; }
  };
  keys.insert(cache_key(spec, OtherVocabulary()));
  // Same size, one byte changed.
  std::string text = read_text(file);
  text[text.find("Count")] = 'c';
  tmp.write("instr.jsonl", text);
  keys.insert(cache_key(spec, tok));
  CHECK(keys.size() == 5);
  // BOS "auto" and "true" resolve to the same tokens for a tokenizer that adds BOS: same key.
  tmp.write("instr.jsonl", alpaca_rows(10));
  DatasetSpec explicit_bos = spec;
  explicit_bos.tokenize.bos = Special::always;
  CHECK(cache_key(explicit_bos, tok) == key);
}

TEST_CASE("cache: a damaged shard or index is an error naming the file") {
  TempDir tmp;
  const auto file = tmp.write("instr.jsonl", alpaca_rows(600));
  const ByteTokenizer tok;
  const CacheOptions options{.dir = tmp.path / "cache", .threads = 1};
  const auto built = prepare_dataset(alpaca_spec(file), tok, options);
  const fs::path dir = built->info().cache_dir;
  const fs::path shard = shard_files(dir).at(1);
  const std::string original = read_text(shard);

  // One flipped byte inside the compressed data: the frame checksum catches it.
  std::string flipped = original;
  flipped[flipped.size() / 2] ^= 0x5a;
  tmp.write(fs::relative(shard, tmp.path).string(), flipped);
  std::string error = error_of([&] { prepare_dataset(alpaca_spec(file), tok, options); });
  CHECK_MESSAGE(error.find(shard.string()) != std::string::npos, error);
  CHECK(error.find("prepare with --rebuild") != std::string::npos);

  // Truncated.
  tmp.write(fs::relative(shard, tmp.path).string(), original.substr(0, original.size() / 3));
  error = error_of([&] { prepare_dataset(alpaca_spec(file), tok, options); });
  CHECK_MESSAGE(error.find(shard.string()) != std::string::npos, error);

  // An index whose counts would wrap the shard's size computation, or that marks a windowed example
  // the shard does not have: errors, never a read past the buffer.
  tmp.write(fs::relative(shard, tmp.path).string(), original);
  const std::string index_text = read_text(dir / "index.json");
  nlohmann::json index = nlohmann::json::parse(index_text);
  index["shards"][1]["n_examples"] = (uint64_t{1} << 62) + 1;
  tmp.write(fs::relative(dir / "index.json", tmp.path).string(), index.dump());
  error = error_of([&] { prepare_dataset(alpaca_spec(file), tok, options); });
  CHECK_MESSAGE(error.find("more than a shard holds") != std::string::npos, error);
  index = nlohmann::json::parse(index_text);
  index["shards"][1]["windowed"] = {100000};
  tmp.write(fs::relative(dir / "index.json", tmp.path).string(), index.dump());
  error = error_of([&] { prepare_dataset(alpaca_spec(file), tok, options); });
  CHECK_MESSAGE(error.find("as windowed") != std::string::npos, error);
  index = nlohmann::json::parse(index_text);
  index["shards"][1]["n_tokens"] = "many";
  tmp.write(fs::relative(dir / "index.json", tmp.path).string(), index.dump());
  error = error_of([&] { prepare_dataset(alpaca_spec(file), tok, options); });
  CHECK_MESSAGE(error.find("\"n_tokens\" is \"many\", expected a count") != std::string::npos, error);
  index["shards"][1]["n_tokens"] = 4.00061e+21;  // found by fuzz/data_cache_fuzz.cpp: a cast with undefined behaviour
  tmp.write(fs::relative(dir / "index.json", tmp.path).string(), index.dump());
  error = error_of([&] { prepare_dataset(alpaca_spec(file), tok, options); });
  CHECK_MESSAGE(error.find("expected a count") != std::string::npos, error);
  index = nlohmann::json::parse(index_text);
  index["shards"][1]["windowed"] = {-1};
  tmp.write(fs::relative(dir / "index.json", tmp.path).string(), index.dump());
  error = error_of([&] { prepare_dataset(alpaca_spec(file), tok, options); });
  CHECK_MESSAGE(error.find("as windowed") != std::string::npos, error);
  tmp.write(fs::relative(dir / "index.json", tmp.path).string(), index_text);

  // A missing shard and a broken index.
  fs::remove(shard);
  CHECK(error_of([&] { prepare_dataset(alpaca_spec(file), tok, options); }).find("cannot open " + shard.string()) !=
        std::string::npos);
  tmp.write(fs::relative(dir / "index.json", tmp.path).string(), "{\"version\": 1, ");
  CHECK(error_of([&] { prepare_dataset(alpaca_spec(file), tok, options); }).find("unreadable index") != std::string::npos);

  // --rebuild repairs it.
  CacheOptions rebuild = options;
  rebuild.rebuild = true;
  check_same(*built, *prepare_dataset(alpaca_spec(file), tok, rebuild));
  CHECK(prepare_dataset(alpaca_spec(file), tok, options)->info().from_cache);
}

TEST_CASE("cache: skipped rows are counted and remembered; empty datasets are errors") {
  TempDir tmp;
  const auto file = tmp.write("mixed.jsonl", alpaca_rows(5) + "{\"instruction\": 1, \"output\": \"x\"}\nnot json\n" + alpaca_rows(2, 5));
  const ByteTokenizer tok;
  const CacheOptions options{.dir = tmp.path / "cache", .threads = 2};
  DatasetSpec spec = alpaca_spec(file);
  CHECK(error_of([&] { prepare_dataset(spec, tok, options); }).find("mixed.jsonl:6: field \"instruction\" is a number") !=
        std::string::npos);
  spec.skip_bad = true;
  const auto built = prepare_dataset(spec, tok, options);
  CHECK(built->size() == 7);
  CHECK(built->num_bad() == 2);
  CHECK(built->location(5) == file.string() + ":8");
  const auto loaded = prepare_dataset(spec, tok, options);
  CHECK(loaded->info().from_cache);
  CHECK(loaded->num_bad() == 2);
  REQUIRE(loaded->bad_messages().size() == 2);
  CHECK(loaded->bad_messages()[1].find("mixed.jsonl:7: broken JSON") != std::string::npos);

  const auto empty = tmp.write("empty.jsonl", "\n\n");
  CHECK(error_of([&] { prepare_dataset(alpaca_spec(empty), tok, options); }).find("dataset 'instr': no examples in") !=
        std::string::npos);
  const auto all_bad = tmp.write("bad.jsonl", "{}\n{}\n");
  DatasetSpec bad_spec = alpaca_spec(all_bad);
  bad_spec.skip_bad = true;
  CHECK(error_of([&] { prepare_dataset(bad_spec, tok, options); }).find("all 2 rows were malformed and skipped") !=
        std::string::npos);
}

TEST_CASE("cache: real BoolQ validation with the LLaMA tokenizer" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(shared_data_present(), "../shared/data is absent");
  MLR_SKIP_UNLESS(shared_tokenizer_present(), "../shared/models/llama-tokenizer is absent");
  TempDir tmp;
  const auto tok = mlr::load_tokenizer((kSharedModels / "llama-tokenizer" / "tokenizer.model").string());
  DatasetSpec spec;
  spec.name = "boolq";
  spec.format = Format::boolq;
  spec.path = kSharedData / "boolq" / "val.jsonl";
  spec.tmpl = default_template(Format::boolq);
  const CacheOptions options{.dir = tmp.path / "cache", .threads = 2};
  const auto built = prepare_dataset(spec, *tok, options);
  CHECK(built->size() == 3270);
  const auto loaded = prepare_dataset(spec, *tok, options);
  CHECK(loaded->info().from_cache);
  check_same(*built, *loaded);
  // Every example: BOS first, the target is " no" or " yes" (one token each), at the end.
  int64_t yes = 0;
  for (int64_t i = 0; i < loaded->size(); ++i) {
    const auto ids = loaded->ids(i);
    CHECK(ids[0] == 1);
    CHECK(loaded->first_target(i) == loaded->length(i) - 1);
    yes += tok->id_to_piece(ids.back()) == "\xe2\x96\x81yes";
  }
  CHECK(yes == 2033);
  MESSAGE("boolq val: " << built->num_tokens() << " tokens, tokenised in " << built->info().seconds << " s, loaded in "
                        << loaded->info().seconds << " s");
}

TEST_CASE("cache: huge texts are stored as windows; longer rows rebuild the cache, shorter ones reuse it") {
  TempDir tmp;
  const ByteTokenizer tok;
  std::string huge;
  while (huge.size() < 200000) huge += "many words in a row ";
  const fs::path file = tmp.write("big.jsonl", alpaca_rows(3) + R"({"instruction": ")" + huge + R"(", "output": "end"})" "\n");
  const DatasetSpec spec = alpaca_spec(file);
  const auto built = prepare_dataset(spec, tok, {.dir = tmp.path / "cache", .threads = 1, .max_row_tokens = 512});
  REQUIRE(built->size() == 4);
  CHECK(!built->windowed(0));
  CHECK(built->windowed(3));
  CHECK(built->length(3) < 20000);  // the head and tail windows, not 200000 byte tokens
  CHECK(built->length(0) == prepare_dataset(spec, tok, {.dir = tmp.path / "plain", .threads = 1})->length(0));

  const auto shorter = prepare_dataset(spec, tok, {.dir = tmp.path / "cache", .threads = 1, .max_row_tokens = 256});
  CHECK(shorter->info().from_cache);
  CHECK(shorter->windowed(3));
  const auto longer = prepare_dataset(spec, tok, {.dir = tmp.path / "cache", .threads = 1, .max_row_tokens = 4096});
  CHECK(!longer->info().from_cache);
  CHECK(longer->info().note.find("rebuilt") != std::string::npos);
  CHECK(longer->length(3) > built->length(3));
  const auto unbounded = prepare_dataset(spec, tok, {.dir = tmp.path / "cache", .threads = 1});
  CHECK(!unbounded->info().from_cache);
  CHECK(!unbounded->windowed(3));
  CHECK(unbounded->length(3) > 200000);
}
