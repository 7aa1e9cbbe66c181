// LLaMA benchmark on one GPU (issue 4's load numbers; the training-step rows of shared/BASELINES.md).
//
// (a) Checkpoint load: builds a LLaMA-shaped model with random bf16 weights on the GPU, writes it
//     with our writer (save_pretrained: sharded safetensors + index) under --dir, frees it, then
//     times LlamaForCausalLM::from_pretrained(dir, bf16, cuda) and reports the resident GPU memory
//     (the pool's allocated bytes, as torch.cuda.memory_allocated counts) against 2 bytes per
//     parameter. The files were just written, so the page cache is warm: the time is the
//     parse + convert + host-to-device part, not the disk.
// (b) Training steps: tokens/s and peak GPU memory of full steps (forward, cross-entropy on shifted
//     targets, backward, AdamW step, zero_grad), as train/trainer.cpp runs them, bf16 weights and
//     activations, f32 adapters and optimizer state. Random weights and random token ids (every
//     position real). Each row builds a fresh model, runs --warmup untimed steps, then reports the
//     median of --steps timed steps. Peak memory counts from before the model is built, like the
//     baselines' torch.cuda.max_memory_allocated. The BASELINES.md figure (transformers + PEFT on an
//     H100, measured on another day) sits next to ours: measure it again in the same session before
//     quoting a ratio as final.
//
// Usage: llama_bench [--quick] [--smoke] [--first-run] [--load-shape 1.1B|7B] [--dir DIR] [--steps N] [--warmup N]
//                    [--no-load] [--keep]
//   --quick       the 1.1B (TinyLlama-shaped) rows and a 1.1B checkpoint for (a); default: every row and
//                 a 7B (LLaMA-2-shaped) checkpoint
//   --load-shape  the checkpoint shape of (a) whatever --quick says (e.g. --quick --load-shape 7B)
//   --first-run   only LoRA r32 on q,k,v,o: 1.1B at 8 x 2048 and 7B at 4 x 2048 (scripts/gpu_first_run.sh)
//   --dir     where the checkpoint is written (a fresh subdirectory, removed afterwards unless --keep)
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "autograd/functions.h"
#include "llama/model.h"
#include "multilora/inject.h"
#include "multilora/multilora.h"
#include "optim/adamw.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace fs = std::filesystem;
using namespace mlr;

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

LlamaConfig llama2_7b() {
  LlamaConfig c;
  c.hidden_size = 4096;
  c.num_hidden_layers = 32;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 32;
  c.head_dim = 128;
  c.intermediate_size = 11008;
  c.vocab_size = 32000;
  c.rms_norm_eps = 1e-5;
  c.max_position_embeddings = 4096;
  return c;
}

LlamaConfig tinyllama_1b() {
  LlamaConfig c;
  c.hidden_size = 2048;
  c.num_hidden_layers = 22;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 4;
  c.head_dim = 64;
  c.intermediate_size = 5632;
  c.vocab_size = 32000;
  c.rms_norm_eps = 1e-5;
  c.max_position_embeddings = 2048;
  return c;
}

// --smoke: two layers, head dim 64 (the flash kernel's), 512-token vocabulary: every code path of
// the benchmark in seconds (a check that it runs, on a GPU or the emulated device; no figures).
LlamaConfig smoke_config() {
  LlamaConfig c;
  c.hidden_size = 256;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.intermediate_size = 512;
  c.vocab_size = 512;
  c.rms_norm_eps = 1e-5;
  c.max_position_embeddings = 256;
  return c;
}

LlamaConfig config_of(const std::string& shape) {
  if (shape == "7B") return llama2_7b();
  if (shape == "1.1B") return tinyllama_1b();
  return smoke_config();
}

struct Options {
  bool quick = false, smoke = false, load = true, keep = false;
  bool first_run = false;  // only the LoRA r32 q,k,v,o rows of scripts/gpu_first_run.sh
  std::string dir = "/tmp";
  std::string load_shape;  // empty: 1.1B with --quick, else 7B
  int steps = 5, warmup = 2;
};

int parse_count(const std::string& flag, const char* value) {
  char* end = nullptr;
  const long v = std::strtol(value, &end, 10);
  MLR_CHECK(end != value && *end == '\0' && v >= 0 && v <= 1000, "llama_bench: {} '{}' is not a count in [0, 1000]",
            flag, value);
  return static_cast<int>(v);
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* {
      MLR_CHECK(i + 1 < argc, "llama_bench: {} needs a value", a);
      return argv[++i];
    };
    if (a == "--quick") o.quick = true;
    else if (a == "--smoke") o.smoke = true;
    else if (a == "--first-run") o.first_run = true;
    else if (a == "--no-load") o.load = false;
    else if (a == "--keep") o.keep = true;
    else if (a == "--dir") o.dir = value();
    else if (a == "--load-shape") {
      o.load_shape = value();
      MLR_CHECK(o.load_shape == "1.1B" || o.load_shape == "7B", "llama_bench: --load-shape '{}' is not 1.1B or 7B",
                o.load_shape);
    }
    else if (a == "--steps") o.steps = parse_count(a, value());
    else if (a == "--warmup") o.warmup = parse_count(a, value());
    else
      throw Error(fmt::format("llama_bench: unknown argument '{}' (usage: llama_bench [--quick] [--smoke] [--load-shape 1.1B|7B] [--dir DIR] "
                              "[--steps N] [--warmup N] [--no-load] [--keep])",
                              a));
  }
  MLR_CHECK(o.steps >= 1, "llama_bench: --steps must be at least 1");
  if (o.smoke) {
    o.steps = 1;
    o.warmup = 0;
  }
  return o;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

const Device kGpu = Device::cuda(0);

// (a) write a random bf16 checkpoint of `config`, load it back onto the GPU, report.
void checkpoint_load(const LlamaConfig& config, const std::string& shape_name, const Options& options) {
  const fs::path dir = fs::path(options.dir) / fmt::format("mlr_llama_bench_{}_{}", shape_name, ::getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  int64_t params = 0;
  double write_s = 0;
  {
    Generator gen(1);
    auto t0 = std::chrono::steady_clock::now();
    LlamaForCausalLM model(config, &gen, ParamOptions{DType::bf16, kGpu, false});
    synchronize(kGpu);
    const double init_s = seconds_since(t0);
    params = model.num_parameters();
    t0 = std::chrono::steady_clock::now();
    model.save_pretrained(dir.string());
    write_s = seconds_since(t0);
    std::printf("(a) %s checkpoint: %.3fB parameters, random bf16 init on the GPU %.1f s, save_pretrained to %s %.1f s\n",
                shape_name.c_str(), params / 1e9, init_s, dir.c_str(), write_s);
  }
  uint64_t file_bytes = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) file_bytes += e.file_size();
  const MemoryStats before = memory_stats(kGpu);
  reset_peak_memory(kGpu);
  auto t0 = std::chrono::steady_clock::now();
  auto model = LlamaForCausalLM::from_pretrained(dir.string(), DType::bf16, kGpu);
  synchronize(kGpu);
  const double load_s = seconds_since(t0);
  const MemoryStats after = memory_stats(kGpu);
  const double resident = static_cast<double>(after.current_bytes - before.current_bytes);
  std::printf("    from_pretrained(bf16, cuda:0): %.2f s for %.2f GiB of files (%.2f GB/s, page cache warm)\n", load_s,
              file_bytes / kGiB, file_bytes / load_s / 1e9);
  std::printf("    resident GPU memory %.2f GiB (weights at 2 bytes/parameter: %.2f GiB), peak during load %.2f GiB\n\n",
              resident / kGiB, 2.0 * params / kGiB, after.peak_bytes / kGiB);
  model.reset();
  if (!options.keep) fs::remove_all(dir);
}

enum class Method { lora, multilora, full };

struct Row {
  std::string shape;  // "7B" or "1.1B"
  Method method;
  int64_t rank;       // LoRA r, or MultiLoRA total rank
  int64_t n_modules;  // MultiLoRA
  bool all_linear;    // targets: q,k,v,o or every linear layer of the decoder
  int64_t batch, seq;
  bool checkpointing;
  bool quick;                 // part of --quick
  std::string baseline;       // BASELINES.md figure (tokens/s) or a note
  double baseline_tokens_s;   // 0: none
  double baseline_gib;
};

std::string describe(const Row& r) {
  std::string targets = r.all_linear ? "all linear" : "q,k,v,o";
  switch (r.method) {
    case Method::lora: return fmt::format("LoRA r{} on {}", r.rank, targets);
    case Method::multilora: return fmt::format("MultiLoRA n={} r={} on {}", r.n_modules, r.rank / r.n_modules, targets);
    case Method::full: return "full fine-tuning (bf16 weights, f32 master + moments)";
  }
  return "";
}

struct Result {
  double tokens_s = 0, peak_gib = 0, step_s = 0, loss = 0;
  std::string error;
};

Result run_row(const Row& row, const Options& options) {
  Result result;
  const LlamaConfig config = config_of(row.shape);
  reset_peak_memory(kGpu);
  try {
    Generator gen(7);
    LlamaForCausalLM model(config, &gen, ParamOptions{DType::bf16, kGpu, false});
    model.set_gradient_checkpointing(row.checkpointing);
    if (row.method == Method::full) {
      model.requires_grad_(true);
    } else {
      InjectionSpec spec;
      spec.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj"};
      if (row.all_linear) spec.target_modules.insert(spec.target_modules.end(), {"gate_proj", "up_proj", "down_proj"});
      if (row.method == Method::lora) {
        LoraConfig lora;
        lora.r = row.rank;
        lora.alpha = 2.0 * static_cast<double>(row.rank);
        lora.dtype = DType::f32;
        spec.adapter = std::make_shared<LoraConfig>(lora);
      } else {
        MultiLoraConfig multilora;
        multilora.r = row.rank;
        multilora.n_modules = row.n_modules;
        multilora.alpha = 2.0 * static_cast<double>(row.rank);
        multilora.dtype = DType::f32;
        spec.adapter = std::make_shared<MultiLoraConfig>(multilora);
      }
      inject_adapters(model, spec);
    }
    model.train();
    AdamWOptions adam;
    adam.lr = 1e-5;
    adam.weight_decay = 0.0;
    AdamW optimizer(make_param_groups(model.named_parameters(/*trainable_only=*/true), adam));

    // Random ids; targets are the ids shifted left by one (the last position ignored).
    const int64_t n = row.batch * row.seq;
    std::mt19937 rng(11);
    std::uniform_int_distribution<int64_t> pick(0, config.vocab_size - 1);
    std::vector<int64_t> ids(static_cast<size_t>(n)), targets(static_cast<size_t>(n));
    for (auto& id : ids) id = pick(rng);
    for (int64_t b = 0; b < row.batch; ++b)
      for (int64_t t = 0; t < row.seq; ++t)
        targets[static_cast<size_t>(b * row.seq + t)] = t + 1 < row.seq ? ids[static_cast<size_t>(b * row.seq + t + 1)] : -100;
    LlamaBatch batch;
    batch.input_ids = from_vector(ids, {row.batch, row.seq}).to(kGpu);
    const Tensor target_tensor = from_vector(targets, {n}).to(kGpu);

    std::vector<double> times;
    for (int step = 0; step < options.warmup + options.steps; ++step) {
      synchronize(kGpu);
      const auto t0 = std::chrono::steady_clock::now();
      CausalLMOutput out = model.forward(batch);
      Variable loss = cross_entropy(out.logits.reshape({n, config.vocab_size}), target_tensor, -100, Reduction::mean);
      out = CausalLMOutput();
      loss.backward();
      optimizer.step();
      optimizer.zero_grad();
      result.loss = loss.data().to(DType::f64).item<double>();  // synchronises
      synchronize(kGpu);
      if (step >= options.warmup) times.push_back(seconds_since(t0));
    }
    std::sort(times.begin(), times.end());
    result.step_s = times[times.size() / 2];
    result.tokens_s = static_cast<double>(n) / result.step_s;
  } catch (const Error& e) {
    result.error = e.what();
  }
  result.peak_gib = memory_stats(kGpu).peak_bytes / kGiB;
  return result;
}

// The methods of the 1.1B rows at the smoke shape.
std::vector<Row> smoke_rows() {
  return {
      {"smoke", Method::lora, 8, 1, false, 1, 64, false, true, "-", 0, 0},
      {"smoke", Method::lora, 8, 1, true, 1, 64, true, true, "-", 0, 0},
      {"smoke", Method::multilora, 8, 2, false, 1, 64, false, true, "-", 0, 0},
      {"smoke", Method::full, 0, 1, false, 1, 64, false, true, "-", 0, 0},
  };
}

std::vector<Row> all_rows() {
  // BASELINES.md: transformers + PEFT, bf16, SDPA, fused torch AdamW, H100 80GB (2026-11-22).
  return {
      {"1.1B", Method::lora, 32, 1, false, 8, 2048, false, true, "46,471", 46471, 40.2},
      {"1.1B", Method::lora, 32, 1, false, 8, 2048, true, true, "-", 0, 0},
      {"1.1B", Method::multilora, 32, 4, false, 8, 2048, false, true, "-", 0, 0},
      {"1.1B", Method::full, 0, 1, false, 8, 2048, false, true, "43,899 (HF Trainer: fp32 master+moments)", 43899, 56.6},
      {"7B", Method::lora, 32, 1, false, 4, 2048, false, false, "11,234", 11234, 68.3},
      {"7B", Method::lora, 32, 1, false, 4, 2048, true, false, "8,233", 8233, 18.5},
      {"7B", Method::lora, 16, 1, true, 8, 2048, true, false, "6,250", 6250, 24.2},
      {"7B", Method::lora, 32, 1, false, 2, 2048, false, false, "10,909", 10909, 38.6},
      {"7B", Method::multilora, 32, 4, false, 2, 2048, false, false, "8,309 (per-module loop)", 8309, 47.4},
      {"7B", Method::multilora, 32, 4, false, 4, 2048, false, false, "out of memory (loop)", 0, 0},
  };
}

// --first-run: LoRA r32 on q,k,v,o without checkpointing, 1.1B at 8 x 2048 and 7B at 4 x 2048 (the
// rows with a PEFT figure), or the first smoke row.
bool is_first_run_row(const Row& r) {
  if (r.method != Method::lora || r.all_linear || r.checkpointing) return false;
  if (r.shape == "smoke") return true;
  return r.rank == 32 && r.batch == (r.shape == "7B" ? 4 : 8);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options options = parse_args(argc, argv);
    if (cuda_device_count() == 0) {
      std::printf("llama_bench: no CUDA device on this machine\n");
      return 0;
    }
    std::printf("llama_bench%s%s: bf16 weights and activations on cuda:0; %d warm-up + %d timed steps per row (median)\n\n",
                options.quick ? " --quick" : "", options.smoke ? " --smoke" : "", options.warmup, options.steps);
    if (options.load) {
      const std::string shape = options.smoke                ? "smoke"
                                : !options.load_shape.empty() ? options.load_shape
                                : options.quick               ? "1.1B"
                                                              : "7B";
      checkpoint_load(config_of(shape), shape, options);
    }
    std::printf("(b) training steps (forward, cross-entropy, backward, AdamW, zero_grad)\n");
    std::printf("%-5s | %-54s | %-9s | %-4s | %9s | %8s | %6s | %-42s | %12s | %8s\n", "model", "method", "batch",
                "ckpt", "tokens/s", "peak GiB", "loss", "BASELINES.md tokens/s (HF+PEFT)", "ours/theirs", "their GiB");
    int failures = 0;
    // Our LoRA q,k,v,o rows by shape, batch and checkpointing: the same-run reference for MultiLoRA
    // at equal total rank (the stacked product should cost what that LoRA costs).
    std::map<std::string, Result> lora_results;
    auto same_setting = [](const Row& r) {
      return fmt::format("{} {}x{} {} r{}", r.shape, r.batch, r.seq, r.checkpointing, r.rank);
    };
    for (const Row& row : options.smoke ? smoke_rows() : all_rows()) {
      if (options.quick && !row.quick) continue;
      if (options.first_run && !is_first_run_row(row)) continue;
      const Result r = run_row(row, options);
      const std::string batch = fmt::format("{} x {}", row.batch, row.seq);
      if (!r.error.empty()) {
        ++failures;
        std::printf("%-5s | %-54s | %-9s | %-4s | %9s | %8.1f | %6s | %-42s | %12s | %8s\n", row.shape.c_str(),
                    describe(row).c_str(), batch.c_str(), row.checkpointing ? "on" : "off", "failed", r.peak_gib, "-",
                    row.baseline.c_str(), "-", row.baseline_gib > 0 ? fmt::format("{:.1f}", row.baseline_gib).c_str() : "-");
        std::printf("      error: %s\n", r.error.c_str());
        continue;
      }
      const std::string ratio = row.baseline_tokens_s > 0 ? fmt::format("{:.2f}x", r.tokens_s / row.baseline_tokens_s) : "-";
      std::printf("%-5s | %-54s | %-9s | %-4s | %9.0f | %8.1f | %6.2f | %-42s | %12s | %8s\n", row.shape.c_str(),
                  describe(row).c_str(), batch.c_str(), row.checkpointing ? "on" : "off", r.tokens_s, r.peak_gib, r.loss,
                  row.baseline.c_str(), ratio.c_str(),
                  row.baseline_gib > 0 ? fmt::format("{:.1f}", row.baseline_gib).c_str() : "-");
      if (row.method == Method::lora && !row.all_linear) lora_results[same_setting(row)] = r;
      const auto lora = lora_results.find(same_setting(row));
      if (row.method == Method::multilora && lora != lora_results.end())
        std::printf("      MultiLoRA / our LoRA r%lld at the same shape: %.2fx tokens/s, %+.1f GiB peak\n",
                    static_cast<long long>(row.rank), r.tokens_s / lora->second.tokens_s,
                    r.peak_gib - lora->second.peak_gib);
      std::fflush(stdout);
    }
    if (failures > 0) {
      std::printf("\n%d row(s) failed (see the errors above)\n", failures);
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
}
