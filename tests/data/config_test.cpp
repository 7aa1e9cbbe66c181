// The mixture YAML: every key read, relative paths resolved against the file, template overrides,
// and errors naming the file, line and key. Plus the inspect report on the committed fixture.
#include <sstream>

#include "data/config.h"
#include "data/report.h"
#include "tests/data/data_test_util.h"

using namespace mlr::data;
using namespace mlr::data::test;

TEST_CASE("config: a full mixture file") {
  const std::string yaml = R"(
tokenizer: models/tok.model
cache_dir: /tmp/cache
seed: 17
threads: 2
mixture: {mode: temperature, temperature: 2.5, rate_limit: 3000, shuffle: false}
packing: {seq_len: 1024, batch_rows: 4, packed: false, train_on_prompt: true, truncation: left, drop_overlong: true, pad_id: 2, prefetch: 1}
datasets:
  - name: instr
    format: alpaca
    path: alpaca.json
    eos: true
    bos: "false"
    epochs: 2
  - format: boolq
    path: /abs/boolq.jsonl
    weight: 0.5
    max_examples: 1000
    skip_bad: true
    template:
      prompt: "{{passage}}\nQ: {{question}}?\nA:"
      choices: ["false", "true"]
)";
  const DataConfig c = parse_data_config(yaml, "mix.yaml", "/data/runs");
  CHECK(c.tokenizer == "/data/runs/models/tok.model");
  CHECK(c.cache.dir == "/tmp/cache");
  CHECK(c.cache.threads == 2);
  CHECK(c.mixture.seed == 17);
  CHECK(c.mixture.mode == MixMode::temperature);
  CHECK(c.mixture.temperature == 2.5);
  CHECK(c.mixture.rate_limit == 3000);
  CHECK(!c.mixture.shuffle);
  CHECK(c.loader.pack.seq_len == 1024);
  CHECK(c.loader.batch_rows == 4);
  CHECK(!c.loader.pack.packed);
  CHECK(c.loader.pack.train_on_prompt);
  CHECK(c.loader.truncation == Truncation::left);
  CHECK(c.loader.drop_overlong);
  CHECK(c.loader.pack.pad_id == 2);
  CHECK(c.loader.prefetch == 1);
  REQUIRE(c.datasets.size() == 2);
  CHECK(c.datasets[0].name == "instr");
  CHECK(c.datasets[0].path == "/data/runs/alpaca.json");
  CHECK(c.datasets[0].tokenize.eos == Special::always);
  CHECK(c.datasets[0].tokenize.bos == Special::never);
  CHECK(c.datasets[0].tmpl.canonical() == default_template(Format::alpaca).canonical());
  CHECK(c.sources[0].epochs == 2);
  CHECK(c.datasets[1].name == "boolq");  // the format's name by default
  CHECK(c.datasets[1].path == "/abs/boolq.jsonl");
  CHECK(c.datasets[1].skip_bad);
  CHECK(c.datasets[1].tmpl.prompt == "{{passage}}\nQ: {{question}}?\nA:");
  CHECK(c.datasets[1].tmpl.choices == std::vector<std::string>{"false", "true"});
  CHECK(c.datasets[1].tmpl.target_delimiter == " ");
  CHECK(c.sources[1].weight == 0.5);
  CHECK(c.sources[1].max_examples == 1000);
}

TEST_CASE("config: errors name the file, line and key") {
  const auto error = [](const std::string& yaml) { return error_of([&] { parse_data_config(yaml, "mix.yaml", "/d"); }); };
  CHECK(error("datasets:\n  - {format: boolq, path: x, wieght: 2}\n").find("mix.yaml:2: unknown key 'datasets[0].wieght'") !=
        std::string::npos);
  CHECK(error("datasets:\n  - {format: squad, path: x}\n").find("mix.yaml:2: 'datasets[0].format': unknown dataset format 'squad'") !=
        std::string::npos);
  CHECK(error("packing:\n  seq_len: long\ndatasets: [{format: boolq, path: x}]\n")
            .find("mix.yaml:2: 'packing.seq_len' is \"long\", expected an integer") != std::string::npos);
  CHECK(error("datasets:\n  - {format: boolq, path: x, weight: -1}\n").find("'datasets[0].weight' is -1, expected >= 0") !=
        std::string::npos);
  CHECK(error("datasets: []\n").find("'datasets' must be a non-empty list") != std::string::npos);
  CHECK(error("seed: 1\n").find("'datasets' must be a non-empty list") != std::string::npos);
  CHECK(error("datasets:\n  - {format: boolq}\n").find("mix.yaml:2: 'datasets[0].path' is missing") != std::string::npos);
  CHECK(error("datasets:\n  - {format: boolq, path: a}\n  - {format: boolq, path: b}\n")
            .find("two datasets are named 'boolq'") != std::string::npos);
  CHECK(error("datasets:\n  - {format: boolq, path: a, weight: 0}\nmixture: {mode: weights}\n")
            .find("every dataset has weight 0") != std::string::npos);
  CHECK(error("datasets:\n  - format: boolq\n    path: a\n    template:\n      prompt: \"{{pasage}}\"\n")
            .find("mix.yaml:5: dataset 'boolq': template prompt: unknown field {{pasage}}") != std::string::npos);
  CHECK(error("datasets: [{format: boolq, path: a}\n").find("mix.yaml:") != std::string::npos);  // malformed YAML
  CHECK(error("packing: {truncation: middle}\ndatasets: [{format: boolq, path: a}]\n")
            .find("'packing.truncation': 'middle' is not a truncation side") != std::string::npos);
}

TEST_CASE("report: the committed fixture mixture, end to end") {
  const fs::path yaml = fs::path(MLR_SOURCE_DIR) / "tests" / "fixtures" / "data" / "mixture.yaml";
  DataConfig config = load_data_config(yaml);
  TempDir tmp;
  config.cache.dir = tmp.path / "cache";
  const auto tokenizer = mlr::load_tokenizer(config.tokenizer);
  const auto datasets = prepare_all(config, *tokenizer);
  REQUIRE(datasets.size() == 3);
  CHECK(datasets[0]->size() == 6);
  CHECK(datasets[1]->size() == 4);
  CHECK(datasets[2]->size() == 3);
  std::ostringstream table, mixture;
  write_dataset_table(table, config, datasets);
  CHECK(table.str().find("boolq                    6       0") != std::string::npos);
  write_mixture_report(mixture, config, datasets, *tokenizer, {.batches = 40, .examples = 2});
  const std::string m = mixture.str();
  // weights 2 : 1 : 1
  CHECK(m.find("boolq                50.00%") != std::string::npos);
  CHECK(m.find("alpaca               25.00%") != std::string::npos);
  CHECK(m.find("--- ") != std::string::npos);
  CHECK(m.find("  masked | ") != std::string::npos);
  CHECK(m.find("  target | ") != std::string::npos);
}
