// LlamaContinuationModel: batched continuation scoring with a LLaMA model, plain or with shared
// prefixes, and greedy decoding through a KV cache (see llama_scorer.h).
#include "eval/llama_scorer.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "autograd/grad_mode.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace mlr::eval {

struct LlamaContinuationModel::Row {
  std::vector<int32_t> input;    // tokens[:-1] of its requests, left-truncated
  int64_t first_scored = 0;      // earliest position whose logits a reader needs
  std::vector<size_t> readers;   // indices of the requests with this input
};

namespace {

Device model_device(LlamaForCausalLM& model) { return model.named_parameters().front().second.device(); }
DType model_dtype(LlamaForCausalLM& model) { return model.named_parameters().front().second.dtype(); }

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t k = 0;
  while (k < n && a[k] == b[k]) ++k;
  return k;
}

// Runs input_ids [B, S] at position_ids against `cache` as LlamaForCausalLM::forward_cached does,
// but returns the final hidden states [B, S, hidden]: the output layer runs only where logits are
// read (a prefix has none, a scored input only its continuation positions), which matters for
// large vocabularies and small models.
Tensor run_cached(LlamaForCausalLM& model, const Tensor& input_ids, const Tensor& position_ids,
                  const Tensor& attention_mask, KVCache& cache) {
  const int64_t seq = input_ids.size(1);
  MLR_CHECK(cache.length + seq <= cache.capacity(), "eval: {} tokens do not fit in a cache of {} holding {}", seq,
            cache.capacity(), cache.length);
  cache.key_valid.narrow(1, cache.length, seq).copy_(ne(attention_mask, 0.0));
  LlamaBatch positions_only;
  positions_only.input_ids = input_ids;
  positions_only.position_ids = position_ids;
  LlamaAttentionContext ctx = model.attention_context(positions_only);
  ctx.cache = &cache;
  Tensor hidden = model.model->forward(input_ids, ctx).data();
  cache.length += seq;
  return hidden;
}

// Logits [n, V] at the rows `positions` of hidden [B, S, H] (flat indices b * S + s).
Tensor logits_at(LlamaForCausalLM& model, const Tensor& hidden, const std::vector<int64_t>& positions) {
  const int64_t n = static_cast<int64_t>(positions.size()), width = hidden.size(2);
  const Tensor index = from_vector<int64_t>(positions, {n}).to(hidden.device());
  const Tensor picked = index_select(hidden.reshape({hidden.size(0) * hidden.size(1), width}), 0, index);
  return model.lm_logits(Variable(picked.reshape({1, n, width}))).data().select(0, 0);
}

}  // namespace

LlamaContinuationModel::LlamaContinuationModel(LlamaForCausalLM& model, int64_t max_length, int64_t batch_tokens,
                                               SharedPrefixOptions shared_prefix)
    : model_(model),
      max_length_(max_length > 0 ? max_length : model.config().max_position_embeddings),
      batch_tokens_(batch_tokens),
      shared_prefix_(shared_prefix) {
  MLR_CHECK(max_length_ > 0, "eval: max_length must be positive, got {}", max_length_);
  MLR_CHECK(batch_tokens_ > 0, "eval: batch_tokens must be positive, got {}", batch_tokens_);
  MLR_CHECK(shared_prefix_.min_tokens >= 1, "eval: the shared prefix minimum must be at least 1 token, got {}",
            shared_prefix_.min_tokens);
}

// For each reader of `row`: log-probabilities and greedy flags of its continuation, given the
// logits at positions row.first_scored .. row.input.size() - 1 ([n, V], any device and dtype).
static void read_continuations(const std::vector<int32_t>& input, int64_t first_scored,
                               const std::vector<size_t>& readers, const Tensor& logits,
                               const std::vector<TokenSequenceRequest>& requests,
                               std::vector<LoglikelihoodResult>& results) {
  const Tensor rows_logits = logits.to(Device::cpu(), DType::f32);
  const std::vector<float> lp = log_softmax(rows_logits, -1).contiguous().to_vector<float>();
  const std::vector<int64_t> best = argmax(rows_logits, -1).to_vector<int64_t>();
  const int64_t vocab = rows_logits.size(1), n_in = static_cast<int64_t>(input.size());
  for (const size_t i : readers) {
    const auto& t = requests[i].tokens;
    const int64_t n_cont = requests[i].n_continuation;
    double sum = 0;
    bool greedy = true;
    for (int64_t k = 0; k < n_cont; ++k) {
      // Position n_in - n_cont + k predicts continuation token k.
      const int64_t row = n_in - n_cont + k - first_scored;
      const int32_t target = t[t.size() - static_cast<size_t>(n_cont) + static_cast<size_t>(k)];
      MLR_CHECK(target >= 0 && target < vocab, "eval: token {} is outside the model's vocabulary of {}", target, vocab);
      sum += lp[static_cast<size_t>(row * vocab + target)];
      greedy = greedy && best[static_cast<size_t>(row)] == target;
    }
    results[i] = {sum, greedy};
  }
}

std::vector<LoglikelihoodResult> LlamaContinuationModel::score(const std::vector<TokenSequenceRequest>& requests) {
  NoGradGuard no_grad;
  model_.eval();
  std::vector<LoglikelihoodResult> results(requests.size());
  std::vector<std::vector<int32_t>> inputs(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto& t = requests[i].tokens;
    MLR_CHECK(t.size() >= 2 && requests[i].n_continuation >= 1 &&
                  requests[i].n_continuation <= static_cast<int64_t>(t.size()) - 1,
              "eval: request {} has {} tokens and {} continuation tokens (need a context token before them)", i,
              t.size(), requests[i].n_continuation);
    const size_t n = std::min<size_t>(t.size() - 1, static_cast<size_t>(max_length_));
    inputs[i].assign(t.end() - 1 - static_cast<std::ptrdiff_t>(n), t.end() - 1);
  }
  // n_continuation may exceed the truncated input only when the context was cut away entirely.
  for (size_t i = 0; i < requests.size(); ++i) {
    MLR_CHECK(requests[i].n_continuation <= static_cast<int64_t>(inputs[i].size()),
              "eval: request {} has {} continuation tokens, more than max_length {} can score", i,
              requests[i].n_continuation, max_length_);
  }

  // Rows: the distinct inputs (every input when sharing is off, as the harness runs them), in
  // lexicographic order, so inputs sharing a prefix are neighbours.
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return inputs[a] < inputs[b]; });
  std::vector<Row> rows;
  for (const size_t i : order) {
    const int64_t first = static_cast<int64_t>(inputs[i].size()) - requests[i].n_continuation;
    if (shared_prefix_.enabled && !rows.empty() && rows.back().input == inputs[i]) {
      rows.back().first_scored = std::min(rows.back().first_scored, first);
      rows.back().readers.push_back(i);
    } else {
      rows.push_back({std::move(inputs[i]), first, {i}});
    }
  }

  std::vector<Row*> plain;
  std::vector<std::vector<Row*>> groups;
  std::vector<int64_t> prefix_lengths;
  if (!shared_prefix_.enabled) {
    for (auto& r : rows) plain.push_back(&r);
  } else {
    // Greedy grouping (see the header): a group's prefix never covers a scored position, so every
    // member keeps at least one suffix token.
    std::vector<Row*> group;
    int64_t prefix = 0;
    auto close = [&] {
      if (group.size() >= 2) {
        groups.push_back(group);
        prefix_lengths.push_back(prefix);
      } else {
        plain.insert(plain.end(), group.begin(), group.end());
      }
      group.clear();
    };
    for (auto& r : rows) {
      if (!group.empty()) {
        const int64_t shared = std::min<int64_t>({static_cast<int64_t>(common_prefix(group.front()->input, r.input)),
                                                  prefix, r.first_scored});
        const int64_t n = static_cast<int64_t>(group.size());
        if (shared >= shared_prefix_.min_tokens && n * shared - (n - 1) * prefix > 0) {
          group.push_back(&r);
          prefix = shared;
          continue;
        }
        close();
      }
      group.push_back(&r);
      prefix = r.first_scored;
    }
    close();
  }
  if (!plain.empty()) score_plain(std::move(plain), requests, results);
  if (!groups.empty()) score_shared(groups, prefix_lengths, requests, results);
  return results;
}

void LlamaContinuationModel::score_plain(std::vector<Row*> rows, const std::vector<TokenSequenceRequest>& requests,
                                         std::vector<LoglikelihoodResult>& results) {
  const Device device = model_device(model_);
  std::stable_sort(rows.begin(), rows.end(), [](const Row* a, const Row* b) { return a->input.size() > b->input.size(); });
  size_t start = 0;
  while (start < rows.size()) {
    const int64_t len = static_cast<int64_t>(rows[start]->input.size());  // longest of the batch
    const int64_t n_rows = std::max<int64_t>(1, std::min<int64_t>(batch_tokens_ / std::max<int64_t>(len, 1),
                                                                  static_cast<int64_t>(rows.size() - start)));
    std::vector<int64_t> ids(n_rows * len, 0), mask(n_rows * len, 0);
    for (int64_t r = 0; r < n_rows; ++r) {
      const auto& in = rows[start + r]->input;
      for (size_t k = 0; k < in.size(); ++k) {
        ids[r * len + k] = in[k];
        mask[r * len + k] = 1;
      }
      counters_.tokens += static_cast<int64_t>(in.size());
    }
    LlamaBatch batch;
    batch.input_ids = from_vector<int64_t>(ids, {n_rows, len}).to(device);
    batch.attention_mask = from_vector<int64_t>(mask, {n_rows, len}).to(device);
    // LlamaForCausalLM::forward, with the output layer at the scored positions only.
    const Tensor hidden = model_.model->forward(batch.input_ids, model_.attention_context(batch)).data();
    ++counters_.forward_passes;
    counters_.padded_tokens += n_rows * len;
    std::vector<int64_t> positions;
    for (int64_t r = 0; r < n_rows; ++r) {
      const Row& row = *rows[start + r];
      for (int64_t p = row.first_scored; p < static_cast<int64_t>(row.input.size()); ++p) positions.push_back(r * len + p);
    }
    const Tensor logits = logits_at(model_, hidden, positions);
    int64_t offset = 0;
    for (int64_t r = 0; r < n_rows; ++r) {
      const Row& row = *rows[start + r];
      const int64_t n_scored = static_cast<int64_t>(row.input.size()) - row.first_scored;
      read_continuations(row.input, row.first_scored, row.readers, logits.narrow(0, offset, n_scored), requests,
                         results);
      offset += n_scored;
    }
    start += static_cast<size_t>(n_rows);
  }
}

void LlamaContinuationModel::score_shared(const std::vector<std::vector<Row*>>& groups,
                                          const std::vector<int64_t>& prefix_lengths,
                                          const std::vector<TokenSequenceRequest>& requests,
                                          std::vector<LoglikelihoodResult>& results) {
  const Device device = model_device(model_);
  const DType dtype = model_dtype(model_);
  const LlamaConfig& config = model_.config();
  std::vector<size_t> group_order(groups.size());
  std::iota(group_order.begin(), group_order.end(), 0);
  std::stable_sort(group_order.begin(), group_order.end(),
                   [&](size_t a, size_t b) { return prefix_lengths[a] > prefix_lengths[b]; });
  size_t start = 0;
  while (start < group_order.size()) {
    // 1. The prefixes of up to batch_tokens / longest groups, right-padded, into one cache.
    const int64_t prefix_len = prefix_lengths[group_order[start]];
    const int64_t n_groups = std::max<int64_t>(
        1, std::min<int64_t>(batch_tokens_ / prefix_len, static_cast<int64_t>(group_order.size() - start)));
    std::vector<int64_t> ids(n_groups * prefix_len, 0), mask(n_groups * prefix_len, 0), pos(n_groups * prefix_len, 0);
    for (int64_t g = 0; g < n_groups; ++g) {
      const size_t gi = group_order[start + g];
      const auto& in = groups[gi].front()->input;
      for (int64_t k = 0; k < prefix_lengths[gi]; ++k) {
        ids[g * prefix_len + k] = in[k];
        mask[g * prefix_len + k] = 1;
      }
      for (int64_t k = 0; k < prefix_len; ++k) pos[g * prefix_len + k] = k;
      counters_.tokens += prefix_lengths[gi];
    }
    KVCache prefix_cache(config, n_groups, prefix_len, dtype, device);
    run_cached(model_, from_vector<int64_t>(ids, {n_groups, prefix_len}).to(device),
               from_vector<int64_t>(pos, {n_groups, prefix_len}).to(device),
               from_vector<int64_t>(mask, {n_groups, prefix_len}).to(device), prefix_cache);
    ++counters_.forward_passes;
    counters_.padded_tokens += n_groups * prefix_len;

    // 2. Every member's suffix, longest first, in batches whose cache (prefix + suffix positions)
    // holds at most batch_tokens positions; each row starts from a copy of its group's prefix.
    struct Suffix {
      const Row* row;
      int64_t group_row;  // row of prefix_cache
      int64_t prefix;     // its group's prefix length
    };
    std::vector<Suffix> suffixes;
    for (int64_t g = 0; g < n_groups; ++g) {
      const size_t gi = group_order[start + g];
      for (const Row* r : groups[gi]) suffixes.push_back({r, g, prefix_lengths[gi]});
    }
    std::stable_sort(suffixes.begin(), suffixes.end(), [](const Suffix& a, const Suffix& b) {
      return static_cast<int64_t>(a.row->input.size()) - a.prefix > static_cast<int64_t>(b.row->input.size()) - b.prefix;
    });
    size_t s_start = 0;
    while (s_start < suffixes.size()) {
      const int64_t suffix_len = static_cast<int64_t>(suffixes[s_start].row->input.size()) - suffixes[s_start].prefix;
      const int64_t n_rows = std::max<int64_t>(
          1, std::min<int64_t>(batch_tokens_ / (prefix_len + suffix_len), static_cast<int64_t>(suffixes.size() - s_start)));
      std::vector<int64_t> s_ids(n_rows * suffix_len, 0), s_mask(n_rows * suffix_len, 0), s_pos(n_rows * suffix_len, 0);
      std::vector<int64_t> source(n_rows);
      for (int64_t r = 0; r < n_rows; ++r) {
        const Suffix& s = suffixes[s_start + r];
        const auto& in = s.row->input;
        const int64_t n = static_cast<int64_t>(in.size()) - s.prefix;
        for (int64_t k = 0; k < suffix_len; ++k) {
          if (k < n) {
            s_ids[r * suffix_len + k] = in[static_cast<size_t>(s.prefix + k)];
            s_mask[r * suffix_len + k] = 1;
          }
          s_pos[r * suffix_len + k] = s.prefix + k;  // rotary positions continue from the row's own prefix
        }
        source[r] = s.group_row;
        counters_.tokens += n;
      }
      KVCache cache(config, n_rows, prefix_len + suffix_len, dtype, device);
      const Tensor source_rows = from_vector<int64_t>(source, {n_rows}).to(device);
      for (size_t l = 0; l < cache.keys.size(); ++l) {
        cache.keys[l].narrow(1, 0, prefix_len).copy_(index_select(prefix_cache.keys[l], 0, source_rows));
        cache.values[l].narrow(1, 0, prefix_len).copy_(index_select(prefix_cache.values[l], 0, source_rows));
      }
      cache.key_valid.narrow(1, 0, prefix_len).copy_(index_select(prefix_cache.key_valid, 0, source_rows));
      cache.length = prefix_len;
      const Tensor hidden = run_cached(model_, from_vector<int64_t>(s_ids, {n_rows, suffix_len}).to(device),
                                       from_vector<int64_t>(s_pos, {n_rows, suffix_len}).to(device),
                                       from_vector<int64_t>(s_mask, {n_rows, suffix_len}).to(device), cache);
      ++counters_.forward_passes;
      counters_.padded_tokens += n_rows * suffix_len;
      // first_scored >= prefix by the grouping rule, so every scored position is in the suffix.
      std::vector<int64_t> positions;
      for (int64_t r = 0; r < n_rows; ++r) {
        const Suffix& s = suffixes[s_start + r];
        for (int64_t p = s.row->first_scored; p < static_cast<int64_t>(s.row->input.size()); ++p) {
          positions.push_back(r * suffix_len + p - s.prefix);
        }
      }
      const Tensor logits = logits_at(model_, hidden, positions);
      int64_t offset = 0;
      for (int64_t r = 0; r < n_rows; ++r) {
        const Row& row = *suffixes[s_start + r].row;
        const int64_t n_scored = static_cast<int64_t>(row.input.size()) - row.first_scored;
        read_continuations(row.input, row.first_scored, row.readers, logits.narrow(0, offset, n_scored), requests,
                           results);
        offset += n_scored;
      }
      s_start += static_cast<size_t>(n_rows);
    }
    start += static_cast<size_t>(n_groups);
  }
}

void LlamaContinuationModel::reset_decode_cache() {
  decode_cache_.reset();
  decode_tokens_.clear();
}

int32_t LlamaContinuationModel::greedy_next_token(const std::vector<int32_t>& tokens) {
  MLR_CHECK(!tokens.empty(), "eval: greedy_next_token needs at least one token");
  NoGradGuard no_grad;
  model_.eval();
  const Device device = model_device(model_);
  // The model reads the last max_length tokens at positions 0..n-1.
  const size_t n = std::min<size_t>(tokens.size(), static_cast<size_t>(max_length_));
  const std::vector<int32_t> window(tokens.end() - static_cast<std::ptrdiff_t>(n), tokens.end());
  // Cached keys and values are reusable when they belong to a strict prefix of this window.
  const bool reuse = decode_cache_ && decode_tokens_.size() < window.size() &&
                     std::equal(decode_tokens_.begin(), decode_tokens_.end(), window.begin());
  if (!reuse) reset_decode_cache();
  if (!decode_cache_ || decode_cache_->capacity() < static_cast<int64_t>(n)) {
    // Grow geometrically (up to max_length) so a long generation reallocates O(log n) times.
    const int64_t capacity =
        std::min<int64_t>(max_length_, std::max<int64_t>(2 * static_cast<int64_t>(n), 64));
    auto grown = std::make_unique<KVCache>(model_.config(), 1, capacity, model_dtype(model_), device);
    if (decode_cache_ && decode_cache_->length > 0) {
      const int64_t len = decode_cache_->length;
      for (size_t l = 0; l < grown->keys.size(); ++l) {
        grown->keys[l].narrow(1, 0, len).copy_(decode_cache_->keys[l].narrow(1, 0, len));
        grown->values[l].narrow(1, 0, len).copy_(decode_cache_->values[l].narrow(1, 0, len));
      }
      grown->key_valid.narrow(1, 0, len).copy_(decode_cache_->key_valid.narrow(1, 0, len));
      grown->length = len;
    }
    decode_cache_ = std::move(grown);
  }
  const int64_t done = static_cast<int64_t>(decode_tokens_.size());
  const int64_t fresh = static_cast<int64_t>(n) - done;
  std::vector<int64_t> ids(window.begin() + done, window.end()), pos(static_cast<size_t>(fresh));
  std::iota(pos.begin(), pos.end(), done);
  const Tensor logits = model_.forward_cached(from_vector<int64_t>(ids, {1, fresh}).to(device),
                                              from_vector<int64_t>(pos, {1, fresh}).to(device), Tensor(),
                                              *decode_cache_);
  ++counters_.forward_passes;
  counters_.tokens += fresh;
  counters_.padded_tokens += fresh;
  decode_tokens_ = window;
  const Tensor last = logits.select(0, 0).select(0, fresh - 1).to(Device::cpu(), DType::f32);
  return static_cast<int32_t>(argmax(last, 0).item<int64_t>());
}

}  // namespace mlr::eval
