#include "data/report.h"

#include <algorithm>
#include <ostream>

#include <fmt/format.h>
#include <fmt/ostream.h>

#include "data/text.h"

namespace mlr::data {

namespace {

// Text for one line of the report: newlines and tabs shown as escapes, at most max bytes.
std::string one_line(std::string_view s, size_t max = 400) { return preview(s, max); }

// Decoded text of ids[begin, end) as it reads in context: the decoding of the prefix up to end
// minus that of the prefix up to begin (so a leading space that a tokenizer only shows inside a
// text is kept).
std::string decode_span(const Tokenizer& tok, const std::vector<int32_t>& ids, size_t begin, size_t end) {
  const std::string before = tok.decode(std::vector<int32_t>(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(begin)), false);
  const std::string upto = tok.decode(std::vector<int32_t>(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(end)), false);
  if (upto.compare(0, before.size(), before) == 0) return upto.substr(before.size());
  return tok.decode(std::vector<int32_t>(ids.begin() + static_cast<std::ptrdiff_t>(begin), ids.begin() + static_cast<std::ptrdiff_t>(end)), false);
}

}  // namespace

std::vector<std::shared_ptr<const TokenizedDataset>> prepare_all(const DataConfig& config, const Tokenizer& tokenizer) {
  validate_data_config(config);
  std::vector<std::shared_ptr<const TokenizedDataset>> out;
  // Rows are at most seq_len tokens: huge texts are tokenized only as far as a row can use them.
  CacheOptions cache = config.cache;
  cache.max_row_tokens = config.loader.pack.seq_len;
  for (const auto& spec : config.datasets) out.push_back(prepare_dataset(spec, tokenizer, cache));
  return out;
}

void write_dataset_table(std::ostream& out, const DataConfig& config,
                         const std::vector<std::shared_ptr<const TokenizedDataset>>& datasets) {
  const int64_t L = config.loader.pack.seq_len;
  fmt::print(out, "{:<16} {:>9} {:>7} {:>12} {:>11} {:>7} {:>8} {:>10} {:>9}  {}\n", "dataset", "examples", "skipped", "tokens",
             "target tok", "mean", "longest", "over " + std::to_string(L), "no target", "cache");
  int64_t total_examples = 0, total_tokens = 0, total_target = 0;
  for (const auto& ds : datasets) {
    int64_t longest = 0, over = 0, no_target = 0;
    for (int64_t i = 0; i < ds->size(); ++i) {
      const int64_t n = ds->length(i);
      longest = std::max(longest, n);
      if (n <= L) continue;
      ++over;
      // Right truncation keeps the first L tokens; left keeps BOS and the end, so the target survives.
      if (config.loader.truncation == Truncation::right && ds->first_target(i) >= L) ++no_target;
    }
    const PrepareInfo& info = ds->info();
    fmt::print(out, "{:<16} {:>9} {:>7} {:>12} {:>11} {:>7.1f} {:>8} {:>10} {:>9}  {} ({}, {:.2f} s)\n", ds->name(), ds->size(),
               ds->num_bad(), ds->num_tokens(), ds->num_target_tokens(),
               static_cast<double>(ds->num_tokens()) / static_cast<double>(ds->size()), longest, over, no_target,
               info.cache_dir.filename().string(), info.from_cache ? "loaded" : "built", info.seconds);
    for (const auto& m : ds->bad_messages()) fmt::print(out, "    skipped: {}\n", m);
    total_examples += ds->size();
    total_tokens += ds->num_tokens();
    total_target += ds->num_target_tokens();
  }
  fmt::print(out, "{:<16} {:>9} {:>7} {:>12} {:>11}\n", "total", total_examples, "", total_tokens, total_target);
}

void write_mixture_report(std::ostream& out, const DataConfig& config,
                          const std::vector<std::shared_ptr<const TokenizedDataset>>& datasets, const Tokenizer& tokenizer,
                          const InspectOptions& options) {
  LoaderOptions lo = config.loader;
  lo.rank = 0;
  lo.world_size = 1;
  lo.prefetch = 0;
  Loader loader(datasets, config.sources, config.mixture, lo);
  const size_t n = datasets.size();
  std::vector<int64_t> examples(n, 0), targets(n, 0);
  int64_t all_examples = 0, all_targets = 0, real = 0, slots = 0;
  Batch first;
  for (int64_t b = 0; b < options.batches; ++b) {
    Batch batch = loader.next();
    for (size_t k = 0; k < batch.example_dataset.size(); ++k) ++examples[static_cast<size_t>(batch.example_dataset[k])];
    // Target tokens per dataset: labels within each example's span.
    int64_t offset_row = -1, offset = 0;
    for (size_t k = 0; k < batch.example_dataset.size(); ++k) {
      if (batch.example_row[k] != offset_row) {
        offset_row = batch.example_row[k];
        offset = offset_row * batch.seq_len;
      }
      int64_t t = 0;
      for (int64_t i = 0; i < batch.example_length[k]; ++i) t += batch.labels[static_cast<size_t>(offset + i)] != kIgnoreLabel;
      targets[static_cast<size_t>(batch.example_dataset[k])] += t;
      offset += batch.example_length[k];
    }
    all_examples += static_cast<int64_t>(batch.example_dataset.size());
    all_targets += batch.target_tokens;
    real += batch.real_tokens;
    slots += batch.size();
    if (b == 0) first = std::move(batch);
  }
  const LoaderState state = loader.state();
  fmt::print(out, "\nmixture: {} (seed {}), {} batches of {} x {} tokens: {} examples, fill {:.1f}%, {} truncated, {} dropped\n",
             mix_mode_name(config.mixture.mode), config.mixture.seed, options.batches, lo.batch_rows, lo.pack.seq_len,
             all_examples, slots ? 100.0 * static_cast<double>(real) / static_cast<double>(slots) : 0.0, state.truncated,
             state.dropped);
  fmt::print(out, "{:<16} {:>10} {:>12} {:>16}\n", "dataset", "requested", "examples", "target tokens");
  const auto& rates = loader.sampler().rates();
  for (size_t d = 0; d < n; ++d) {
    fmt::print(out, "{:<16} {:>9.2f}% {:>11.2f}% {:>15.2f}%\n", datasets[d]->name(), 100.0 * rates[d],
               all_examples ? 100.0 * static_cast<double>(examples[d]) / static_cast<double>(all_examples) : 0.0,
               all_targets ? 100.0 * static_cast<double>(targets[d]) / static_cast<double>(all_targets) : 0.0);
  }

  // Examples of the first batch as trained: token t is a target when labels[t-1] holds it.
  const int shown = std::min<int>(options.examples, static_cast<int>(first.example_dataset.size()));
  int64_t offset_row = -1, offset = 0;
  for (int k = 0; k < shown; ++k) {
    const auto kk = static_cast<size_t>(k);
    if (first.example_row[kk] != offset_row) {
      offset_row = first.example_row[kk];
      offset = offset_row * first.seq_len;
    }
    const int64_t len = first.example_length[kk];
    const std::vector<int32_t> ids(first.input_ids.begin() + offset, first.input_ids.begin() + offset + len);
    std::vector<bool> trained(static_cast<size_t>(len), false);
    for (int64_t t = 1; t < len; ++t) trained[static_cast<size_t>(t)] = first.labels[static_cast<size_t>(offset + t - 1)] != kIgnoreLabel;
    const auto& ds = *datasets[static_cast<size_t>(first.example_dataset[kk])];
    const int64_t n_trained = std::count(trained.begin(), trained.end(), true);
    fmt::print(out, "\n--- {} #{} ({}): {} tokens, {} with loss (row {}, offset {})\n", ds.name(), first.example_index[kk],
               ds.location(first.example_index[kk]), len, n_trained, first.example_row[kk], offset - offset_row * first.seq_len);
    for (int64_t begin = 0; begin < len;) {
      int64_t end = begin;
      while (end < len && trained[static_cast<size_t>(end)] == trained[static_cast<size_t>(begin)]) ++end;
      fmt::print(out, "  {} | {}\n", trained[static_cast<size_t>(begin)] ? "target" : "masked",
                 one_line(decode_span(tokenizer, ids, static_cast<size_t>(begin), static_cast<size_t>(end))));
      begin = end;
    }
    offset += len;
  }
}

}  // namespace mlr::data
