#include "llama/generate.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include <fmt/format.h>

#include "tensor/ops.h"

namespace mlr {

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::length: return "length";
    case FinishReason::eos: return "eos";
    case FinishReason::stop_string: return "stop_string";
  }
  return "?";
}

std::vector<double> sampling_probabilities(const std::vector<float>& logits, double temperature, int64_t top_k,
                                           double top_p) {
  MLR_CHECK(!logits.empty(), "sampling: empty logits");
  MLR_CHECK(temperature > 0, "sampling: temperature must be positive, got {}", temperature);
  MLR_CHECK(top_k >= 0, "sampling: top_k must be >= 0, got {}", top_k);
  MLR_CHECK(top_p > 0 && top_p <= 1, "sampling: top_p must be in (0, 1], got {}", top_p);
  const size_t n = logits.size();
  const double neg_inf = -std::numeric_limits<double>::infinity();
  std::vector<double> scores(n);
  for (size_t i = 0; i < n; ++i) scores[i] = static_cast<double>(logits[i]) / temperature;

  if (top_k > 0 && static_cast<size_t>(top_k) < n) {
    std::vector<double> sorted = scores;
    std::nth_element(sorted.begin(), sorted.begin() + (top_k - 1), sorted.end(), std::greater<double>());
    const double kth = sorted[static_cast<size_t>(top_k - 1)];
    for (double& s : scores)
      if (s < kth) s = neg_inf;
  }

  auto softmax = [&](const std::vector<double>& s) {
    const double mx = *std::max_element(s.begin(), s.end());
    std::vector<double> p(n);
    double total = 0;
    for (size_t i = 0; i < n; ++i) total += (p[i] = s[i] == neg_inf ? 0.0 : std::exp(s[i] - mx));
    for (double& x : p) x /= total;
    return p;
  };
  std::vector<double> probs = softmax(scores);

  if (top_p < 1) {
    // Ascending by probability (ties by index, so the result does not depend on the sort).
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
    double cumulative = 0;
    for (size_t r = 0; r + 1 < n; ++r) {  // the last (most likely) token always stays
      cumulative += probs[order[r]];
      if (cumulative <= 1 - top_p) scores[order[r]] = neg_inf;
    }
    probs = softmax(scores);
  }
  return probs;
}

int64_t sample_from(const std::vector<double>& probabilities, double u) {
  MLR_CHECK(u >= 0 && u < 1, "sample_from: u must be in [0, 1), got {}", u);
  double cumulative = 0;
  int64_t last_possible = -1;
  for (size_t i = 0; i < probabilities.size(); ++i) {
    if (probabilities[i] <= 0) continue;
    cumulative += probabilities[i];
    last_possible = static_cast<int64_t>(i);
    if (u < cumulative) return last_possible;
  }
  // Rounding left the total just under u: the last token with any probability.
  MLR_CHECK(last_possible >= 0, "sample_from: every probability is zero");
  return last_possible;
}

namespace {

int64_t argmax_first(const float* row, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (row[i] > row[best]) best = i;
  return best;
}

}  // namespace

GenerationOutput generate(LlamaForCausalLM& model, const Tensor& input_ids, const Tensor& attention_mask,
                          const GenerationConfig& cfg) {
  const char* op = "generate";
  MLR_CHECK(input_ids.defined() && input_ids.dim() == 2 && input_ids.numel() > 0 &&
                (input_ids.dtype() == DType::i32 || input_ids.dtype() == DType::i64),
            "{}: input_ids must be a non-empty [batch, prompt] i32/i64 tensor, got {}", op,
            input_ids.defined() ? shape_str(input_ids.shape()) : "undefined");
  MLR_CHECK(cfg.max_new_tokens >= 0, "{}: max_new_tokens must be >= 0, got {}", op, cfg.max_new_tokens);
  MLR_CHECK(cfg.stop_strings.empty() || cfg.tokenizer != nullptr, "{}: stop_strings need a tokenizer", op);
  if (cfg.do_sample) sampling_probabilities({0.f}, cfg.temperature, cfg.top_k, cfg.top_p);  // validates
  const int64_t batch = input_ids.size(0), prompt = input_ids.size(1);
  const int64_t vocab = model.config().vocab_size;

  std::vector<int64_t> mask(static_cast<size_t>(batch * prompt), 1);
  if (attention_mask.defined()) {
    MLR_CHECK(attention_mask.shape() == input_ids.shape(), "{}: attention_mask {} must be shaped like input_ids {}", op,
              shape_str(attention_mask.shape()), shape_str(input_ids.shape()));
    mask = attention_mask.to_vector<int64_t>();
  }
  // Positions count real tokens (pads get 1, as transformers sets them).
  std::vector<int64_t> positions(mask.size()), next_position(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) {
    int64_t real = 0;
    for (int64_t t = 0; t < prompt; ++t) {
      const int64_t m = mask[static_cast<size_t>(b * prompt + t)];
      MLR_CHECK(m == 0 || m == 1, "{}: attention_mask[{}, {}] is {}, expected 0 or 1", op, b, t, m);
      MLR_CHECK(m == 1 || real == 0, "{}: prompt row {} has padding after a real token (position {}); prompts must be "
                "left padded", op, b, t);
      positions[static_cast<size_t>(b * prompt + t)] = m ? real : 1;
      real += m;
    }
    MLR_CHECK(real > 0, "{}: prompt row {} has no real token", op, b);
    next_position[static_cast<size_t>(b)] = real;
  }

  GenerationOutput out;
  out.tokens.resize(static_cast<size_t>(batch));
  out.finish_reasons.assign(static_cast<size_t>(batch), FinishReason::length);
  if (cfg.max_new_tokens == 0) {
    out.output_ids = zeros({batch, 0}, DType::i64);
    return out;
  }

  NoGradGuard no_grad;
  const Variable& embed = model.model->embed_tokens->weight();
  KVCache cache(model.config(), batch, prompt + cfg.max_new_tokens, embed.dtype(), embed.device());
  Tensor logits = model.forward_cached(input_ids, from_vector(positions, {batch, prompt}),
                                       from_vector(mask, {batch, prompt}), cache);
  Tensor last = logits.select(1, prompt - 1).to(Device::cpu(), DType::f32).contiguous();

  Generator gen(cfg.seed);
  std::vector<bool> finished(static_cast<size_t>(batch), false);
  std::vector<std::vector<int64_t>> columns;
  for (int64_t step = 0; step < cfg.max_new_tokens; ++step) {
    std::vector<double> draws;
    if (cfg.do_sample) draws = rand({batch}, gen, DType::f64).to_vector<double>();
    const float* rows = last.data<float>();
    std::vector<int64_t> next(static_cast<size_t>(batch), cfg.pad_token_id);
    for (int64_t b = 0; b < batch; ++b) {
      const size_t bi = static_cast<size_t>(b);
      if (finished[bi]) continue;
      const float* row = rows + b * vocab;
      int64_t token;
      if (cfg.do_sample) {
        std::vector<float> values(row, row + vocab);
        token = sample_from(sampling_probabilities(values, cfg.temperature, cfg.top_k, cfg.top_p), draws[bi]);
      } else {
        token = argmax_first(row, vocab);
      }
      next[bi] = token;
      out.tokens[bi].push_back(token);
      if (std::find(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end(), token) != cfg.eos_token_ids.end()) {
        finished[bi] = true;
        out.finish_reasons[bi] = FinishReason::eos;
      } else if (!cfg.stop_strings.empty()) {
        std::vector<int32_t> ids(out.tokens[bi].begin(), out.tokens[bi].end());
        const std::string text = cfg.tokenizer->decode(ids, /*skip_special=*/false);
        for (const std::string& stop : cfg.stop_strings) {
          if (!stop.empty() && text.find(stop) != std::string::npos) {
            finished[bi] = true;
            out.finish_reasons[bi] = FinishReason::stop_string;
          }
        }
      }
    }
    columns.push_back(next);
    const bool all_done = std::all_of(finished.begin(), finished.end(), [](bool f) { return f; });
    if (all_done || step + 1 == cfg.max_new_tokens) break;
    Tensor step_positions = from_vector(next_position, {batch, 1});
    for (int64_t& p : next_position) ++p;
    logits = model.forward_cached(from_vector(next, {batch, 1}), step_positions, Tensor(), cache);
    last = logits.select(1, 0).to(Device::cpu(), DType::f32).contiguous();
  }

  const int64_t steps = static_cast<int64_t>(columns.size());
  std::vector<int64_t> ids(static_cast<size_t>(batch * steps));
  for (int64_t s = 0; s < steps; ++s)
    for (int64_t b = 0; b < batch; ++b) ids[static_cast<size_t>(b * steps + s)] = columns[static_cast<size_t>(s)][static_cast<size_t>(b)];
  out.output_ids = from_vector(ids, {batch, steps});
  return out;
}

GenerationOutput generate(LlamaForCausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
                          const GenerationConfig& cfg) {
  MLR_CHECK(!prompts.empty(), "generate: no prompts");
  size_t longest = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    MLR_CHECK(!prompts[i].empty(), "generate: prompt {} is empty", i);
    longest = std::max(longest, prompts[i].size());
  }
  const int64_t batch = static_cast<int64_t>(prompts.size()), len = static_cast<int64_t>(longest);
  std::vector<int64_t> ids(static_cast<size_t>(batch * len), cfg.pad_token_id), mask(ids.size(), 0);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const size_t pad = longest - prompts[i].size();
    for (size_t t = 0; t < prompts[i].size(); ++t) {
      ids[i * longest + pad + t] = prompts[i][t];
      mask[i * longest + pad + t] = 1;
    }
  }
  return generate(model, from_vector(ids, {batch, len}), from_vector(mask, {batch, len}), cfg);
}

}  // namespace mlr
