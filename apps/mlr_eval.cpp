// mlr-eval: benchmark a LLaMA-family model as lm-evaluation-harness does (eval/README.md states the
// prompts, the scoring and the quirks we reproduce). Base checkpoints, base + adapter (unmerged, any
// registered adapter type, or --merge for the types that merge) and merged checkpoints.
//
//   mlr-eval --model /models/Llama-2-7b-hf --tasks mmlu --num-fewshot 5 --data-dir /data
//   mlr-eval --model base/ --adapter runs/multilora/final --tasks boolq,cb,copa --data-dir /data \
//            --output results.json --log-samples samples/
//
// Task files come from --data-dir in the layout of the public releases (each task's default path:
// mmlu/{dev,test}/*.csv, boolq/val.jsonl, superglue/{CB,COPA,MultiRC,RTE,WiC,WSC}/val.jsonl,
// gsm8k/test.jsonl; a train.jsonl beside the scored file is the few-shot pool), or from
// --task-file NAME=PATH [--fewshot-file NAME=PATH]. The tasks are those registered in eval/tasks/.
#include <chrono>
#include <filesystem>
#include <sstream>
#include <iostream>
#include <map>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "eval/evaluator.h"
#include "eval/llama_scorer.h"
#include "eval/task_files.h"
#include "eval/task_registry.h"
#include "llama/model.h"
#include "llama/tokenizer.h"
#include "multilora/inject.h"
#include "base/atomic_file.h"
#include "tensor/error.h"

namespace fs = std::filesystem;
using namespace mlr;

namespace {

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    const std::string part = s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!part.empty()) out.push_back(part);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::map<std::string, std::string> parse_assignments(const std::vector<std::string>& items, const char* option) {
  std::map<std::string, std::string> out;
  for (const std::string& item : items) {
    const size_t eq = item.find('=');
    MLR_CHECK(eq != std::string::npos && eq > 0, "mlr-eval: {} \"{}\": expected NAME=PATH", option, item);
    out[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mlr-eval: MMLU, BoolQ, SuperGLUE, ... scored as lm-evaluation-harness scores them"};
  std::string model_dir, adapter_dir, tasks_arg, data_dir, output, samples_dir, device_name = "auto", dtype_arg = "f32";
  std::vector<std::string> task_files, fewshot_files;
  std::optional<int64_t> num_fewshot;
  std::optional<double> limit;
  int64_t batch_tokens = 16384, max_length = 0;
  uint64_t seed = 1234;
  std::string tokenizer_backend = "transformers";
  bool merge = false, no_bos = false, no_shared_prefix = false;
  app.add_option("--model", model_dir, "Hugging Face checkpoint directory")->required();
  app.add_option("--adapter", adapter_dir, "adapter directory (any registered adapter type: its adapter_config.json says which)");
  app.add_flag("--merge", merge, "merge the adapter into the weights before scoring (types with a fixed dense update, e.g. LoRA, MultiLoRA, DoRA)");
  app.add_option("--tasks", tasks_arg, "comma-separated: " + eval::known_task_names())->required();
  app.add_option("--data-dir", data_dir, "directory with the task files in the public layout");
  app.add_option("--task-file", task_files, "NAME=PATH: the scored split of a task");
  app.add_option("--fewshot-file", fewshot_files, "NAME=PATH: the few-shot pool of a task");
  app.add_option("--num-fewshot", num_fewshot, "shots (default: each task's default, 0)");
  app.add_option("--limit", limit, ">= 1: the first N documents of each task; < 1: that fraction");
  app.add_option("--seed", seed, "few-shot sampling seed (the harness's default 1234)");
  app.add_option("--device", device_name, "auto, cpu, cuda, cuda:N");
  app.add_option("--dtype", dtype_arg, "f32, bf16 or f16");
  app.add_option("--batch-tokens", batch_tokens, "padded tokens per forward pass");
  app.add_option("--max-length", max_length, "context window (default: max_position_embeddings)");
  app.add_flag("--no-shared-prefix", no_shared_prefix,
               "score every request on its own (the harness's batching) instead of running shared contexts once");
  app.add_flag("--no-bos", no_bos, "encode without the tokenizer's BOS (lm-evaluation-harness v0.4.2 - v0.4.9.1)");
  app.add_option("--tokenizer-backend", tokenizer_backend,
                 "transformers (default: the tokens of transformers' AutoTokenizer) or sentencepiece (the "
                 "sentencepiece library's own tokens of tokenizer.model)");
  app.add_option("--output", output, "results JSON (the harness's layout)");
  app.add_option("--log-samples", samples_dir, "directory for one JSONL per task with per-choice log-likelihoods");
  CLI11_PARSE(app, argc, argv);
  try {
    const auto files = parse_assignments(task_files, "--task-file");
    const auto shots = parse_assignments(fewshot_files, "--fewshot-file");
    const eval::LoadedTasks loaded = eval::load_named_tasks(split_commas(tasks_arg), data_dir, files, shots);
    const std::vector<eval::Task>& tasks = loaded.tasks;
    const std::vector<eval::TaskGroup>& groups = loaded.groups;

    const DType dtype = parse_dtype(dtype_arg);
    const Device device = device_name == "auto" ? (cuda_available() ? Device::cuda(0) : Device::cpu()) : parse_device(device_name);
    const auto t0 = std::chrono::steady_clock::now();
    auto model = LlamaForCausalLM::from_pretrained(model_dir, dtype, device);
    std::string model_name = model_dir;
    if (!adapter_dir.empty()) {
      const auto adapters = inject_adapter_from_file(*model, adapter_dir);
      if (merge) merge_adapters(*model);
      model_name += fmt::format(" + {} ({} modules{})", adapter_dir, adapters.size(), merge ? ", merged" : "");
    }
    const auto tokenizer = load_tokenizer(model_dir, parse_tokenizer_backend(tokenizer_backend));
    eval::SharedPrefixOptions sharing;
    sharing.enabled = !no_shared_prefix;
    eval::LlamaContinuationModel lm(*model, max_length, batch_tokens, sharing);
    eval::EncodePairOptions encode;
    encode.add_special_tokens = !no_bos;
    eval::TokenizedScorer scorer(*tokenizer, lm, model_name, encode);
    eval::EvalOptions options;
    options.num_fewshot = num_fewshot;
    options.limit = limit;
    options.fewshot_seed = seed;
    options.log_samples = !samples_dir.empty();
    const eval::EvalResults results = eval::evaluate(tasks, groups, scorer, options);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::cout << eval::results_table(results);
    std::cout << fmt::format("{} tasks, {} forward passes over {} tokens, {:.1f} s on {} in {}\n", results.tasks.size(),
                             lm.counters().forward_passes, lm.counters().tokens, seconds, device.str(), dtype_name(dtype));
    if (!output.empty()) {
      nlohmann::json j = eval::results_json(results);
      j["total_evaluation_time_seconds"] = fmt::format("{:.3f}", seconds);
      mlr::atomic_write_file(output, j.dump(2) + "\n");
      std::cout << "results: " << output << "\n";
    }
    if (!samples_dir.empty()) {
      fs::create_directories(samples_dir);
      for (const eval::TaskResult& t : results.tasks) {
        std::ostringstream samples;
        eval::write_samples_jsonl(t, samples);
        mlr::atomic_write_file(fs::path(samples_dir) / fmt::format("samples_{}.jsonl", t.name), samples.str());
      }
      std::cout << "samples: " << samples_dir << "\n";
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
