// The configuration of a training run (mlr-train): one YAML file with `key=value` overrides from the
// command line (dotted keys: `optim.lr=1e-4`, `adapter.type=multilora`). Every section and key is
// documented in configs/README.md; an unknown key, a wrong type or an out-of-range value is an
// error naming the file, line and key. The resolved configuration (after overrides and defaults)
// is printed at start and saved next to the outputs as config.resolved.yaml.
//
//   model:   {path: <HF checkpoint dir>, device: cuda}    # weights load in train.precision's dtype
//   adapter: {type: multilora, r: 32, alpha: 64, n_modules: 4, target_modules: [q_proj, v_proj]}
//   data:    {...}            # the data section of data/config.h, passed through
//   train:   {steps: 1000, grad_accum: 4, precision: bf16, activation_checkpointing: true}
//   optim:   {lr: 2e-4, schedule: cosine, warmup_steps: 100, min_lr_ratio: 0.1, clip_grad_norm: 1.0}
//   eval:    {interval: 200, heldout_batches: 8, tasks: [boolq], limit: 200}
//   save:    {interval: 500, keep_last: 3}
//   log:     {interval: 1, tensorboard: true}
//   output_dir: runs/multilora
//   seed: 1234
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "multilora/registry.h"

namespace mlr {

struct ModelSection {
  std::string path;           // Hugging Face checkpoint directory (config.json + safetensors)
  std::string device = "auto";  // auto (cuda when present) | cpu | cuda | cuda:N
};

struct AdapterSection {
  // A registered adapter type (multilora/registry.h: lora, multilora, smora, dora) or full
  // (every weight trains, no adapter).
  std::string type = "lora";
  std::vector<std::string> target_modules = {"q_proj", "v_proj"};
  std::vector<int64_t> layers;  // empty: every layer
  // An adapter directory to start from (continue training it); its type and hyperparameters must
  // match this section. Empty: fresh initialisation.
  std::string init_from;
  // The type's hyperparameters, read by its registration from the rest of the section (r, alpha,
  // dropout and the type's own keys, configs/README.md); null for full fine-tuning.
  std::shared_ptr<const AdapterConfig> settings;
};

struct TrainSection {
  int64_t steps = 100;  // optimizer steps
  int64_t grad_accum = 1;
  // f32 | bf16 | fp16: the dtype the model's weights are loaded in and computed with; trainable
  // parameters keep f32 master weights and moments in the optimizer, and fp16 scales the loss.
  std::string precision = "f32";
  bool activation_checkpointing = false;
  // Data parallel only: 1 keeps each parameter's optimizer state on one rank (ZeRO-1,
  // dist/zero.h); 2 also its gradient (the others are reduce-scattered away, ZeRO-2); 0
  // replicates both.
  int64_t zero_stage = 0;
  // Data parallel on CPU ranks: gradient buckets are reduced while backward still runs (a
  // communication thread with connections of its own, dist/data_parallel.h); false reduces them
  // after backward. Both give the same bytes.
  bool overlap_grad_reduce = true;
  // Data parallel: the size of a gradient bucket (one collective each), in MiB.
  double grad_bucket_mib = 25;
  // Data parallel with adapters: each rank reads and keeps 1/world of the frozen decoder weights
  // and gathers a layer around its use (dist/sharded_base.h; saves memory with
  // activation_checkpointing). Not with DoRA (its adapters are made from the whole weights).
  bool shard_frozen_base = false;
  // CPU threads of our kernels and BLAS (one OpenMP pool); 0: OMP_NUM_THREADS when set, else every core.
  int64_t threads = 0;
  // The device's peak FLOP/s that MFU divides by; 0: on the CPU the f32/bf16 GEMM rate measured at
  // start (a short matmul probe), on a GPU the H100/H200 figure of the compute dtype.
  double peak_flops = 0;
};

struct OptimSection {
  double lr = 2e-4;
  double weight_decay = 0.0;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double clip_grad_norm = 1.0;  // 0: off
  std::string schedule = "cosine";  // constant | linear | cosine
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;  // floor of the schedule as a fraction of lr
  bool decay_norms_biases_scales = false;
  double loss_scale_init = 65536.0;  // fp16 only
  int64_t loss_scale_growth_interval = 2000;
};

struct EvalSection {
  int64_t interval = 0;  // steps between evaluations; 0: off
  // Held-out loss on this many batches of eval.data (a data section like `data`, over validation
  // files; required when heldout_batches > 0).
  int64_t heldout_batches = 0;
  std::string data_yaml;
  std::vector<std::string> tasks;  // benchmark tasks (eval/), e.g. boolq, mmlu
  std::string data_dir;            // where the task files are
  int64_t limit = 0;               // examples per task; 0: all
};

struct SaveSection {
  int64_t interval = 0;  // steps between checkpoints; 0: only at the end
  int keep_last = 3;
};

struct LogSection {
  int64_t interval = 1;
  bool tensorboard = true;
};

// tokenizer.backend: transformers (default: the tokens of transformers' AutoTokenizer) or
// sentencepiece (the sentencepiece library's own tokens of tokenizer.model); llama/tokenizer.h.
struct TokenizerSection {
  std::string backend = "transformers";
};

struct TrainConfig {
  ModelSection model;
  TokenizerSection tokenizer;
  AdapterSection adapter;
  std::string data_yaml;  // the data section as YAML (parsed by data/config.h)
  TrainSection train;
  OptimSection optim;
  EvalSection eval;
  SaveSection save;
  LogSection log;
  std::string output_dir = "runs/default";
  int64_t seed = 1234;
  std::filesystem::path base_dir;  // relative paths of the file resolve against this
};

// Parses YAML text (`name` in errors) after applying `overrides` ("a.b=value", value parsed as YAML).
TrainConfig parse_train_config(const std::string& yaml_text, const std::string& name,
                               const std::vector<std::string>& overrides, const std::filesystem::path& base_dir);
TrainConfig load_train_config(const std::filesystem::path& yaml_file, const std::vector<std::string>& overrides);

// The resolved configuration as YAML (every key, defaults included).
std::string to_yaml(const TrainConfig& config);

}  // namespace mlr
