// The loader: identical batches from one seed, exact resume from a saved state (with and without
// the prefetch thread), disjoint rank shards that together make the single-rank batch, and the
// overlong-example policies.
#include "data/loader.h"
#include "tests/data/data_test_util.h"

using namespace mlr::data;
using namespace mlr::data::test;

namespace {

// Two prompt/completion datasets with varied lengths, prepared with the byte tokenizer.
struct Fixture {
  TempDir tmp;
  ByteTokenizer tok;
  std::vector<std::shared_ptr<const TokenizedDataset>> datasets;

  explicit Fixture(const std::string& extra_row = "") {
    std::string a, b;
    for (int i = 0; i < 300; ++i) {
      a += fmt::format(R"({{"prompt": "a{}:{}", "completion": "{}"}})" "\n", i, std::string(static_cast<size_t>(i % 23), 'p'),
                       std::string(static_cast<size_t>(1 + i % 11), 'c'));
    }
    for (int i = 0; i < 70; ++i) {
      b += fmt::format(R"({{"prompt": "b{}{}", "completion": "{}"}})" "\n", i, std::string(static_cast<size_t>(i % 40), 'q'),
                       std::string(static_cast<size_t>(2 + i % 5), 'd'));
    }
    b += extra_row;
    for (const auto& [name, text] : {std::pair{"a", a}, std::pair{"b", b}}) {
      DatasetSpec spec;
      spec.name = name;
      spec.format = Format::prompt_completion;
      spec.path = tmp.write(std::string(name) + ".jsonl", text);
      spec.tmpl = default_template(Format::prompt_completion);
      spec.tokenize.eos = Special::always;
      datasets.push_back(prepare_dataset(spec, tok, {.dir = tmp.path / "cache", .threads = 1}));
    }
  }

  std::unique_ptr<Loader> loader(const LoaderOptions& options, const LoaderState* resume = nullptr, uint64_t seed = 9) const {
    return std::make_unique<Loader>(datasets, std::vector<MixtureSource>{{"a", 0, 2.0}, {"b", 0, 1.0}},
                                    MixtureOptions{.mode = MixMode::weights, .seed = seed}, options, resume);
  }
};

LoaderOptions small(int prefetch = 2) {
  LoaderOptions o;
  o.batch_rows = 3;
  o.pack.seq_len = 64;
  o.prefetch = prefetch;
  return o;
}

void check_equal(const Batch& a, const Batch& b) {
  CHECK(a.input_ids == b.input_ids);
  CHECK(a.labels == b.labels);
  CHECK(a.position_ids == b.position_ids);
  CHECK(a.cu_seqlens == b.cu_seqlens);
  CHECK(a.example_index == b.example_index);
  CHECK(a.example_dataset == b.example_dataset);
}

}  // namespace

TEST_CASE("loader: batches are well formed and identical for one seed") {
  const Fixture f;
  auto a = f.loader(small()), b = f.loader(small(0));
  bool differs_from_other_seed = false;
  auto c = f.loader(small(), nullptr, 10);
  for (int step = 0; step < 30; ++step) {
    const Batch x = a->next(), y = b->next(), z = c->next();
    check_equal(x, y);
    differs_from_other_seed |= x.input_ids != z.input_ids;
    CHECK(x.rows == 3);
    CHECK(x.input_ids.size() == 3 * 64);
    CHECK(x.cu_seqlens.back() == 3 * 64);
    // Each example ends with EOS (id 2), its last target token.
    for (size_t k = 0; k < x.example_index.size(); ++k) {
      const auto& ds = *f.datasets[static_cast<size_t>(x.example_dataset[k])];
      CHECK(ds.length(x.example_index[k]) == x.example_length[k]);
    }
  }
  CHECK(differs_from_other_seed);
  CHECK(a->state().step == 30);
}

TEST_CASE("loader: resuming from a saved state gives exactly the next batch") {
  const Fixture f;
  for (int prefetch : {0, 3}) {
    CAPTURE(prefetch);
    auto uninterrupted = f.loader(small(prefetch));
    std::vector<Batch> reference;
    for (int i = 0; i < 20; ++i) reference.push_back(uninterrupted->next());

    for (int k : {1, 7, 13}) {
      CAPTURE(k);
      auto first = f.loader(small(prefetch));
      for (int i = 0; i < k; ++i) check_equal(first->next(), reference[static_cast<size_t>(i)]);
      const std::string saved = first->state().to_json();
      first.reset();
      const LoaderState state = LoaderState::from_json(saved, "checkpoint.json");
      CHECK(state.step == k);
      auto resumed = f.loader(small(prefetch), &state);
      CHECK(resumed->state() == state);
      for (int i = k; i < 20; ++i) check_equal(resumed->next(), reference[static_cast<size_t>(i)]);
    }
  }
}

TEST_CASE("loader: rank shards are disjoint and make up the single-rank batch") {
  const Fixture f;
  LoaderOptions whole = small();
  whole.batch_rows = 4;
  auto single = f.loader(whole);
  std::vector<std::unique_ptr<Loader>> ranks;
  for (int r = 0; r < 2; ++r) {
    LoaderOptions o = small();
    o.batch_rows = 2;
    o.rank = r;
    o.world_size = 2;
    ranks.push_back(f.loader(o));
  }
  for (int step = 0; step < 10; ++step) {
    const Batch all = single->next();
    const Batch r0 = ranks[0]->next(), r1 = ranks[1]->next();
    check_equal(r0, slice_rows(all, 0, 2));
    check_equal(r1, slice_rows(all, 2, 2));
    CHECK(r0.real_tokens + r1.real_tokens == all.real_tokens);
    CHECK(r0.target_tokens + r1.target_tokens == all.target_tokens);
    CHECK(r0.input_ids != r1.input_ids);
  }
  CHECK(ranks[0]->state().mixture == ranks[1]->state().mixture);
  // The state of 2 ranks x 2 rows resumes 1 rank x 4 rows (and 4 ranks x 1 row): the same global
  // batch continues, whatever the world size; another global batch is refused.
  const LoaderState saved = ranks[0]->state();
  auto resumed_single = f.loader(whole, &saved);
  const Batch next_all = single->next();
  check_equal(resumed_single->next(), next_all);
  LoaderOptions quarter = small();
  quarter.batch_rows = 1;
  quarter.rank = 3;
  quarter.world_size = 4;
  check_equal(f.loader(quarter, &saved)->next(), slice_rows(next_all, 3, 1));
  LoaderOptions half = small();
  half.batch_rows = 2;
  CHECK(error_of([&] { f.loader(half, &saved); }).find("the saved state (fingerprint") != std::string::npos);
}

TEST_CASE("loader: an example whose prompt does not fit seq_len") {
  // Row 71 of b.jsonl: a 100-byte prompt (101 tokens with BOS).
  const Fixture f(R"({"prompt": ")" + std::string(100, 'x') + R"(", "completion": "y"})" "\n");
  LoaderOptions o = small(2);
  auto loader = f.loader(o);
  std::string error;
  for (int i = 0; i < 400 && error.empty(); ++i) error = error_of([&] { loader->next(); });
  CHECK_MESSAGE(error.find("b.jsonl:71: dataset 'b': the example has 103 tokens, 101 of them prompt") != std::string::npos, error);
  CHECK(error.find("no target token within seq_len 64") != std::string::npos);

  o.drop_overlong = true;
  auto dropping = f.loader(o);
  for (int i = 0; i < 200; ++i) dropping->next();
  CHECK(dropping->state().dropped >= 1);
  CHECK(dropping->state().truncated == 0);

  o.drop_overlong = false;
  o.truncation = Truncation::left;
  auto left = f.loader(o);
  bool seen = false;
  for (int i = 0; i < 200; ++i) {
    const Batch b = left->next();
    for (size_t k = 0; k < b.example_index.size(); ++k) {
      if (b.example_dataset[k] == 1 && b.example_index[k] == 70) {
        seen = true;
        CHECK(b.example_length[k] == 64);  // a full row: the prompt's start cut, "y" and EOS kept
      }
    }
  }
  CHECK(seen);
  CHECK(left->state().truncated >= 1);
}

TEST_CASE("loader: a state from another configuration is refused") {
  const Fixture f;
  auto a = f.loader(small());
  a->next();
  const LoaderState state = a->state();
  LoaderOptions other = small();
  other.pack.seq_len = 128;
  CHECK(error_of([&] { f.loader(other, &state); }).find("the saved state (fingerprint") != std::string::npos);
  CHECK(error_of([] { LoaderState::from_json("{\"version\": 1}", "ckpt/loader.json"); })
            .find("ckpt/loader.json: malformed loader state") != std::string::npos);
  LoaderOptions bad_rank = small();
  bad_rank.rank = 2;
  bad_rank.world_size = 2;
  CHECK(error_of([&] { f.loader(bad_rank); }).find("rank 2 of world size 2") != std::string::npos);
}
