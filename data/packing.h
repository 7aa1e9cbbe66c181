// Packing: tokenised examples -> fixed-length rows of a batch, for a causal LM trained with
// packed variable-length attention.
//
// Packed mode puts examples one after another in a row while they fit (an example is never split
// across rows; one that does not fit starts the next row) and pads the rest. Padding mode puts
// one example per row. Either way, per row of length L:
//   input_ids[t]     the tokens, then pad_id
//   labels[t]        ids[t+1] when t+1 is in the same example and is a target token (any token
//                    but the first with train_on_prompt); otherwise -100: the prompt, the last
//                    token of every example (nothing of its own to predict) and the padding
//   position_ids[t]  0, 1, ... restarting at every example (and at the padding)
// and over the flattened batch (rows * L tokens), cu_seqlens holds the offset where each segment
// starts (an example, or the padding at the end of a row) followed by rows * L: the layout of
// flash-attention's varlen kernels. Attention stays inside a segment, so no token attends across
// an example boundary; the padding segment attends only to itself and carries no loss.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "data/tokenize.h"

namespace mlr::data {

inline constexpr int32_t kIgnoreLabel = -100;

struct PackOptions {
  int64_t seq_len = 2048;
  bool packed = true;            // false: one example per row (padding mode)
  bool train_on_prompt = false;  // labels on the prompt tokens too
  int32_t pad_id = 0;
};

struct Batch {
  int64_t rows = 0, seq_len = 0;
  std::vector<int32_t> input_ids, labels, position_ids;  // rows * seq_len, row-major
  std::vector<int32_t> cu_seqlens;                       // segment starts, then rows * seq_len
  int32_t max_seqlen = 0;                                // longest segment
  // The examples of the batch in order (for inspection and tests).
  std::vector<int32_t> example_dataset;
  std::vector<int64_t> example_index;
  std::vector<int32_t> example_row;
  std::vector<int32_t> example_length;
  int64_t real_tokens = 0;    // tokens that are not padding
  int64_t target_tokens = 0;  // labels != -100

  int64_t size() const { return rows * seq_len; }
};

// Builds one batch of `rows` rows from examples offered in order.
class BatchBuilder {
 public:
  BatchBuilder(int64_t rows, const PackOptions& options);

  // Adds the example to the current row when it fits; false when the row has no room (the
  // caller then closes the row and offers the example again). The example must be at most
  // seq_len tokens (fit_example) and not empty.
  bool try_add(std::span<const int32_t> ids, std::span<const uint8_t> mask, int32_t dataset, int64_t index);
  // Pads the current row and moves to the next; a row with no example is left for later.
  void close_row();
  bool full() const { return rows_done_ == batch_.rows; }
  int64_t rows_done() const { return rows_done_; }
  // The finished batch (all rows closed).
  Batch take();

 private:
  PackOptions options_;
  Batch batch_;
  int64_t rows_done_ = 0;
  int64_t used_ = 0;  // tokens in the current row
};

// Rows [begin, begin + count) of a batch as a batch of their own (a data-parallel rank's share):
// offsets rebased, per-example lists and token counts restricted to those rows.
Batch slice_rows(const Batch& batch, int64_t begin, int64_t count);

// The attention mask a packed batch implies: allowed[i][j] for tokens i, j of one row
// (j <= i and same segment). For tests and inspection, O(L^2).
std::vector<std::vector<bool>> attention_mask(const Batch& batch, int64_t row);

}  // namespace mlr::data
