// Log-likelihood scoring speed of LlamaContinuationModel on MMLU-style 5-shot requests (one
// description and five solved examples shared by every question of a subject, four single-token
// choices " A".." D" per question), by scoring path:
//   one at a time   every request alone through the plain path (the harness with batch size 1)
//   plain batched   the harness's way: all requests sorted by length, right-padded batches
//   dedup only      identical inputs (a question's four choices) run once, nothing else shared
//   shared prefix   deduplication + each subject's few-shot prefix run once into a KV cache
// requests/s and tokens/s count the requests and their input tokens (tokens[:-1]), the same
// numerator for every path; "model tok" is what each path actually ran through the model.
//
// On a CPU shared with other jobs, set OMP_NUM_THREADS / OPENBLAS_NUM_THREADS to the free cores:
// oversubscribed thread pools spin and distort the timings of the many-small-op paths most.
//
// usage: eval_bench [model_dir=configs/demo/model] [questions=120] [subjects=4] [batch_tokens=16384]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "eval/llama_scorer.h"
#include "llama/model.h"
#include "llama/tokenizer.h"
#include "tensor/device.h"
#include "tensor/error.h"

using namespace mlr;
using namespace mlr::eval;

namespace {

std::vector<LoglikelihoodRequest> mmlu_style_requests(int questions, int subjects) {
  const char* names[] = {"astronomy", "college biology", "high school physics", "world religions", "virology"};
  std::vector<LoglikelihoodRequest> requests;
  for (int s = 0; s < subjects; ++s) {
    std::string fewshot =
        fmt::format("The following are multiple choice questions (with answers) about {}.\n\n", names[s % 5]);
    for (int e = 0; e < 5; ++e) {
      fewshot += fmt::format("Which value is the product of {} and {}?\nA. {}\nB. {}\nC. {}\nD. {}\nAnswer: {}\n\n",
                             e + 2 + s, e + 3, (e + 2 + s) * (e + 3), e + 5, e * 7 + 1, e + 11, "ABCD"[e % 4]);
    }
    for (int q = s; q < questions; q += subjects) {
      const std::string context =
          fewshot + fmt::format("Question {} asks which planet is number {} from the sun?\nA. Mars\nB. Venus {}\n"
                                "C. Earth\nD. Saturn\nAnswer:", q, q % 8 + 1, q * 13);
      for (const char* choice : {" A", " B", " C", " D"}) requests.push_back({context, choice});
    }
  }
  return requests;
}

struct Row {
  std::string path;
  double seconds = 0;
  ScorerCounters counters;
};

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string model_dir = argc > 1 ? argv[1] : "configs/demo/model";
    const int questions = argc > 2 ? std::atoi(argv[2]) : 120;
    const int subjects = argc > 3 ? std::atoi(argv[3]) : 4;
    const int64_t batch_tokens = argc > 4 ? std::atoll(argv[4]) : 16384;
    MLR_CHECK(questions > 0 && subjects > 0 && batch_tokens > 0,
              "eval_bench: questions {}, subjects {} and batch_tokens {} must be positive", questions, subjects,
              batch_tokens);
    const auto tokenizer = load_tokenizer(model_dir);
    const auto requests = mmlu_style_requests(questions, subjects);

    std::vector<Device> devices = {Device::cpu()};
    if (cuda_available()) devices.push_back(Device::cuda(0));
    for (const Device device : devices) {
      auto model = LlamaForCausalLM::from_pretrained(model_dir, DType::f32, device);
      int64_t request_tokens = 0;
      {
        LlamaContinuationModel probe(*model);
        TokenizedScorer scorer(*tokenizer, probe, "probe");
        for (const auto& r : requests) request_tokens += static_cast<int64_t>(scorer.token_request(r).tokens.size()) - 1;
      }
      std::vector<Row> rows;
      std::vector<double> reference;
      auto run = [&](const std::string& path, SharedPrefixOptions options, bool one_at_a_time) {
        LlamaContinuationModel lm(*model, 0, batch_tokens, options);
        TokenizedScorer scorer(*tokenizer, lm, path);
        lm.greedy_next_token({1, 2});  // warm-up: allocator and thread pools
        lm.reset_counters();
        std::vector<LoglikelihoodResult> results;
        const auto t0 = std::chrono::steady_clock::now();
        if (one_at_a_time) {
          for (const auto& r : requests) results.push_back(scorer.loglikelihood({r}).front());
        } else {
          results = scorer.loglikelihood(requests);
        }
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        // Every path must give the same numbers (see tests/eval/llama_scorer_test.cpp).
        double worst = 0;
        for (size_t i = 0; i < results.size(); ++i) {
          if (reference.empty()) continue;
          worst = std::max(worst, std::abs(results[i].logprob - reference[i]) / std::max(1.0, std::abs(reference[i])));
        }
        MLR_CHECK(worst < 1e-4, "eval_bench: path '{}' differs from the first path by {} (relative)", path, worst);
        if (reference.empty()) {
          for (const auto& r : results) reference.push_back(r.logprob);
        }
        rows.push_back({path, seconds, lm.counters()});
      };
      run("one at a time", SharedPrefixOptions{.enabled = false}, true);
      run("plain batched", SharedPrefixOptions{.enabled = false}, false);
      run("dedup only", SharedPrefixOptions{true, INT64_MAX}, false);
      run("shared prefix", SharedPrefixOptions{}, false);

      std::cout << fmt::format("\n{} on {} (f32): {} MMLU-style 5-shot questions in {} subjects, {} requests, "
                               "{} input tokens ({:.0f} per request), batch_tokens {}\n",
                               model_dir, device.str(), questions, subjects, requests.size(), request_tokens,
                               static_cast<double>(request_tokens) / static_cast<double>(requests.size()),
                               batch_tokens);
      std::cout << fmt::format("{:<15} {:>9} {:>7} {:>11} {:>11} {:>11} {:>12} {:>8}\n", "path", "time s", "passes",
                               "model tok", "padded tok", "requests/s", "tokens/s", "speedup");
      for (const auto& r : rows) {
        std::cout << fmt::format("{:<15} {:>9.3f} {:>7} {:>11} {:>11} {:>11.1f} {:>12.0f} {:>7.2f}x\n", r.path,
                                 r.seconds, r.counters.forward_passes, r.counters.tokens, r.counters.padded_tokens,
                                 static_cast<double>(requests.size()) / r.seconds,
                                 static_cast<double>(request_tokens) / r.seconds, rows[1].seconds / r.seconds);
      }
    }
    std::cout << "\nspeedup is against 'plain batched' (the harness's batching). All paths give the same "
                 "log-likelihoods (checked above to 1e-4 relative; the tests hold them to 1e-5). The shared path "
                 "runs each subject's few-shot prefix once and each question's suffix once for its four choices, "
                 "so its work falls with the prompt share the questions have in common.\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "eval_bench: " << e.what() << "\n";
    return 1;
  }
}
