#include "data/loader.h"

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "data/text.h"
#include "tensor/error.h"

namespace mlr::data {

using nlohmann::json;

std::string LoaderState::to_json() const {
  const json j = {{"version", 1},         {"step", step},       {"mixture_step", mixture.step}, {"drawn", mixture.drawn},
                  {"truncated", truncated}, {"dropped", dropped}, {"fingerprint", fingerprint}};
  return j.dump();
}

LoaderState LoaderState::from_json(const std::string& text, const std::string& where) {
  try {
    const json j = json::parse(text);
    MLR_CHECK(j.at("version") == 1, "data: {}: loader state version {} is not 1", where, j.at("version").dump());
    // Counts are non-negative integers (the JSON library would cast 2.5 or 1e300 silently, or undefinedly).
    const auto count = [&](const json& v, const char* key) {
      MLR_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0, "data: {}: loader state \"{}\" is {}, expected a count",
                where, key, v.dump());
      return v.get<int64_t>();
    };
    LoaderState s;
    s.step = count(j.at("step"), "step");
    s.mixture.step = count(j.at("mixture_step"), "mixture_step");
    const json& drawn = j.at("drawn");
    MLR_CHECK(drawn.is_array(), "data: {}: loader state \"drawn\" is {}, expected a list of counts", where, drawn.dump());
    for (const json& d : drawn) s.mixture.drawn.push_back(count(d, "drawn"));
    s.truncated = count(j.at("truncated"), "truncated");
    s.dropped = count(j.at("dropped"), "dropped");
    s.fingerprint = j.at("fingerprint").get<std::string>();
    return s;
  } catch (const json::exception& e) {
    throw Error(fmt::format("data: {}: malformed loader state: {}", where, e.what()));
  }
}

namespace {

// The global batch (rows of all ranks) is what the position depends on, not how it is split: a
// state saved by 2 ranks of 4 rows resumes on 1 rank of 8 (and "world=1" keeps the text, and so the
// fingerprint, of single-process runs unchanged).
std::string fingerprint_of(const std::vector<std::shared_ptr<const TokenizedDataset>>& datasets,
                           const std::vector<MixtureSource>& sources, const MixtureOptions& m, const LoaderOptions& o) {
  std::string text = fmt::format("mode={} T={} K={} seed={} shuffle={} rows={} seq_len={} packed={} prompt={} trunc={} drop={} world={}",
                                 mix_mode_name(m.mode), m.temperature, m.rate_limit, m.seed, m.shuffle,
                                 o.batch_rows * o.world_size, o.pack.seq_len, o.pack.packed, o.pack.train_on_prompt,
                                 truncation_name(o.truncation), o.drop_overlong, 1);
  for (size_t i = 0; i < datasets.size(); ++i) {
    text += fmt::format(";{}:{}:{}:{}:{}:{}", sources[i].name, datasets[i]->info().key, datasets[i]->size(), sources[i].weight,
                        sources[i].epochs, sources[i].max_examples);
  }
  return fmt::format("{:016x}", fnv1a64(text));
}

}  // namespace

struct Loader::Impl {
  std::vector<std::shared_ptr<const TokenizedDataset>> datasets;
  LoaderOptions options;
  MixtureSampler sampler;
  std::vector<int32_t> bos_ids;  // per dataset: BOS id kept by left truncation, -1 when none
  LoaderState produced;          // state after the last batch produced (producer side)
  LoaderState consumed;          // state after the last batch returned by next()

  // Producer/consumer queue.
  struct Item {
    Batch batch;
    LoaderState state;
  };
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<Item> queue;
  std::exception_ptr error;
  bool stop = false;
  std::thread thread;

  Impl(std::vector<std::shared_ptr<const TokenizedDataset>> ds, std::vector<MixtureSource> sources, const MixtureOptions& m,
       const LoaderOptions& o)
      : datasets(std::move(ds)), options(o), sampler(with_sizes(sources), m) {}

  std::vector<MixtureSource> with_sizes(std::vector<MixtureSource>& sources) {
    MLR_CHECK(sources.size() == datasets.size(), "data: loader: {} mixture entries for {} datasets", sources.size(),
              datasets.size());
    for (size_t i = 0; i < sources.size(); ++i) {
      MLR_CHECK(datasets[i] != nullptr, "data: loader: dataset {} is null", i);
      sources[i].size = datasets[i]->size();
      if (sources[i].name.empty()) sources[i].name = datasets[i]->name();
    }
    return sources;
  }

  // One global batch (all ranks), then this rank's rows.
  Item produce() {
    const int64_t world_rows = options.batch_rows * options.world_size;
    BatchBuilder builder(world_rows, options.pack);
    std::vector<int32_t> ids;
    std::vector<uint8_t> mask;
    std::optional<Draw> pending;
    MixtureState before_pending;
    int64_t truncated = 0, dropped = 0;
    bool pending_truncated = false;
    while (true) {
      if (!pending) {
        before_pending = sampler.state();
        const Draw d = sampler.next();
        const TokenizedDataset& ds = *datasets[static_cast<size_t>(d.dataset)];
        ids.clear();
        mask.clear();
        const Fit fit = fit_example(ds.ids(d.example), ds.mask(d.example), options.pack.seq_len, options.truncation,
                                    bos_ids[static_cast<size_t>(d.dataset)], ids, mask);
        if (fit == Fit::no_target) {
          MLR_CHECK(options.drop_overlong,
                    "data: {}: dataset '{}': the example has {}{} tokens, {}{} of them prompt: {} truncation leaves no "
                    "target token within seq_len {} (use a longer seq_len, truncation: left, or drop_overlong: true)",
                    ds.location(d.example), ds.name(), ds.windowed(d.example) ? "more than " : "", ds.length(d.example),
                    ds.windowed(d.example) ? "more than " : "", ds.first_target(d.example),
                    truncation_name(options.truncation), options.pack.seq_len);
          ++dropped;
          continue;
        }
        pending = d;
        pending_truncated = fit == Fit::truncated;
      }
      if (builder.try_add(ids, mask, pending->dataset, pending->example)) {
        truncated += pending_truncated;
        pending.reset();
        continue;
      }
      builder.close_row();
      if (builder.full()) break;
    }
    Item item;
    const Batch global = builder.take();
    item.batch = options.world_size == 1 ? global : slice_rows(global, options.rank * options.batch_rows, options.batch_rows);
    produced.step += 1;
    produced.mixture = pending ? before_pending : sampler.state();
    produced.truncated += truncated;
    produced.dropped += dropped;
    item.state = produced;
    if (pending) sampler.restore(before_pending);  // the next batch draws it again, as a resumed loader would
    return item;
  }

  void run() {
    while (true) {
      {
        std::unique_lock lock(mutex);
        cv.wait(lock, [&] { return stop || static_cast<int>(queue.size()) < options.prefetch; });
        if (stop) return;
      }
      Item item;
      try {
        item = produce();
      } catch (...) {
        std::lock_guard lock(mutex);
        error = std::current_exception();
        cv.notify_all();
        return;
      }
      std::lock_guard lock(mutex);
      queue.push_back(std::move(item));
      cv.notify_all();
    }
  }
};

Loader::Loader(std::vector<std::shared_ptr<const TokenizedDataset>> datasets, std::vector<MixtureSource> sources,
               const MixtureOptions& mixture, const LoaderOptions& options, const LoaderState* resume) {
  MLR_CHECK(options.world_size >= 1 && options.rank >= 0 && options.rank < options.world_size,
            "data: loader: rank {} of world size {}", options.rank, options.world_size);
  MLR_CHECK(options.batch_rows >= 1, "data: loader: batch_rows is {}, expected >= 1", options.batch_rows);
  MLR_CHECK(options.prefetch >= 0, "data: loader: prefetch is {}, expected >= 0", options.prefetch);
  impl_ = std::make_unique<Impl>(std::move(datasets), std::move(sources), mixture, options);
  Impl& m = *impl_;
  for (const auto& ds : m.datasets) m.bos_ids.push_back(ds->bos_id());  // kept by left truncation
  const std::string fingerprint = fingerprint_of(m.datasets, m.sampler.sources(), mixture, options);
  m.produced.fingerprint = fingerprint;
  m.produced.mixture = m.sampler.state();
  if (resume) {
    MLR_CHECK(resume->fingerprint == fingerprint,
              "data: loader: the saved state (fingerprint {}) was made with other datasets, mixture or batch shape than "
              "this run ({}); resuming would not continue the same data",
              resume->fingerprint, fingerprint);
    m.sampler.restore(resume->mixture);
    m.produced = *resume;
  }
  m.consumed = m.produced;
  if (options.prefetch > 0) m.thread = std::thread([this] { impl_->run(); });
}

Loader::~Loader() {
  if (impl_ && impl_->thread.joinable()) {
    {
      std::lock_guard lock(impl_->mutex);
      impl_->stop = true;
    }
    impl_->cv.notify_all();
    impl_->thread.join();
  }
}

Batch Loader::next() {
  Impl& m = *impl_;
  if (m.options.prefetch == 0) {
    Impl::Item item = m.produce();
    m.consumed = item.state;
    return std::move(item.batch);
  }
  std::unique_lock lock(m.mutex);
  m.cv.wait(lock, [&] { return !m.queue.empty() || m.error; });
  if (m.queue.empty()) std::rethrow_exception(m.error);
  Impl::Item item = std::move(m.queue.front());
  m.queue.pop_front();
  m.consumed = item.state;
  m.cv.notify_all();
  return std::move(item.batch);
}

LoaderState Loader::state() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->consumed;
}

const MixtureSampler& Loader::sampler() const { return impl_->sampler; }

}  // namespace mlr::data
