// mlr-data: build the tokenised cache of a data mixture and inspect it.
//
//   mlr-data prepare mixture.yaml                  tokenise and cache every dataset (reused next time)
//   mlr-data inspect mixture.yaml --batches 200    counts, tokens, truncations, realised mixture,
//                                                  rendered examples with the loss-free part marked
//   mlr-data inspect --tokenizer tok.model --dataset boolq,boolq,val.jsonl --dataset ...
//
// The mixture file format is described in data/README.md.
#include <cstdio>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "data/config.h"
#include "data/report.h"
#include "llama/tokenizer.h"
#include "tensor/error.h"

namespace {

struct Overrides {
  std::string config, tokenizer, cache_dir, mode, truncation, tokenizer_backend = "transformers";
  std::vector<std::string> datasets;  // name,format,path[,weight]
  int threads = -1;
  int64_t seq_len = 0, batch_rows = 0, seed = -1;
  bool rebuild = false, skip_bad = false, drop_overlong = false;
};

void add_common(CLI::App& cmd, Overrides& o) {
  cmd.add_option("config", o.config, "mixture YAML file (data/README.md)");
  cmd.add_option("--tokenizer", o.tokenizer, "tokenizer file or checkpoint directory (overrides the config)");
  cmd.add_option("--tokenizer-backend", o.tokenizer_backend,
                 "transformers (default: transformers' AutoTokenizer tokens) or sentencepiece (the sentencepiece "
                 "library's own tokens of tokenizer.model)");
  cmd.add_option("--dataset", o.datasets, "name,format,path[,weight]: a dataset without a config file (repeatable)");
  cmd.add_option("--cache-dir", o.cache_dir, "where the tokenised shards go");
  cmd.add_option("--threads", o.threads, "tokenising threads (0: all cores)");
  cmd.add_option("--seq-len", o.seq_len, "packed row length");
  cmd.add_option("--batch-rows", o.batch_rows, "rows per batch");
  cmd.add_option("--mode", o.mode, "mixing: weights, proportional or temperature");
  cmd.add_option("--seed", o.seed, "mixture seed");
  cmd.add_flag("--skip-bad", o.skip_bad, "skip malformed rows (counted) instead of failing");
  cmd.add_flag("--rebuild", o.rebuild, "tokenise again even when a valid cache exists");
  cmd.add_option("--truncation", o.truncation, "right (cut the end) or left (cut the prompt's start)");
  cmd.add_flag("--drop-overlong", o.drop_overlong, "drop (counted) examples whose prompt fills seq_len");
}

mlr::data::DataConfig make_config(const Overrides& o) {
  using namespace mlr::data;
  DataConfig c;
  if (!o.config.empty()) {
    c = load_data_config(o.config);
  }
  for (const std::string& item : o.datasets) {
    std::vector<std::string> parts;
    std::stringstream ss(item);
    for (std::string p; std::getline(ss, p, ',');) parts.push_back(p);
    MLR_CHECK(parts.size() == 3 || parts.size() == 4, "mlr-data: --dataset '{}': expected name,format,path[,weight]", item);
    DatasetSpec spec;
    spec.name = parts[0];
    spec.format = parse_format(parts[1]);
    spec.path = parts[2];
    spec.tmpl = default_template(spec.format);
    MixtureSource source{spec.name};
    if (parts.size() == 4) source.weight = std::stod(parts[3]);
    c.datasets.push_back(std::move(spec));
    c.sources.push_back(std::move(source));
  }
  MLR_CHECK(!c.datasets.empty(), "mlr-data: no datasets: give a mixture YAML file or --dataset name,format,path");
  if (!o.tokenizer.empty()) c.tokenizer = o.tokenizer;
  MLR_CHECK(!c.tokenizer.empty(), "mlr-data: no tokenizer: set 'tokenizer' in the config or pass --tokenizer");
  if (!o.cache_dir.empty()) c.cache.dir = o.cache_dir;
  if (o.threads >= 0) c.cache.threads = o.threads;
  c.cache.rebuild = o.rebuild;
  if (o.seq_len > 0) c.loader.pack.seq_len = o.seq_len;
  if (o.batch_rows > 0) c.loader.batch_rows = o.batch_rows;
  if (!o.mode.empty()) c.mixture.mode = parse_mix_mode(o.mode);
  if (o.seed >= 0) c.mixture.seed = static_cast<uint64_t>(o.seed);
  if (!o.truncation.empty()) c.loader.truncation = parse_truncation(o.truncation);
  if (o.drop_overlong) c.loader.drop_overlong = true;
  if (o.skip_bad) {
    for (auto& d : c.datasets) d.skip_bad = true;
  }
  validate_data_config(c);
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mlr-data: tokenised data mixtures (prepare the cache, inspect a mixture)"};
  app.require_subcommand(1);
  Overrides prepare_opts, inspect_opts;
  mlr::data::InspectOptions inspect;
  CLI::App* prepare = app.add_subcommand("prepare", "tokenise and cache every dataset of the mixture");
  add_common(*prepare, prepare_opts);
  CLI::App* inspect_cmd = app.add_subcommand("inspect", "counts, tokens, truncations, realised mixture, rendered examples");
  add_common(*inspect_cmd, inspect_opts);
  inspect_cmd->add_option("--batches", inspect.batches, "loader batches drawn to measure the realised mixture");
  inspect_cmd->add_option("--examples", inspect.examples, "examples to render from the first batch");
  CLI11_PARSE(app, argc, argv);

  try {
    const bool is_prepare = prepare->parsed();
    const Overrides& opts = is_prepare ? prepare_opts : inspect_opts;
    const auto config = make_config(opts);
    const auto tokenizer =
        mlr::load_tokenizer(config.tokenizer, mlr::parse_tokenizer_backend(opts.tokenizer_backend));
    const auto datasets = mlr::data::prepare_all(config, *tokenizer);
    fmt::print("tokenizer {} ({}, {} tokens), cache {}\n", config.tokenizer, tokenizer->fingerprint(),
               mlr::tokenizer_backend_name(tokenizer->backend()), config.cache.dir.string());
    mlr::data::write_dataset_table(std::cout, config, datasets);
    if (!is_prepare) mlr::data::write_mixture_report(std::cout, config, datasets, *tokenizer, inspect);
    std::cout.flush();
    return 0;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
