#include "data/packing.h"

#include <algorithm>

#include "tensor/error.h"

namespace mlr::data {

BatchBuilder::BatchBuilder(int64_t rows, const PackOptions& options) : options_(options) {
  MLR_CHECK(rows > 0 && options.seq_len > 1, "data: batch of {} rows of {} tokens: expected rows > 0 and seq_len > 1", rows,
            options.seq_len);
  batch_.rows = rows;
  batch_.seq_len = options.seq_len;
  const auto n = static_cast<size_t>(rows * options.seq_len);
  batch_.input_ids.reserve(n);
  batch_.labels.reserve(n);
  batch_.position_ids.reserve(n);
}

bool BatchBuilder::try_add(std::span<const int32_t> ids, std::span<const uint8_t> mask, int32_t dataset, int64_t index) {
  MLR_CHECK(!full(), "data: BatchBuilder: the batch is full");
  const auto n = static_cast<int64_t>(ids.size());
  MLR_CHECK(n > 0 && n <= options_.seq_len && mask.size() == ids.size(),
            "data: BatchBuilder: an example of {} tokens ({} mask entries) does not fit rows of {}", n, mask.size(),
            options_.seq_len);
  if (used_ + n > options_.seq_len || (!options_.packed && used_ > 0)) return false;
  batch_.cu_seqlens.push_back(static_cast<int32_t>(batch_.input_ids.size()));
  batch_.max_seqlen = std::max(batch_.max_seqlen, static_cast<int32_t>(n));
  for (int64_t t = 0; t < n; ++t) {
    batch_.input_ids.push_back(ids[static_cast<size_t>(t)]);
    batch_.position_ids.push_back(static_cast<int32_t>(t));
    int32_t label = kIgnoreLabel;
    if (t + 1 < n && (options_.train_on_prompt || mask[static_cast<size_t>(t + 1)])) label = ids[static_cast<size_t>(t + 1)];
    batch_.labels.push_back(label);
    batch_.target_tokens += label != kIgnoreLabel;
  }
  batch_.real_tokens += n;
  batch_.example_dataset.push_back(dataset);
  batch_.example_index.push_back(index);
  batch_.example_row.push_back(static_cast<int32_t>(rows_done_));
  batch_.example_length.push_back(static_cast<int32_t>(n));
  used_ += n;
  return true;
}

void BatchBuilder::close_row() {
  if (used_ == 0) return;
  const int64_t pad = options_.seq_len - used_;
  if (pad > 0) {
    batch_.cu_seqlens.push_back(static_cast<int32_t>(batch_.input_ids.size()));
    batch_.max_seqlen = std::max(batch_.max_seqlen, static_cast<int32_t>(pad));
    for (int64_t t = 0; t < pad; ++t) {
      batch_.input_ids.push_back(options_.pad_id);
      batch_.position_ids.push_back(static_cast<int32_t>(t));
      batch_.labels.push_back(kIgnoreLabel);
    }
  }
  ++rows_done_;
  used_ = 0;
}

Batch BatchBuilder::take() {
  MLR_CHECK(full() && used_ == 0, "data: BatchBuilder: take() before all {} rows are closed ({} done)", batch_.rows,
            rows_done_);
  batch_.cu_seqlens.push_back(static_cast<int32_t>(batch_.size()));
  Batch out = std::move(batch_);
  batch_ = Batch{};
  return out;
}

Batch slice_rows(const Batch& batch, int64_t begin, int64_t count) {
  MLR_CHECK(begin >= 0 && count > 0 && begin + count <= batch.rows, "data: slice_rows: rows [{}, {}) of a batch of {}", begin,
            begin + count, batch.rows);
  Batch out;
  out.rows = count;
  out.seq_len = batch.seq_len;
  const int64_t first = begin * batch.seq_len, last = (begin + count) * batch.seq_len;
  const auto range = [&](const std::vector<int32_t>& v) {
    return std::vector<int32_t>(v.begin() + first, v.begin() + last);
  };
  out.input_ids = range(batch.input_ids);
  out.labels = range(batch.labels);
  out.position_ids = range(batch.position_ids);
  for (size_t s = 0; s + 1 < batch.cu_seqlens.size(); ++s) {
    const int32_t start = batch.cu_seqlens[s];
    if (start < first || start >= last) continue;
    out.cu_seqlens.push_back(static_cast<int32_t>(start - first));
    out.max_seqlen = std::max(out.max_seqlen, batch.cu_seqlens[s + 1] - start);
  }
  out.cu_seqlens.push_back(static_cast<int32_t>(last - first));
  for (size_t k = 0; k < batch.example_row.size(); ++k) {
    const int32_t row = batch.example_row[k];
    if (row < begin || row >= begin + count) continue;
    out.example_dataset.push_back(batch.example_dataset[k]);
    out.example_index.push_back(batch.example_index[k]);
    out.example_row.push_back(static_cast<int32_t>(row - begin));
    out.example_length.push_back(batch.example_length[k]);
  }
  for (int32_t label : out.labels) out.target_tokens += label != kIgnoreLabel;
  for (int32_t length : out.example_length) out.real_tokens += length;
  return out;
}

std::vector<std::vector<bool>> attention_mask(const Batch& batch, int64_t row) {
  const int64_t L = batch.seq_len, begin = row * L;
  std::vector<int64_t> segment(static_cast<size_t>(L));
  for (size_t s = 0; s + 1 < batch.cu_seqlens.size(); ++s) {
    for (int64_t t = std::max<int64_t>(batch.cu_seqlens[s], begin); t < std::min<int64_t>(batch.cu_seqlens[s + 1], begin + L); ++t) {
      segment[static_cast<size_t>(t - begin)] = static_cast<int64_t>(s);
    }
  }
  std::vector<std::vector<bool>> allowed(static_cast<size_t>(L), std::vector<bool>(static_cast<size_t>(L), false));
  for (int64_t i = 0; i < L; ++i) {
    for (int64_t j = 0; j <= i; ++j) allowed[static_cast<size_t>(i)][static_cast<size_t>(j)] = segment[static_cast<size_t>(i)] == segment[static_cast<size_t>(j)];
  }
  return allowed;
}

}  // namespace mlr::data
