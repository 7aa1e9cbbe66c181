#include "eval/scorer.h"

#include <algorithm>
#include <cmath>

#include "base/parallel_for.h"
#include "data/text.h"
#include "tensor/error.h"

namespace mlr::eval {

std::pair<std::string, std::string> move_trailing_whitespace(std::string_view context, std::string_view continuation) {
  const std::string_view kept = data::rstrip(context);
  std::string moved(context.substr(kept.size()));
  moved.append(continuation);
  return {std::string(kept), std::move(moved)};
}

std::vector<int32_t> harness_encode(const Tokenizer& tokenizer, const std::string& text, bool add_special_tokens) {
  // tok_encode turns special tokens off when the text already starts with the BOS text.
  if (add_special_tokens) {
    if (auto bos = tokenizer.bos_id()) {
      const std::string bos_text = tokenizer.id_to_piece(*bos);
      if (!bos_text.empty() && text.starts_with(bos_text)) add_special_tokens = false;
    }
  }
  return tokenizer.encode(text, add_special_tokens);
}

namespace {

// encode_pair that remembers the last context's ids, so the choices of one doc encode it once.
class PairEncoder {
 public:
  PairEncoder(const Tokenizer& tokenizer, const EncodePairOptions& options) : tokenizer_(tokenizer), options_(options) {}
  EncodedPair encode(std::string_view context, std::string_view continuation);

 private:
  const Tokenizer& tokenizer_;
  EncodePairOptions options_;
  bool cached_ = false;
  std::string cached_context_;
  std::vector<int32_t> cached_ids_;
};

EncodedPair PairEncoder::encode(std::string_view context, std::string_view continuation) {
  const Tokenizer& tokenizer = tokenizer_;
  EncodedPair out;
  if (context.empty()) {
    out.continuation = tokenizer.encode(std::string(continuation), false);
    MLR_CHECK(!out.continuation.empty(), "eval: empty context and a continuation that encodes to no tokens");
    auto prefix = tokenizer.bos_id();
    if (!prefix) prefix = tokenizer.eos_id();
    MLR_CHECK(prefix.has_value(), "eval: an empty context needs a BOS or EOS token to condition on; the tokenizer has neither");
    if (out.continuation.front() == *prefix) {
      out.context = {*prefix};
      out.continuation.erase(out.continuation.begin());
    } else {
      out.context = {*prefix};
    }
    return out;
  }
  auto [ctx, cont] = move_trailing_whitespace(context, continuation);
  const std::vector<int32_t> whole = harness_encode(tokenizer, ctx + cont, options_.add_special_tokens);
  if (!cached_ || ctx != cached_context_) {
    cached_ids_ = harness_encode(tokenizer, ctx, options_.add_special_tokens);
    cached_context_ = std::move(ctx);
    cached_ = true;
  }
  out.context = cached_ids_;
  const size_t n_context = std::min(out.context.size(), whole.size());
  out.continuation.assign(whole.begin() + static_cast<std::ptrdiff_t>(n_context), whole.end());
  return out;
}

// The token request of one string request: the split, then left truncation to max_length + 1.
TokenSequenceRequest make_token_request(EncodedPair pair, const LoglikelihoodRequest& request, int64_t max_length) {
  const auto n_cont = static_cast<int64_t>(pair.continuation.size());
  MLR_CHECK(n_cont >= 1, "eval: continuation \"{}\" encodes to no tokens after context \"{}\"",
            data::preview(request.continuation), data::preview(request.context));
  MLR_CHECK(n_cont <= max_length, "eval: continuation of {} tokens exceeds the model's max_length {}", n_cont, max_length);
  TokenSequenceRequest out;
  out.n_continuation = n_cont;
  out.tokens = std::move(pair.context);
  out.tokens.insert(out.tokens.end(), pair.continuation.begin(), pair.continuation.end());
  if (static_cast<int64_t>(out.tokens.size()) > max_length + 1) {  // keep the last max_length + 1 tokens
    out.tokens.erase(out.tokens.begin(), out.tokens.end() - (max_length + 1));
  }
  return out;
}

}  // namespace

EncodedPair encode_pair(const Tokenizer& tokenizer, std::string_view context, std::string_view continuation,
                        const EncodePairOptions& options) {
  return PairEncoder(tokenizer, options).encode(context, continuation);
}

std::vector<LoglikelihoodResult> LogprobFunctionModel::score(const std::vector<TokenSequenceRequest>& requests) {
  std::vector<LoglikelihoodResult> results;
  results.reserve(requests.size());
  for (const auto& request : requests) {
    const auto& tokens = request.tokens;
    const auto n_cont = static_cast<size_t>(request.n_continuation);
    MLR_CHECK(n_cont >= 1 && n_cont < tokens.size(), "eval: scoring {} continuation tokens of a {}-token sequence",
              n_cont, tokens.size());
    const std::vector<int32_t> input(tokens.begin(), tokens.end() - 1);
    const auto rows = fn_(input);
    MLR_CHECK(rows.size() == input.size(), "eval: log-prob function returned {} rows for {} input tokens", rows.size(),
              input.size());
    LoglikelihoodResult r;
    r.is_greedy = true;
    for (size_t j = 0; j < n_cont; ++j) {
      const size_t position = input.size() - n_cont + j;
      const int32_t target = tokens[tokens.size() - n_cont + j];
      const auto& row = rows[position];
      MLR_CHECK(target >= 0 && static_cast<size_t>(target) < row.size(), "eval: token {} outside the {}-entry log-prob row",
                target, row.size());
      r.logprob += row[static_cast<size_t>(target)];
      const auto argmax = std::max_element(row.begin(), row.end()) - row.begin();  // first maximum, as torch.argmax
      if (argmax != target) r.is_greedy = false;
    }
    results.push_back(r);
  }
  return results;
}

int32_t LogprobFunctionModel::greedy_next_token(const std::vector<int32_t>& tokens) {
  MLR_CHECK(!tokens.empty(), "eval: greedy_next_token needs at least one token");
  const auto rows = fn_(tokens);
  MLR_CHECK(rows.size() == tokens.size(), "eval: log-prob function returned {} rows for {} input tokens", rows.size(),
            tokens.size());
  const auto& row = rows.back();
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

TokenSequenceRequest TokenizedScorer::token_request(const LoglikelihoodRequest& request) const {
  return make_token_request(encode_pair(tokenizer_, request.context, request.continuation, options_), request,
                            model_.max_length());
}

std::vector<LoglikelihoodResult> TokenizedScorer::loglikelihood(const std::vector<LoglikelihoodRequest>& requests) {
  std::vector<TokenSequenceRequest> token_requests(requests.size());
  const int64_t max_length = model_.max_length();
  size_t n_threads = static_cast<size_t>(thread_count(threads_));
  n_threads = std::min(n_threads, std::max<size_t>(1, requests.size() / 64));  // small batches stay on this thread
  // One encoder (and its per-document context cache) per slice of the requests.
  parallel_for(static_cast<int64_t>(n_threads), static_cast<int>(n_threads), [&](int64_t slice) {
    PairEncoder encoder(tokenizer_, options_);
    const size_t begin = requests.size() * static_cast<size_t>(slice) / n_threads;
    const size_t end = requests.size() * static_cast<size_t>(slice + 1) / n_threads;
    for (size_t i = begin; i < end; ++i) {
      token_requests[i] = make_token_request(encoder.encode(requests[i].context, requests[i].continuation), requests[i],
                                             max_length);
    }
  });
  auto results = model_.score(token_requests);
  MLR_CHECK(results.size() == requests.size(), "eval: model returned {} scores for {} requests", results.size(),
            requests.size());
  return results;
}

std::vector<std::string> TokenizedScorer::generate_until(const std::vector<GenerationRequest>& requests) {
  std::vector<std::string> outputs;
  const auto eos = tokenizer_.eos_id();
  for (const auto& request : requests) {
    std::vector<std::string> until = request.until;
    if (eos) until.push_back(tokenizer_.id_to_piece(*eos));
    const int64_t max_context = model_.max_length() - request.max_gen_toks;
    MLR_CHECK(max_context >= 1, "eval: max_gen_toks {} leaves no room for the context in max_length {}",
              request.max_gen_toks, model_.max_length());
    std::vector<int32_t> tokens = harness_encode(tokenizer_, request.context, options_.add_special_tokens);
    if (static_cast<int64_t>(tokens.size()) > max_context) tokens.erase(tokens.begin(), tokens.end() - max_context);
    const size_t n_context = tokens.size();
    // StopSequenceCriteria: look for each stop string in the decoded last len(stop ids) + 2 tokens.
    std::vector<size_t> lookback;
    for (const auto& stop : until) lookback.push_back(tokenizer_.encode(stop, false).size() + 2);
    for (int64_t step = 0; step < request.max_gen_toks; ++step) {
      const int32_t next = model_.greedy_next_token(tokens);
      tokens.push_back(next);
      if (eos && next == *eos) break;
      bool stop_found = false;
      const size_t n_generated = tokens.size() - n_context;
      for (size_t s = 0; s < until.size() && !stop_found; ++s) {
        if (until[s].empty()) continue;
        const size_t take = std::min(lookback[s], n_generated);
        const std::vector<int32_t> tail(tokens.end() - static_cast<std::ptrdiff_t>(take), tokens.end());
        stop_found = tokenizer_.decode(tail, true).find(until[s]) != std::string::npos;
      }
      if (stop_found) break;
    }
    std::string text = tokenizer_.decode(std::vector<int32_t>(tokens.begin() + static_cast<std::ptrdiff_t>(n_context), tokens.end()), true);
    for (const auto& stop : until) {
      if (stop.empty()) continue;
      const size_t at = text.find(stop);
      if (at != std::string::npos) text.resize(at);
    }
    outputs.push_back(std::move(text));
  }
  return outputs;
}

}  // namespace mlr::eval
