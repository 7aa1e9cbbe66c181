// Packing on hand-made examples (every value written out), then a property check on random
// examples: attention (from cu_seqlens) never crosses an example, and the labelled positions are
// exactly the target tokens.
#include <algorithm>
#include <random>

#include "data/packing.h"
#include "tests/data/data_test_util.h"

using namespace mlr::data;
using namespace mlr::data::test;

namespace {

struct Ex {
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
};

const std::vector<Ex> kExamples = {
    {{1, 10, 11, 50, 51}, {0, 0, 0, 1, 1}},
    {{1, 12, 52}, {0, 0, 1}},
    {{1, 13, 14, 15, 53, 54}, {0, 0, 0, 0, 1, 1}},
};

Batch pack(const std::vector<Ex>& examples, int64_t rows, const PackOptions& options) {
  BatchBuilder b(rows, options);
  for (size_t i = 0; i < examples.size(); ++i) {
    if (!b.try_add(examples[i].ids, examples[i].mask, 0, static_cast<int64_t>(i))) {
      b.close_row();
      REQUIRE(b.try_add(examples[i].ids, examples[i].mask, 0, static_cast<int64_t>(i)));
    }
  }
  b.close_row();
  while (!b.full()) b.close_row();
  return b.take();
}

constexpr int32_t X = kIgnoreLabel;

}  // namespace

TEST_CASE("packing: two rows of eight, by hand") {
  const Batch b = pack(kExamples, 2, {.seq_len = 8, .pad_id = 0});
  CHECK(b.input_ids == std::vector<int32_t>{1, 10, 11, 50, 51, 1, 12, 52, /**/ 1, 13, 14, 15, 53, 54, 0, 0});
  CHECK(b.labels == std::vector<int32_t>{X, X, 50, 51, X, X, 52, X, /**/ X, X, X, 53, 54, X, X, X});
  CHECK(b.position_ids == std::vector<int32_t>{0, 1, 2, 3, 4, 0, 1, 2, /**/ 0, 1, 2, 3, 4, 5, 0, 1});
  CHECK(b.cu_seqlens == std::vector<int32_t>{0, 5, 8, 14, 16});
  CHECK(b.max_seqlen == 6);
  CHECK(b.example_row == std::vector<int32_t>{0, 0, 1});
  CHECK(b.real_tokens == 14);
  CHECK(b.target_tokens == 5);

  const Batch p = pack(kExamples, 2, {.seq_len = 8, .train_on_prompt = true});
  CHECK(p.labels == std::vector<int32_t>{10, 11, 50, 51, X, 12, 52, X, /**/ 13, 14, 15, 53, 54, X, X, X});
}

TEST_CASE("packing: padding mode, one example per row") {
  const Batch b = pack(kExamples, 3, {.seq_len = 6, .packed = false, .pad_id = 2});
  CHECK(b.input_ids == std::vector<int32_t>{1, 10, 11, 50, 51, 2, /**/ 1, 12, 52, 2, 2, 2, /**/ 1, 13, 14, 15, 53, 54});
  CHECK(b.labels == std::vector<int32_t>{X, X, 50, 51, X, X, /**/ X, 52, X, X, X, X, /**/ X, X, X, 53, 54, X});
  CHECK(b.position_ids == std::vector<int32_t>{0, 1, 2, 3, 4, 0, /**/ 0, 1, 2, 0, 1, 2, /**/ 0, 1, 2, 3, 4, 5});
  CHECK(b.cu_seqlens == std::vector<int32_t>{0, 5, 6, 9, 12, 18});
}

TEST_CASE("packing: misuse is an error") {
  BatchBuilder b(1, {.seq_len = 4});
  const std::vector<int32_t> ids = {1, 2, 3, 4, 5};
  const std::vector<uint8_t> mask = {0, 0, 1, 1, 1};
  CHECK(error_of([&] { b.try_add(ids, mask, 0, 0); }).find("an example of 5 tokens (5 mask entries) does not fit rows of 4") !=
        std::string::npos);
  CHECK(error_of([&] { b.take(); }).find("take() before all 1 rows are closed") != std::string::npos);
  CHECK(error_of([] { BatchBuilder(1, {.seq_len = 1}); }).find("expected rows > 0 and seq_len > 1") != std::string::npos);
}

TEST_CASE("packing: attention never crosses an example; labels are exactly the targets") {
  std::mt19937 rng(7);
  const int64_t L = 64, rows = 4;
  for (int trial = 0; trial < 20; ++trial) {
    for (bool packed : {true, false}) {
      // Random examples of 2..40 tokens with a prompt of 1..n-1 tokens; ids encode (example, position).
      std::vector<Ex> examples;
      BatchBuilder b(rows, {.seq_len = L, .packed = packed});
      for (int e = 0; !b.full(); ++e) {
        const int n = 2 + static_cast<int>(rng() % 39), prompt = 1 + static_cast<int>(rng() % static_cast<unsigned>(n - 1));
        Ex ex;
        for (int t = 0; t < n; ++t) {
          ex.ids.push_back(1000 * (e + 1) + t);
          ex.mask.push_back(t >= prompt);
        }
        examples.push_back(ex);
        if (!b.try_add(ex.ids, ex.mask, 0, e)) {
          b.close_row();
          if (b.full()) break;
          REQUIRE(b.try_add(ex.ids, ex.mask, 0, e));
        }
      }
      const Batch batch = b.take();
      for (int64_t r = 0; r < rows; ++r) {
        const auto allowed = attention_mask(batch, r);
        for (int64_t i = 0; i < L; ++i) {
          const int32_t id_i = batch.input_ids[static_cast<size_t>(r * L + i)];
          for (int64_t j = 0; j < L; ++j) {
            const int32_t id_j = batch.input_ids[static_cast<size_t>(r * L + j)];
            // Padding (id 0) is its own segment; otherwise the same example = same thousand.
            const bool same = (id_i == 0) == (id_j == 0) && id_i / 1000 == id_j / 1000;
            CHECK(allowed[static_cast<size_t>(i)][static_cast<size_t>(j)] == (j <= i && same));
          }
          // Position ids restart per example: the id's low part is the position.
          if (id_i != 0) CHECK(batch.position_ids[static_cast<size_t>(r * L + i)] == id_i % 1000);
        }
      }
      // Labels: position t predicts token t+1 of the same example exactly when t+1 is a target.
      for (size_t k = 0; k < batch.example_index.size(); ++k) {
        const Ex& ex = examples[static_cast<size_t>(batch.example_index[k])];
        const int32_t first = ex.ids[0];
        const auto at = std::find(batch.input_ids.begin(), batch.input_ids.end(), first) - batch.input_ids.begin();
        for (size_t t = 0; t < ex.ids.size(); ++t) {
          const int32_t want = t + 1 < ex.ids.size() && ex.mask[t + 1] ? ex.ids[t + 1] : kIgnoreLabel;
          CHECK(batch.labels[static_cast<size_t>(at) + t] == want);
        }
      }
    }
  }
}
