// Data pipeline throughput on the real files of ../shared (or paths given on the command line):
//   1. tokenise-and-cache (read, render, tokenise, compress, write) with 1 and 2 threads;
//   2. loader rate from the cache on one core (prefetch off: the calling thread does all the
//      work), packed rows of 2048 tokens, in tokens per second (row slots and real tokens).
// Usage: data_bench [shared_dir] [tokenizer]
#include <chrono>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "data/loader.h"
#include "llama/tokenizer.h"

namespace fs = std::filesystem;
using namespace mlr::data;

int main(int argc, char** argv) {
  const fs::path shared = argc > 1 ? fs::path(argv[1]) : fs::path("../shared");
  const std::string tokenizer_path = argc > 2 ? argv[2] : (shared / "models/llama-tokenizer/tokenizer.model").string();
  if (!fs::exists(shared / "data/boolq/val.jsonl") || !fs::exists(tokenizer_path)) {
    std::printf("data_bench: %s or the tokenizer is absent; pass the shared directory\n", shared.c_str());
    return 1;
  }
  const auto tok = mlr::load_tokenizer(tokenizer_path);
  const std::vector<std::tuple<std::string, Format, fs::path>> sets = {
      {"boolq", Format::boolq, shared / "data/boolq/val.jsonl"},
      {"alpaca", Format::alpaca, shared / "data/alpaca/alpaca_data_5000_subset.json"},
      {"mmlu", Format::mmlu, shared / "data/mmlu/test"},
  };
  const fs::path cache = fs::temp_directory_path() / fmt::format("mlr_data_bench_{}", ::getpid());
  std::vector<std::shared_ptr<const TokenizedDataset>> datasets;
  std::vector<MixtureSource> sources;
  fmt::print("{:<8} {:>8} {:>10} {:>14} {:>14}\n", "dataset", "examples", "tokens", "1 thread tok/s", "2 threads tok/s");
  for (const auto& [name, format, path] : sets) {
    DatasetSpec spec{name, format, path, default_template(format)};
    spec.tokenize.eos = Special::always;
    double rate[2] = {0, 0};
    std::shared_ptr<const TokenizedDataset> ds;
    for (int threads : {1, 2}) {
      ds = prepare_dataset(spec, *tok, {.dir = cache, .threads = threads, .rebuild = true});
      rate[threads - 1] = static_cast<double>(ds->num_tokens()) / ds->info().seconds;
    }
    fmt::print("{:<8} {:>8} {:>10} {:>14.0f} {:>14.0f}\n", name, ds->size(), ds->num_tokens(), rate[0], rate[1]);
    datasets.push_back(ds);
    sources.push_back({name});
  }

  LoaderOptions options;
  options.batch_rows = 8;
  options.pack.seq_len = 2048;
  options.truncation = Truncation::left;
  options.prefetch = 0;
  Loader loader(datasets, sources, {.mode = MixMode::proportional, .seed = 1}, options);
  const int batches = 2000;
  int64_t real = 0, slots = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int b = 0; b < batches; ++b) {
    const Batch batch = loader.next();
    real += batch.real_tokens;
    slots += batch.size();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print("\nloader from cache, one core, {} batches of 8 x 2048: {:.0f} row tokens/s ({:.0f} real tokens/s, fill {:.1f}%)\n",
             batches, static_cast<double>(slots) / seconds, static_cast<double>(real) / seconds,
             100.0 * static_cast<double>(real) / static_cast<double>(slots));
  std::error_code ec;
  fs::remove_all(cache, ec);
  return 0;
}
