#include "llama/generate.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "llama/tokenizer_detail.h"
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
      if (cfg.on_token) cfg.on_token(b, token);
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

namespace {

// A JSON id or list of ids under `key` (null or absent: none).
std::optional<std::vector<int64_t>> json_ids(const nlohmann::json& j, const char* key, const std::string& file) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  std::vector<int64_t> ids;
  auto one = [&](const nlohmann::json& v) {
    MLR_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0, "generate: {}: \"{}\" must be a token id or a list of ids, got {}",
              file, key, it->dump());
    ids.push_back(v.get<int64_t>());
  };
  if (it->is_array()) for (const auto& v : *it) one(v);
  else one(*it);
  return ids;
}

}  // namespace

CheckpointGenerationIds checkpoint_generation_ids(const std::string& dir, const Tokenizer* tokenizer) {
  namespace fs = std::filesystem;
  std::optional<std::vector<int64_t>> eos, pad;
  for (const char* name : {"generation_config.json", "config.json"}) {
    const fs::path path = fs::path(dir) / name;
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) continue;
    const nlohmann::json j = tokenizer_detail::parse_json(path, tokenizer_detail::read_file(path));
    MLR_CHECK(j.is_object(), "generate: {}: expected a JSON object at the top level", path.string());
    if (!eos) eos = json_ids(j, "eos_token_id", path.string());
    if (!pad) pad = json_ids(j, "pad_token_id", path.string());
  }
  CheckpointGenerationIds ids;
  if (eos) ids.eos_token_ids = *eos;
  else if (tokenizer && tokenizer->eos_id()) ids.eos_token_ids = {*tokenizer->eos_id()};
  if (pad && !pad->empty()) ids.pad_token_id = pad->front();
  else if (tokenizer && tokenizer->pad_id()) ids.pad_token_id = *tokenizer->pad_id();
  else if (!ids.eos_token_ids.empty()) ids.pad_token_id = ids.eos_token_ids.front();
  return ids;
}

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, std::vector<int32_t> context,
                                       std::vector<std::string> stop_strings)
    : tokenizer_(tokenizer), ids_(std::move(context)), stop_strings_(std::move(stop_strings)) {
  std::erase_if(stop_strings_, [](const std::string& s) { return s.empty(); });
  context_text_ = tokenizer_.decode(ids_, /*skip_special=*/true);
}

std::string IncrementalDecoder::push(int64_t token) {
  if (stopped_) return {};
  ids_.push_back(static_cast<int32_t>(token));
  return settle(false);
}

std::string IncrementalDecoder::finish() { return stopped_ ? std::string() : settle(true); }

std::string IncrementalDecoder::settle(bool final) {
  const std::string all = tokenizer_.decode(ids_, /*skip_special=*/true);
  // The continuation: what decoding the context with the new tokens adds to the context alone.
  // (When the context's text changes with what follows, e.g. its last character was incomplete,
  // the continuation starts where the two texts part.)
  size_t common = 0;
  while (common < context_text_.size() && common < all.size() && all[common] == context_text_[common]) ++common;
  while (common > 0 && common < all.size() && (static_cast<unsigned char>(all[common]) & 0xC0) == 0x80) --common;
  std::string text = all.substr(common);
  size_t end = text.size();
  // A stop string anywhere after what was printed ends the text.
  size_t stop_at = std::string::npos;
  for (const std::string& stop : stop_strings_) {
    const size_t from = emitted_text_.size() >= stop.size() ? emitted_text_.size() - stop.size() + 1 : 0;
    const size_t at = text.find(stop, from);
    if (at != std::string::npos) stop_at = std::min(stop_at, at);
  }
  if (stop_at != std::string::npos) {
    stopped_ = true;
    end = std::max(stop_at, emitted_text_.size());
  } else if (!final) {
    // An incomplete UTF-8 sequence at the end, or the replacement character a byte-fallback
    // decoder gives for one, waits for the next token.
    size_t lead = end;
    for (size_t k = 0; k < 4 && lead > 0; ++k) {
      const unsigned char c = static_cast<unsigned char>(text[lead - 1]);
      if ((c & 0xC0) != 0x80) {
        --lead;
        break;
      }
      --lead;
    }
    if (lead < end) {
      const unsigned char c = static_cast<unsigned char>(text[lead]);
      const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
      if (end - lead < need) end = lead;
    }
    if (end >= 3 && text.compare(end - 3, 3, "\xEF\xBF\xBD") == 0) end -= 3;
    // A tail that could grow into a stop string.
    for (const std::string& stop : stop_strings_) {
      for (size_t n = std::min(stop.size() - 1, end); n > 0; --n) {
        if (end - n >= emitted_text_.size() && text.compare(end - n, n, stop, 0, n) == 0) {
          end -= n;
          break;
        }
      }
    }
  }
  if (end <= emitted_text_.size()) return {};
  std::string piece = text.substr(emitted_text_.size(), end - emitted_text_.size());
  emitted_text_ += piece;
  return piece;
}

}  // namespace mlr
