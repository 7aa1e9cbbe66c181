// The training loop of mlr-train (see trainer.h for the outputs).
//
// One optimizer step = grad_accum micro-batches. A micro-batch is one packed batch of the loader
// (rows x seq_len tokens flattened into one row, documents kept apart by cu_seqlens), its loss the
// mean cross-entropy over its target tokens; each micro-batch's loss is divided by grad_accum before
// backward (as Hugging Face's Trainer does), so the step's gradient is the mean over micro-batches.
// fp16 multiplies the loss by the dynamic loss scale, unscales the gradients before clipping and
// skips the step when they are not finite. The learning rate of step s (0-based) is
// schedule.lr(s); the logged lr is the one the step used.
#include "train/trainer.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "autograd/functions.h"
#include "autograd/grad_mode.h"
#include "data/config.h"
#include "data/loader.h"
#include "data/report.h"
#include "dist/collective_worker.h"
#include "dist/data_parallel.h"
#include "dist/process_group.h"
#include "dist/sharded_base.h"
#include "dist/zero.h"
#include "eval/evaluator.h"
#include "eval/llama_scorer.h"
#include "eval/task_files.h"
#include "llama/flops.h"
#include "llama/model.h"
#include "llama/safetensors.h"
#include "llama/tokenizer.h"
#include "multilora/inject.h"
#include "optim/adamw.h"
#include "optim/grad_utils.h"
#include "optim/loss_scaler.h"
#include "optim/lr_schedule.h"
#include "tensor/cpu_runtime.h"
#include "tensor/error.h"
#include "tensor/kernels/cpu/simd.h"
#include "train/run_files.h"
#include "train/sharded_scorer.h"
#include "train/trainer_state.h"
#include "train/tensorboard.h"

namespace mlr {

namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_stop_requested{false};
std::atomic<bool> g_in_training_loop{false};

// In the training loop a stop request is served at the end of the step (a checkpoint, exit 130).
// Before it there is nothing to save (loading, joining the other ranks, preparing the data: the
// data cache and run files are written atomically), so the process leaves at once, as a launcher
// that stops its workers (torchrun sends SIGTERM, then SIGKILL 30 s later) expects.
extern "C" void on_stop_signal(int signal) {
  if (!g_in_training_loop.load()) {
    static const char message[] = "mlr-train: stopped by a signal before training started; nothing to save\n";
    (void)!::write(STDERR_FILENO, message, sizeof message - 1);
    ::_exit(128 + signal);
  }
  g_stop_requested.store(true);
}

// Marks the training loop for the signal handler while it lives.
struct InTrainingLoop {
  InTrainingLoop() { g_in_training_loop.store(true); }
  ~InTrainingLoop() { g_in_training_loop.store(false); }
  InTrainingLoop(const InTrainingLoop&) = delete;
  InTrainingLoop& operator=(const InTrainingLoop&) = delete;
};

// bf16 on the CPU pays off only with AVX512-BF16 (tensor/kernels/cpu/matmul.cpp); elsewhere the
// run computes in f32 and says so.
DType compute_dtype(const std::string& precision, const Device& device, std::ostream& out) {
  if (precision == "bf16" && device.is_cpu() && !cpu::cpu_has_avx512_bf16()) {
    out << "precision bf16: this CPU has no AVX512-BF16, computing in f32 instead\n";
    return DType::f32;
  }
  if (precision == "bf16") return DType::bf16;
  if (precision == "fp16") return DType::f16;
  return DType::f32;
}

// "auto" and "cuda" mean the GPU of this rank on its node (LOCAL_RANK; 0 for one process), or the
// only one visible (a launcher that gives each rank one GPU through CUDA_VISIBLE_DEVICES).
Device pick_device(const std::string& name, int local_rank) {
  if (name != "auto" && name != "cuda") return parse_device(name);
  const int visible = cuda_device_count();
  if (visible == 0) return name == "auto" ? Device::cpu() : parse_device(name);
  if (visible == 1) return Device::cuda(0);
  MLR_CHECK(local_rank < visible, "mlr-train: local rank {} has no GPU of its own: {} visible (one per rank on a node)",
            local_rank, visible);
  return Device::cuda(local_rank);
}

// ---- the trainable parameters: adapters injected into the model, or every weight ----
struct Trainable {
  std::vector<std::pair<std::string, Variable>> named;
  std::vector<NamedAdapter> adapters;  // empty for full fine-tuning
  bool full = false;
};

// `sharded_base`: the decoder weights have no values yet (loaded sharded): adapters that
// initialise from their base weight are made awaiting it (TrainingRun::init_adapters_from_base).
Trainable setup_trainable(LlamaForCausalLM& model, const TrainConfig& config, bool sharded_base) {
  Trainable t;
  if (config.adapter.type == "full") {
    t.full = true;
    model.requires_grad_(true);
  } else {
    MLR_CHECK(config.adapter.settings != nullptr,
              "mlr-train: adapter type {} has no hyperparameters (parse_train_config reads them)", config.adapter.type);
    InjectionSpec spec;
    spec.adapter = config.adapter.settings;
    spec.target_modules = config.adapter.target_modules;
    spec.layers_to_transform = config.adapter.layers;
    spec.seed = static_cast<uint64_t>(config.seed);
    spec.defer_base_weight_reads = sharded_base;
    t.adapters = inject_adapters(model, spec);
    if (!config.adapter.init_from.empty()) load_adapter(config.adapter.init_from, t.adapters);
  }
  t.named = model.named_parameters(/*trainable_only=*/true);
  MLR_CHECK(!t.named.empty(), "mlr-train: nothing to train (adapter type {}, targets [{}])", config.adapter.type,
            fmt::join(config.adapter.target_modules, ", "));
  return t;
}

void save_trainable(LlamaForCausalLM& model, const Trainable& t, const TrainConfig& config, const std::string& dir) {
  if (t.full) {
    model.save_pretrained(dir);
  } else {
    save_adapter(dir, t.adapters, {config.model.path});
  }
}

void load_trainable(LlamaForCausalLM& model, const Trainable& t, const std::string& dir) {
  if (!t.full) {
    load_adapter(dir, t.adapters);
    return;
  }
  auto tensors = load_checkpoint_tensors(dir, model.named_parameters().front().second.dtype(),
                                         model.named_parameters().front().second.device());
  model.load_state_dict(tensors, /*strict=*/false);
}

// ---- batches: the loader's packed rows as one flattened row ----
struct DeviceBatch {
  LlamaBatch batch;
  Tensor targets;  // i64 [rows * seq_len], already shifted by the packer
  int64_t real_tokens = 0, target_tokens = 0;
};

// The batch boundary: ids and labels are checked here, on the host, against the model's vocabulary,
// once; the ops on the device trust them (tensor/nn_ops.h). cu_seqlens stays on the host, where
// the model checks it once per forward and uploads it.
DeviceBatch to_device(const data::Batch& b, Device device, int64_t vocab) {
  const int64_t n = b.size();
  MLR_CHECK(b.input_ids.size() == static_cast<size_t>(n) && b.labels.size() == static_cast<size_t>(n),
            "batch: {} input ids and {} labels for {} rows of {} tokens", b.input_ids.size(), b.labels.size(), b.rows,
            b.seq_len);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t id = b.input_ids[i], label = b.labels[i];
    MLR_CHECK(id >= 0 && id < vocab, "batch: input id {} at position {} is out of range for the model's vocabulary of {}",
              id, i, vocab);
    MLR_CHECK(label == -100 || (label >= 0 && label < vocab),
              "batch: label {} at position {} is out of range for the model's vocabulary of {} (ignore_index -100)",
              label, i, vocab);
  }
  DeviceBatch d;
  d.batch.input_ids = from_vector<int32_t>(b.input_ids, {1, n}).to(device, DType::i64);
  d.batch.position_ids = from_vector<int32_t>(b.position_ids, {1, n}).to(device, DType::i64);
  d.batch.cu_seqlens = from_vector<int32_t>(b.cu_seqlens, {static_cast<int64_t>(b.cu_seqlens.size())});
  d.targets = from_vector<int32_t>(b.labels, {n}).to(device, DType::i64);
  d.real_tokens = b.real_tokens;
  d.target_tokens = b.target_tokens;
  return d;
}

// Mean (or sum) of the cross-entropy over the target tokens of one batch (labels pre-shifted by
// the packer).
Variable batch_loss(LlamaForCausalLM& model, const DeviceBatch& d, Reduction reduction = Reduction::mean) {
  LlamaBatch input = d.batch;  // no labels: the packer has shifted them already
  CausalLMOutput out = model.forward(input);
  const int64_t n = d.targets.numel();
  return cross_entropy(out.logits.reshape({n, out.logits.size(-1)}), d.targets, -100, reduction);
}

// Where output goes on ranks other than 0: nowhere (rank 0 logs for the job).
std::ostream& discarded_output() {
  static std::ostream sink(nullptr);
  return sink;
}

struct DataPipeline {
  data::DataConfig config;
  std::vector<std::shared_ptr<const data::TokenizedDataset>> datasets;
};

DataPipeline prepare_data(const std::string& yaml, const std::string& what, const TrainConfig& config,
                          const Tokenizer& tokenizer) {
  DataPipeline p;
  p.config = data::parse_data_config(yaml, what, config.base_dir);
  data::validate_data_config(p.config);
  p.datasets = data::prepare_all(p.config, tokenizer);
  return p;
}

std::unique_ptr<data::Loader> make_loader(const DataPipeline& p, const data::LoaderState* resume) {
  return std::make_unique<data::Loader>(p.datasets, p.config.sources, p.config.mixture, p.config.loader, resume);
}

// FLOPs per trained token, from the shapes (llama/flops.h); the adapters count with every trainable
// weight (SMoRA's unselected ranks too, so its MFU is slightly overstated).
double flops_per_token(const LlamaForCausalLM& model, int64_t seq_len, bool full) {
  return training_flops_per_token(model.config(), seq_len, full, full ? 0 : model.num_parameters(true));
}

// The peak MFU divides by: train.peak_flops when given; on the CPU the GEMM rate of this process
// measured at start in the compute dtype; on a GPU the dense H100/H200 SXM figure, bf16/fp16
// 989.4 TFLOP/s, f32 without TF32 66.9 (MLR_PEAK_TFLOPS overrides the table).
double peak_flops(const TrainSection& train, Device device, DType dtype) {
  if (train.peak_flops > 0) return train.peak_flops;
  if (device.is_cpu()) return measure_cpu_matmul_flops(dtype == DType::f16 ? DType::f32 : dtype);
  if (const char* v = std::getenv("MLR_PEAK_TFLOPS")) return std::atof(v) * 1e12;
  return dtype == DType::f32 ? 66.9e12 : 989.4e12;
}

std::string progress_bar(int64_t done, int64_t total, int width = 30) {
  const int filled = total > 0 ? static_cast<int>(width * done / total) : width;
  return "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
}

// ---- the adapters' state in trainer_state.json beyond their tensors ----
// "adapter_dropout_rng": {module: [seed, offset]}, and each type's training state under its key
// (SMoRA: "smora_total_counts": {module: counts}).
void save_adapter_training_state(const std::vector<NamedAdapter>& adapters, nlohmann::json& state) {
  nlohmann::json dropout = nlohmann::json::object();
  for (const NamedAdapter& a : adapters) {
    const Generator& g = a.adapter->dropout_generator();
    dropout[a.module_path] = {g.seed(), g.offset()};
    const std::string key = a.adapter->training_state_key();
    if (!key.empty()) state[key][a.module_path] = a.adapter->training_state();
  }
  state["adapter_dropout_rng"] = dropout;
}

void restore_adapter_training_state(const std::vector<NamedAdapter>& adapters, const TrainerState& state,
                                    const std::string& file) {
  for (const NamedAdapter& a : adapters) {
    if (state.adapter_dropout_rng) {
      auto g = state.adapter_dropout_rng->find(a.module_path);
      MLR_CHECK(g != state.adapter_dropout_rng->end(), "mlr-train --resume: {} has no dropout state for {}", file,
                a.module_path);
      a.adapter->dropout_generator().set_state(g->second.first, g->second.second);
    }
    const std::string key = a.adapter->training_state_key();
    if (key.empty()) continue;
    auto type_state = state.adapter_training_state.find(key);
    if (type_state == state.adapter_training_state.end()) continue;
    auto module_state = type_state->second.find(a.module_path);
    MLR_CHECK(module_state != type_state->second.end(), "mlr-train --resume: {} has no \"{}\" for {}", file, key,
              a.module_path);
    try {
      a.adapter->restore_training_state(module_state->second);
    } catch (const Error& e) {
      throw Error(fmt::format("mlr-train --resume: {}: \"{}.{}\": {}", file, key, a.module_path, e.what()));
    }
  }
}

// What one optimizer step did.
struct StepResult {
  double loss = 0;  // mean over the micro-batches
  double lr = 0;
  double grad_norm = 0;
  bool stepped = true;  // false: skipped for non-finite fp16 gradients
  int64_t tokens = 0;
  double seconds = 0;
  // Data parallel: seconds the step waited for gradient reductions after its last backward (the
  // communication that backward did not hide).
  double grad_sync_seconds = 0;
};

// One run of run_training: set up in the constructor, then run() loops over the steps.
class TrainingRun {
 public:
  TrainingRun(const TrainConfig& config, const TrainOptions& options);
  // The sharded base goes first, while the model it points into lives (members die in reverse
  // order, the model before it), and without gathering the model whole: it goes with this run.
  ~TrainingRun() {
    if (sharded_base_) sharded_base_->keep_released();
    sharded_base_.reset();
  }
  TrainReport run();

 private:
  void write_resolved_config();
  void load_model_and_data();
  void build_optimizer();
  void resume_from_checkpoint();
  void open_logs();
  StepResult train_step();
  // Data parallel: grad_accum micro-batches of this rank, gradients and statistics summed over
  // the ranks (see the comment at its definition).
  void accumulate_data_parallel(StepResult& r);
  // ZeRO-2: each rank holds only its parameters' gradients; the norm is summed over the ranks
  // and every rank clips its share with the same factor. Returns the norm before clipping.
  bool sharded_gradients() const { return group_ && config_.train.zero_stage == 2; }
  double clip_sharded_gradients();
  // Every rank waits for rank 0 (preparing the data, checkpointing) with the long timeout of such phases.
  void wait_for_rank0(const char* what);
  // train.shard_frozen_base: the base weights sharded, every adapter tensor kept whole.
  // `loaded`: the shards read at load time (each rank its own; called once per run).
  void shard_frozen_base(std::vector<dist::LoadedShard> loaded);
  // Initialises the adapters made awaiting their base weight (setup_trainable on a sharded base).
  void init_adapters_from_base();
  bool stop_requested() const { return group_ ? stop_agreed_ : g_stop_requested.load(); }
  void log_step(const StepResult& r);
  void evaluate_if_due();
  void evaluate_now();
  // Resuming: the checkpoint's global batch (ranks x rows) must be this run's.
  void check_global_batch(const TrainerState& state, const std::string& state_file) const;
  double heldout_loss();
  void task_eval(int64_t at_step);
  void save_checkpoint(int64_t at_step);
  void save_checkpoint_files(int64_t at_step, const TrainingState& optim_state);
  // ZeRO-1: the whole optimizer state on rank 0 (collective), and this rank's part of a whole one.
  TrainingState gathered_optimizer_state();
  TrainingState owned_part(TrainingState whole) const;

  const TrainConfig& config_;
  const TrainOptions& options_;
  // The ranks of a multi-process job (null for one process); rank 0 logs, evaluates and saves.
  std::unique_ptr<dist::ProcessGroup> group_;
  const bool main_rank_;
  std::unique_ptr<dist::GradientBuckets> grad_buckets_;
  std::unique_ptr<dist::ParameterOwners> owners_;  // train.zero_stage 1 with several ranks
  std::unique_ptr<dist::ShardedFrozenBase> sharded_base_;  // train.shard_frozen_base with several ranks
  int64_t base_bytes_read_ = 0;  // of the decoder weights, from the files (train.shard_frozen_base)
  bool stop_agreed_ = false;  // a stop request seen by some rank, agreed on by all at the step's end
  std::ostream& out_;
  const fs::path output_dir_;
  const Device device_;
  const DType dtype_;
  std::shared_ptr<LlamaForCausalLM> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  Trainable trainable_;
  DataPipeline train_data_;
  std::optional<DataPipeline> heldout_;
  std::optional<eval::LoadedTasks> eval_tasks_;  // benchmark tasks of the periodic evaluation
  std::unique_ptr<AdamW> optimizer_;
  LrSchedule schedule_;
  std::unique_ptr<DynamicLossScaler> scaler_;
  std::vector<Variable> params_;
  CheckpointDirectory checkpoints_;
  std::optional<data::LoaderState> loader_state_;  // where a resumed run's loader continues
  std::unique_ptr<data::Loader> loader_;
  std::unique_ptr<MetricsLog> metrics_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
  TrainReport report_;
  int64_t step_ = 0;
  std::chrono::steady_clock::time_point run_start_;
  double peak_flops_ = 0;  // what MFU divides by (peak_flops())
};

TrainingRun::TrainingRun(const TrainConfig& config, const TrainOptions& options)
    : config_(config),
      options_(options),
      group_(dist::join_from_env()),
      main_rank_(!group_ || group_->rank() == 0),
      out_(!main_rank_ ? discarded_output() : options.out ? *options.out : std::cout),
      output_dir_(config.output_dir),
      device_(pick_device(config.model.device, group_ ? group_->launch().local_rank : 0)),
      dtype_(compute_dtype(config.train.precision, device_, out_)),
      checkpoints_((output_dir_ / "checkpoints").string()) {
  write_resolved_config();
  if (device_.is_cpu()) set_cpu_threads(static_cast<int>(config_.train.threads));
  manual_seed(static_cast<uint64_t>(config_.seed));
  load_model_and_data();
  build_optimizer();
  if (options_.resume) resume_from_checkpoint();
  report_.start_step = step_;
  loader_ = make_loader(train_data_, loader_state_ ? &*loader_state_ : nullptr);
  open_logs();
}

void TrainingRun::write_resolved_config() {
  if (!main_rank_) return;
  fs::create_directories(output_dir_);
  atomic_write_file((output_dir_ / "config.resolved.yaml").string(), to_yaml(config_));
  out_ << "resolved configuration (" << (output_dir_ / "config.resolved.yaml").string() << "):\n"
       << to_yaml(config_) << std::flush;
}

// Model, tokenizer, adapters; the training data, and the held-out data and benchmark tasks when
// evaluation is on (eval.interval > 0).
void TrainingRun::load_model_and_data() {
  const bool sharding = group_ && config_.train.shard_frozen_base;
  std::vector<dist::LoadedShard> base_shards;
  if (sharding) {
    // Each rank reads only its shard of the decoder weights: they are never whole in memory.
    MLR_CHECK(config_.adapter.type != "full", "mlr-train: train.shard_frozen_base shards the frozen weights of an "
                                              "adapter run; full fine-tuning trains every weight (use train.zero_stage: 1)");
    dist::ShardedLoad loaded = dist::load_with_sharded_base(config_.model.path, group_->rank(), group_->world_size(),
                                                            dtype_, device_);
    model_ = std::move(loaded.model);
    base_shards = std::move(loaded.shards);
    base_bytes_read_ = loaded.bytes_read;
  } else {
    model_ = LlamaForCausalLM::from_pretrained(config_.model.path, dtype_, device_);
  }
  model_->set_gradient_checkpointing(config_.train.activation_checkpointing);
  tokenizer_ = load_tokenizer(config_.model.path, parse_tokenizer_backend(config_.tokenizer.backend));
  trainable_ = setup_trainable(*model_, config_, sharding);
  model_->train();
  if (sharding) {
    shard_frozen_base(std::move(base_shards));
    // A resumed run's adapters get every value from the checkpoint instead.
    if (!options_.resume) init_adapters_from_base();
  }
  MLR_CHECK(!config_.data_yaml.empty(), "mlr-train: the configuration has no data section");
  // Rank 0 tokenizes (and writes the data cache) first; the others then read the cache.
  if (group_ && !main_rank_) wait_for_rank0("preparing the data");
  train_data_ = prepare_data(config_.data_yaml, "data", config_, *tokenizer_);
  if (group_) {
    train_data_.config.loader.rank = group_->rank();
    train_data_.config.loader.world_size = group_->world_size();
  }
  // Every rank computes its share of the held-out batches (heldout_loss).
  const bool evaluating = config_.eval.interval > 0;
  if (evaluating && config_.eval.heldout_batches > 0)
    heldout_ = prepare_data(config_.eval.data_yaml, "eval.data", config_, *tokenizer_);
  // Every rank scores its share of the benchmark tasks' requests (train/sharded_scorer.h).
  if (config_.eval.interval > 0 && !config_.eval.tasks.empty())
    eval_tasks_ = eval::load_named_tasks(config_.eval.tasks, config_.eval.data_dir);
  if (group_ && main_rank_) wait_for_rank0("preparing the data");
}

// AdamW over the trainable parameters, the learning-rate schedule, fp16 loss scaling.
void TrainingRun::build_optimizer() {
  const OptimSection& o = config_.optim;
  AdamWOptions adam;
  adam.lr = o.lr;
  adam.beta1 = o.beta1;
  adam.beta2 = o.beta2;
  adam.eps = o.eps;
  adam.weight_decay = o.weight_decay;
  NoDecayRules no_decay;
  if (o.decay_norms_biases_scales) no_decay.patterns.clear();
  optimizer_ = std::make_unique<AdamW>(make_param_groups(trainable_.named, adam, no_decay));
  schedule_.kind = parse_lr_schedule_kind(o.schedule);
  schedule_.base_lr = o.lr;
  schedule_.warmup_steps = o.warmup_steps;
  schedule_.total_steps = config_.train.steps;
  schedule_.min_lr_ratio = o.min_lr_ratio;
  schedule_.validate();
  LossScalerOptions scaler_options;
  scaler_options.enabled = dtype_ == DType::f16;
  scaler_options.init_scale = o.loss_scale_init;
  scaler_options.growth_interval = o.loss_scale_growth_interval;
  scaler_ = std::make_unique<DynamicLossScaler>(scaler_options);
  params_ = optimizer_->parameters();
  if (group_) {
    dist::Communicator& comm = group_->for_device(device_);
    dist::GradientBucketOptions buckets;
    buckets.bucket_bytes = static_cast<size_t>(config_.train.grad_bucket_mib * double(1 << 20));
    if (config_.train.zero_stage >= 1) {
      owners_ = std::make_unique<dist::ParameterOwners>(comm, params_);
      if (config_.train.zero_stage == 2)
        for (size_t i = 0; i < params_.size(); ++i) buckets.owners.push_back(owners_->owner(i));
    }
    // Buckets reduced while backward runs, on connections of their own: a thread drives them on
    // the CPU, NCCL queues them on its communication stream (dist/collective_worker.h).
    std::unique_ptr<dist::CollectiveWorker> worker;
    if (config_.train.overlap_grad_reduce)
      worker = std::make_unique<dist::CollectiveWorker>(group_->new_communicator(device_, "grad"));
    grad_buckets_ = std::make_unique<dist::GradientBuckets>(comm, params_, buckets, std::move(worker));
    grad_buckets_->broadcast_parameters(0);  // every rank starts from rank 0's weights
  }
}

// Weights, optimizer, loss scaler, loader position and random streams from the newest complete
// checkpoint.
void TrainingRun::resume_from_checkpoint() {
  const auto latest = checkpoints_.latest();
  MLR_CHECK(latest.has_value(), "mlr-train --resume: no complete checkpoint in {}",
            (output_dir_ / "checkpoints").string());
  const fs::path dir(*latest);
  const std::string state_file = (dir / "trainer_state.json").string();
  const TrainerState state = read_trainer_state(state_file);
  // The saved data position counts rows of tokens: resuming with another tokenizer would silently
  // continue on other data.
  MLR_CHECK(state.tokenizer_backend.empty() ||
                (state.tokenizer_backend == config_.tokenizer.backend &&
                 state.tokenizer_fingerprint == tokenizer_->fingerprint()),
            "mlr-train --resume: {} was written with tokenizer backend '{}' (fingerprint {}), this run uses '{}' ({})",
            state_file, state.tokenizer_backend, state.tokenizer_fingerprint, config_.tokenizer.backend,
            tokenizer_->fingerprint());
  check_global_batch(state, state_file);
  load_trainable(*model_, trainable_, (dir / "weights").string());
  TrainingState optim_state;
  optim_state.tensors = load_checkpoint_tensors((dir / "optimizer.safetensors").string(), std::nullopt, device_);
  optim_state.scalars = state.optimizer;
  optimizer_->load_state_dict(owners_ ? owned_part(std::move(optim_state)) : optim_state);
  scaler_->load_state_dict(state.loss_scaler);
  loader_state_ = state.loader;
  default_generator().set_state(state.rng_seed, state.rng_offset);
  restore_adapter_training_state(trainable_.adapters, state, state_file);
  step_ = state.step;
  out_ << fmt::format("resumed from {} at step {}\n", dir.string(), step_);
}

void TrainingRun::open_logs() {
  if (!main_rank_) return;
  metrics_ = std::make_unique<MetricsLog>((output_dir_ / "metrics.jsonl").string(), options_.resume);
  if (config_.log.tensorboard)
    tensorboard_ = std::make_unique<TensorBoardWriter>((output_dir_ / "tensorboard").string());
  out_ << fmt::format("training {} of {} parameters ({} tensors) on {} in {}, {} steps x {} micro-batches\n",
                      model_->num_parameters(true), model_->num_parameters(), trainable_.named.size(), device_.str(),
                      dtype_name(dtype_), config_.train.steps, config_.train.grad_accum)
       << std::flush;
  peak_flops_ = peak_flops(config_.train, device_, dtype_);
  if (device_.is_cpu())
    out_ << fmt::format("cpu: threads {}, {}; MFU against {:.1f} GFLOP/s ({})\n", cpu_threads(), blas_description(),
                        peak_flops_ * 1e-9,
                        config_.train.peak_flops > 0 ? "train.peak_flops" : "the GEMM rate measured at start")
         << std::flush;
  if (group_) {
    out_ << fmt::format("data parallel: {} ranks x {} rows per micro-batch ({} launch); {} gradient bucket{} reduced "
                        "{}",
                        group_->world_size(), train_data_.config.loader.batch_rows, group_->launch().launcher,
                        grad_buckets_->bucket_count(), grad_buckets_->bucket_count() == 1 ? "" : "s",
                        grad_buckets_->overlapped() ? "during backward" : "after backward");
    if (owners_) {
      size_t mine = 0;
      double mine_bytes = 0, all_bytes = 0;
      for (size_t i = 0; i < params_.size(); ++i) {
        all_bytes += static_cast<double>(params_[i].data().nbytes());
        if (owners_->mine(i)) ++mine, mine_bytes += static_cast<double>(params_[i].data().nbytes());
      }
      out_ << fmt::format("; ZeRO-{}: rank 0 keeps the optimizer state{} of {} of {} parameters ({} of {})",
                          config_.train.zero_stage, config_.train.zero_stage == 2 ? " and gradients" : "", mine,
                          params_.size(), human_bytes(mine_bytes), human_bytes(all_bytes));
    }
    if (sharded_base_) {
      out_ << fmt::format("; frozen base sharded: rank 0 keeps {} of {} of decoder weights (read {} of them from "
                          "the files)",
                          human_bytes(static_cast<double>(sharded_base_->shard_bytes())),
                          human_bytes(static_cast<double>(sharded_base_->full_bytes())),
                          human_bytes(static_cast<double>(base_bytes_read_)));
    }
    out_ << "\n" << std::flush;
  }
}

// grad_accum micro-batches, then clipping, the optimizer step and the adapters' after-step hooks.
StepResult TrainingRun::train_step() {
  const auto t0 = std::chrono::steady_clock::now();
  StepResult r;
  r.lr = schedule_.lr(step_);
  optimizer_->set_lr_factor(schedule_.factor(step_));
  const double accum = static_cast<double>(config_.train.grad_accum);
  if (group_) accumulate_data_parallel(r);
  for (int64_t micro = 0; !group_ && micro < config_.train.grad_accum; ++micro) {
    const DeviceBatch batch = to_device(loader_->next(), device_, model_->config().vocab_size);
    Variable loss = batch_loss(*model_, batch);
    r.loss += loss.data().to(DType::f64).item<double>() / accum;
    r.tokens += batch.real_tokens;
    Variable scaled = scaler_->scale_loss(mul(loss, 1.0 / accum));
    scaled.backward();
  }
  scaler_->unscale_(*optimizer_);
  r.grad_norm = sharded_gradients() ? clip_sharded_gradients()
               : config_.optim.clip_grad_norm > 0 ? clip_grad_norm_(params_, config_.optim.clip_grad_norm)
                                                  : global_grad_norm(params_);
  if (owners_) owners_->drop_others_gradients();  // ZeRO-1: clipped above with the whole gradient
  r.stepped = scaler_->step(*optimizer_);
  if (owners_ && r.stepped) owners_->broadcast_from_owners();
  scaler_->update();
  optimizer_->zero_grad();
  for (const NamedAdapter& a : trainable_.adapters) a.adapter->after_optimizer_step();
  ++step_;
  report_.losses.push_back(r.loss);
  if (device_.is_cuda()) synchronize(device_);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

// The step line, the metrics.jsonl record and TensorBoard scalars (every log.interval steps and at
// the end), and the progress bar.
void TrainingRun::log_step(const StepResult& r) {
  if (!main_rank_) return;
  const int64_t total = config_.train.steps;
  if (step_ % config_.log.interval == 0 || step_ == total) {
    const double tokens_per_s = r.tokens / std::max(r.seconds, 1e-9);
    const double mfu = model_flops_utilization(
        tokens_per_s, flops_per_token(*model_, train_data_.config.loader.pack.seq_len, trainable_.full), peak_flops_);
    const MemoryStats mem = memory_stats(device_);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start_).count();
    const double eta = elapsed / static_cast<double>(step_ - report_.start_step) * static_cast<double>(total - step_);
    out_ << fmt::format("step {}/{} | loss {:.4f} | lr {:.3e} | grad norm {:.3f}{} | {:.0f} tok/s | MFU {} | mem {} | ETA {}\n",
                        step_, total, r.loss, r.lr, r.grad_norm, r.stepped ? "" : " (skipped: inf/NaN)", tokens_per_s,
                        mfu >= 0 ? fmt::format("{:.1f}%", 100 * mfu) : std::string("n/a"),
                        human_bytes(static_cast<double>(mem.peak_bytes)), human_duration(eta))
         << std::flush;
    nlohmann::json record = {{"step", step_},          {"loss", r.loss},           {"lr", r.lr},
                             {"grad_norm", r.grad_norm}, {"tokens_per_s", tokens_per_s}, {"peak_memory_bytes", mem.peak_bytes},
                             {"skipped", !r.stepped},  {"loss_scale", scaler_->scale()}};
    if (mfu >= 0) record["mfu"] = mfu;
    if (group_) record["grad_sync_seconds"] = r.grad_sync_seconds;
    std::vector<std::pair<std::string, float>> scalars = {{"train/loss", static_cast<float>(r.loss)},
                                                          {"train/lr", static_cast<float>(r.lr)},
                                                          {"train/grad_norm", static_cast<float>(r.grad_norm)},
                                                          {"train/tokens_per_s", static_cast<float>(tokens_per_s)}};
    if (!trainable_.adapters.empty()) {  // the first adapter's figures stand for the run
      for (const AdaptedLinear::Metric& m : trainable_.adapters.front().adapter->step_metrics()) {
        record[m.name] = m.value;
        if (!m.tensorboard_tag.empty()) scalars.push_back({m.tensorboard_tag, static_cast<float>(m.value)});
      }
    }
    metrics_->write(record);
    if (tensorboard_) tensorboard_->add_scalars(scalars, step_);
  }
  if (options_.progress_bar && isatty(STDERR_FILENO))
    std::cerr << "\r" << progress_bar(step_, total) << " " << step_ << "/" << total << (step_ == total ? "\n" : "")
              << std::flush;
}

void TrainingRun::evaluate_if_due() {
  const bool due = config_.eval.interval > 0 && (step_ % config_.eval.interval == 0 || step_ == config_.train.steps);
  if (!due) return;
  // The ranks score different requests and held-out batches, so they run different numbers of
  // forwards: with the base sharded those run in lockstep (dist/sharded_base.h), a rank done with
  // its share taking part in the others' remaining gathers, and the base is never whole.
  if (sharded_base_) sharded_base_->begin_lockstep();
  evaluate_now();
  if (sharded_base_) {
    // Every rank's counts, for the log: the passes each ran, those it joined, and the most layers
    // any rank held whole.
    const dist::ShardedFrozenBase::LockstepCounts& c = sharded_base_->lockstep_counts();
    const int64_t world = group_->world_size();
    Tensor counts = empty({3 * world}, DType::i64);
    group_->cpu().all_gather(from_vector(std::vector<int64_t>{c.passes, c.idle_passes, c.peak_whole_layers}, {3}), counts);
    const std::vector<int64_t> all = counts.to_vector<int64_t>();
    std::vector<int64_t> passes, idle;
    int64_t peak = 0;
    for (int64_t r = 0; r < world; ++r) {
      passes.push_back(all[static_cast<size_t>(3 * r)]);
      idle.push_back(all[static_cast<size_t>(3 * r + 1)]);
      peak = std::max(peak, all[static_cast<size_t>(3 * r + 2)]);
    }
    out_ << fmt::format("eval step {} | frozen base sharded, evaluated in lockstep: forward passes per rank {}, idle "
                        "passes (joining the others') {}, at most {} of {} layers whole at once on a rank\n",
                        step_, fmt::join(passes, "/"), fmt::join(idle, "/"), peak, model_->config().num_hidden_layers)
         << std::flush;
    sharded_base_->end_lockstep();
  }
}

// Benchmark tasks and the held-out loss, each split over the ranks; rank 0 logs.
void TrainingRun::evaluate_now() {
  if (eval_tasks_) task_eval(step_);
  if (heldout_) {
    const double l = heldout_loss();
    report_.heldout_losses.push_back(l);
    if (!main_rank_) return;
    out_ << fmt::format("eval step {} | held-out loss {:.4f} | perplexity {:.2f}\n", step_, l, std::exp(l))
         << std::flush;
    metrics_->write({{"step", step_}, {"heldout_loss", l}});
    if (tensorboard_) tensorboard_->add_scalar("eval/heldout_loss", l, step_);
  }
}

// The mean loss of the first eval.heldout_batches batches of the held-out data. Every rank reads
// the same batches and computes every world-th one; the per-batch losses are exchanged (each from
// its rank, zeros elsewhere: exact) and summed in batch order, so N ranks give one process's
// figure to the bit.
double TrainingRun::heldout_loss() {
  NoGradGuard no_grad;
  model_->eval();
  auto eval_loader = make_loader(*heldout_, nullptr);
  const int64_t n = config_.eval.heldout_batches;
  const int64_t rank = group_ ? group_->rank() : 0, world = group_ ? group_->world_size() : 1;
  std::vector<double> losses(static_cast<size_t>(n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const data::Batch next = eval_loader->next();
    if (i % world != rank) continue;
    const DeviceBatch batch = to_device(next, device_, model_->config().vocab_size);
    losses[static_cast<size_t>(i)] = batch_loss(*model_, batch).data().to(DType::f64).item<double>();
  }
  if (sharded_base_) sharded_base_->join_remaining_passes();
  if (group_) dist::all_reduce_sum(group_->cpu(), losses);
  double total = 0;
  for (double l : losses) total += l;
  model_->train();
  return total / static_cast<double>(n);
}

// The benchmark tasks scored as mlr-eval scores them (lm-evaluation-harness rules), adapters
// unmerged, dropout off; logs every task's and group's metrics.
void TrainingRun::task_eval(int64_t at_step) {
  NoGradGuard no_grad;
  model_->eval();
  eval::LlamaContinuationModel lm(*model_);
  eval::TokenizedScorer scorer(*tokenizer_, lm, config_.model.path);
  std::optional<ShardedScorer> sharded;
  std::function<void()> join_remaining_passes;
  if (sharded_base_) join_remaining_passes = [this] { sharded_base_->join_remaining_passes(); };
  if (group_) sharded.emplace(scorer, group_->cpu(), join_remaining_passes);
  eval::EvalOptions eval_options;
  if (config_.eval.limit > 0) eval_options.limit = static_cast<double>(config_.eval.limit);
  const eval::EvalResults results =
      eval::evaluate(eval_tasks_->tasks, eval_tasks_->groups,
                     sharded ? static_cast<eval::LanguageModelScorer&>(*sharded) : scorer, eval_options);
  model_->train();
  if (!main_rank_) return;  // rank 0 logs
  nlohmann::json record = {{"step", at_step}, {"tasks", nlohmann::json::object()}};
  std::vector<std::pair<std::string, float>> scalars;
  std::string line = fmt::format("eval step {} |", at_step);
  auto add = [&](const std::string& name, const std::vector<eval::MetricValue>& metrics, bool show) {
    for (const eval::MetricValue& m : metrics) {
      record["tasks"][name][m.name] = m.value;
      scalars.push_back({fmt::format("eval/{}/{}", name, m.name), static_cast<float>(m.value)});
      if (show && m.name == "acc") line += fmt::format(" {} acc {:.4f} |", name, m.value);
    }
  };
  // Every task in the logs; on the line, the groups and the tasks outside any group.
  std::set<std::string> grouped;
  for (const eval::TaskGroup& g : eval_tasks_->groups)
    for (const std::string& c : g.children) grouped.insert(c);
  for (const eval::TaskResult& t : results.tasks) add(t.name, t.metrics, !grouped.count(t.name));
  for (const eval::GroupResult& g : results.groups) add(g.name, g.metrics, g.name == "mmlu" || !grouped.count(g.name));
  out_ << line << "\n" << std::flush;
  metrics_->write(record);
  if (tensorboard_) tensorboard_->add_scalars(scalars, at_step);
}

// Rank 0 writes the checkpoint; every rank moves on only once it is committed.
void TrainingRun::save_checkpoint(int64_t at_step) {
  const TrainingState optim_state = owners_ ? gathered_optimizer_state() : optimizer_->state_dict();
  if (main_rank_) save_checkpoint_files(at_step, optim_state);
  if (group_) wait_for_rank0("saving a checkpoint");
}

void TrainingRun::save_checkpoint_files(int64_t at_step, const TrainingState& optim_state) {
  const std::string staging = checkpoints_.begin(at_step);
  save_trainable(*model_, trainable_, config_, (fs::path(staging) / "weights").string());
  std::vector<std::pair<std::string, Tensor>> tensors(optim_state.tensors.begin(), optim_state.tensors.end());
  save_safetensors((fs::path(staging) / "optimizer.safetensors").string(), tensors);
  nlohmann::json state;
  state["step"] = at_step;
  state["tokenizer"] = {{"backend", config_.tokenizer.backend}, {"fingerprint", tokenizer_->fingerprint()}};
  state["optimizer"] = optim_state.scalars;
  state["lr_schedule"] = schedule_.state_dict();
  state["loss_scaler"] = scaler_->state_dict();
  state["loader"] = nlohmann::json::parse(loader_->state().to_json());
  state["rng"] = {{"seed", default_generator().seed()}, {"offset", default_generator().offset()}};
  save_adapter_training_state(trainable_.adapters, state);
  const int64_t world = group_ ? group_->world_size() : 1;
  state["data_parallel"] = {{"world_size", world},
                            {"rows_per_rank", train_data_.config.loader.batch_rows},
                            {"global_rows", train_data_.config.loader.batch_rows * world}};
  atomic_write_file((fs::path(staging) / "trainer_state.json").string(), state.dump(2));
  const std::string path = checkpoints_.commit(at_step, config_.save.keep_last);
  out_ << fmt::format("saved checkpoint {}\n", path) << std::flush;
}

// ---- data parallel ----

// One global micro-batch is the rows of every rank (the loader gives each rank its slice of the
// same packed batch), and its loss is what one process with all those rows computes: the mean
// cross-entropy over all their target tokens. So each rank sums its cross-entropy and divides by
// the global count of target tokens of that micro-batch (one all-reduce of grad_accum counts
// before the forwards), then the gradients are summed over the ranks during the last backward
// (dist/data_parallel.h: earlier micro-batches accumulate locally). The
// step's loss, token count, the adapters' step counts (SMoRA's loads) and a stop request are summed
// too, so every rank clips, steps and stops identically.
void TrainingRun::accumulate_data_parallel(StepResult& r) {
  dist::Communicator& comm = group_->cpu();
  const int64_t accum = config_.train.grad_accum;
  std::vector<DeviceBatch> batches;
  std::vector<int64_t> targets;
  for (int64_t micro = 0; micro < accum; ++micro) {
    batches.push_back(to_device(loader_->next(), device_, model_->config().vocab_size));
    targets.push_back(batches.back().target_tokens);
  }
  dist::all_reduce_sum(comm, targets);
  double loss = 0;
  int64_t tokens = 0;
  for (int64_t micro = 0; micro < accum; ++micro) {
    // A micro-batch with no target token anywhere has loss 0 (as Reduction::mean gives one rank).
    const double denominator = static_cast<double>(std::max<int64_t>(targets[micro], 1) * accum);
    Variable summed = batch_loss(*model_, batches[micro], Reduction::sum);
    loss += summed.data().to(DType::f64).item<double>() / denominator;
    tokens += batches[micro].real_tokens;
    // The last backward completes the gradients: their buckets are reduced as they become ready.
    if (micro + 1 == accum) grad_buckets_->arm();
    scaler_->scale_loss(mul(summed, 1.0 / denominator)).backward();
  }
  const auto sync_start = std::chrono::steady_clock::now();
  grad_buckets_->finish();
  r.grad_sync_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - sync_start).count();
  for (const NamedAdapter& a : trainable_.adapters)
    if (std::vector<int64_t>* counts = a.adapter->step_counts_to_sum()) dist::all_reduce_sum(comm, *counts);
  std::vector<double> totals = {loss, static_cast<double>(tokens), g_stop_requested.load() ? 1.0 : 0.0};
  dist::all_reduce_sum(comm, totals);
  r.loss = totals[0];
  r.tokens = static_cast<int64_t>(totals[1]);
  stop_agreed_ = totals[2] > 0;
}

double TrainingRun::clip_sharded_gradients() {
  const double mine = global_grad_norm(params_);
  std::vector<double> squares = {mine * mine};
  dist::all_reduce_sum(group_->cpu(), squares);
  const double norm = std::sqrt(squares[0]);
  const double max_norm = config_.optim.clip_grad_norm;
  if (max_norm > 0 && std::isfinite(norm)) {
    const double coef = max_norm / (norm + 1e-6);  // as clip_grad_norm_
    if (coef < 1.0) scale_grads_(params_, coef);
  }
  return norm;
}

// The optimizer's tensors ("{key}.exp_avg", "{key}.exp_avg_sq", "{key}.master") of parameter i
// in optimizer order, with its state key.
namespace {
std::vector<std::string> optimizer_keys(const AdamW& optimizer) {
  std::vector<std::string> keys;
  for (size_t g = 0; g < optimizer.groups().size(); ++g)
    for (size_t i = 0; i < optimizer.groups()[g].params.size(); ++i) keys.push_back(optimizer.key(g, i));
  return keys;
}
const char* const kStateSuffixes[] = {".exp_avg", ".exp_avg_sq", ".master"};
}  // namespace

TrainingState TrainingRun::gathered_optimizer_state() {
  TrainingState mine = optimizer_->state_dict();
  const std::vector<std::string> keys = optimizer_keys(*optimizer_);
  TrainingState whole;
  whole.tensors = owners_->gather_to_rank0(
      [&](size_t i) {
        std::map<std::string, Tensor> held;
        for (const char* suffix : kStateSuffixes) {
          auto it = mine.tensors.find(keys[i] + suffix);
          if (it != mine.tensors.end()) held.emplace(it->first, it->second);
        }
        return held;
      },
      [&](size_t i) {
        std::vector<std::string> names;
        for (const char* suffix : kStateSuffixes) names.push_back(keys[i] + suffix);
        return names;
      });
  // The step counts: each parameter's from its owner.
  std::vector<int64_t> steps(keys.size(), 0);
  for (size_t i = 0; i < keys.size(); ++i)
    if (owners_->mine(i) && mine.scalars["state"].contains(keys[i])) steps[i] = mine.scalars["state"][keys[i]]["step"];
  dist::all_reduce_sum(group_->cpu(), steps);
  whole.scalars = mine.scalars;
  whole.scalars["state"] = nlohmann::json::object();
  for (size_t i = 0; i < keys.size(); ++i)
    if (steps[i] > 0) whole.scalars["state"][keys[i]] = {{"step", steps[i]}};
  return whole;
}

TrainingState TrainingRun::owned_part(TrainingState whole) const {
  const std::vector<std::string> keys = optimizer_keys(*optimizer_);
  for (size_t i = 0; i < keys.size(); ++i) {
    if (owners_->mine(i)) continue;
    for (const char* suffix : kStateSuffixes) whole.tensors.erase(keys[i] + suffix);
    if (whole.scalars.contains("state")) whole.scalars["state"].erase(keys[i]);
  }
  return whole;
}

void TrainingRun::shard_frozen_base(std::vector<dist::LoadedShard> loaded) {
  std::vector<Variable> adapter_tensors;
  for (const NamedAdapter& a : trainable_.adapters)
    for (const auto& [name, v] : a.adapter->named_tensors()) adapter_tensors.push_back(v);
  // The next layer's gather overlaps this layer's compute (on a thread of its own for CPU
  // collectives, on NCCL's communication stream for CUDA: dist/collective_worker.h).
  auto prefetcher = std::make_unique<dist::CollectiveWorker>(group_->new_communicator(device_, "prefetch"));
  sharded_base_ = std::make_unique<dist::ShardedFrozenBase>(group_->for_device(device_), *model_, adapter_tensors,
                                                            std::move(prefetcher), std::move(loaded));
}

// Each decoder layer holding such adapters is gathered in turn (the same layers in the same order
// on every rank: the adapters are made alike everywhere), its adapters initialised, the layer
// released: the base is never whole in memory. Adapters outside the decoder layers sit on weights
// that stay whole. An adapter given its values by adapter.init_from no longer awaits anything.
void TrainingRun::init_adapters_from_base() {
  std::map<int64_t, std::vector<AdaptedLinear*>> by_layer;  // -1: outside the decoder layers
  for (const NamedAdapter& a : trainable_.adapters)
    if (a.adapter->awaits_base_weight()) by_layer[layer_index_of(a.module_path)].push_back(a.adapter);
  if (by_layer.empty()) return;
  std::vector<int64_t> layers;
  size_t count = 0;
  for (const auto& [layer, adapters] : by_layer) {
    if (layer >= 0) layers.push_back(layer);
    count += adapters.size();
  }
  sharded_base_->for_each_layer_gathered(layers, [&](int64_t layer) {
    for (AdaptedLinear* a : by_layer.at(layer)) a->init_from_base_weight();
  });
  if (by_layer.count(-1))
    for (AdaptedLinear* a : by_layer.at(-1)) a->init_from_base_weight();
  out_ << fmt::format("{} adapters initialised from their base weights, {} decoder layer{} gathered one at a time\n",
                      count, layers.size(), layers.size() == 1 ? "" : "s")
       << std::flush;
}

void TrainingRun::wait_for_rank0(const char* what) {
  // Rank 0 may prepare the data or write a large checkpoint for a long time: the barrier waits up to an
  // hour (MLR_DIST_WAIT, seconds); a rank 0 that dies meanwhile is caught by the heartbeats.
  dist::Communicator& comm = group_->cpu();
  const auto usual = comm.timeout();
  double wait_s = 3600;
  if (const char* v = std::getenv("MLR_DIST_WAIT")) wait_s = std::atof(v);
  comm.set_timeout(std::max(usual, std::chrono::milliseconds(static_cast<int64_t>(wait_s * 1000))));
  try {
    comm.barrier();
  } catch (const dist::CollectiveError& e) {
    comm.set_timeout(usual);
    throw Error(fmt::format("mlr-train: while rank 0 was {}: {}", what, e.what()));
  }
  comm.set_timeout(usual);
}

void TrainingRun::check_global_batch(const TrainerState& state, const std::string& state_file) const {
  if (state.global_rows == 0) return;  // an older checkpoint: the loader's fingerprint checks the batch
  const int64_t world = group_ ? group_->world_size() : 1;
  const int64_t rows = train_data_.config.loader.batch_rows;
  const int64_t saved = state.global_rows;
  MLR_CHECK(saved == rows * world,
            "mlr-train --resume: {} was written by {} rank{} with a global micro-batch of {} rows; this run has {} "
            "rank{} x {} rows = {}: {}",
            state_file, state.world_size, state.world_size > 1 ? "s" : "", saved, world, world > 1 ? "s" : "", rows,
            rows * world,
            saved % world == 0
                ? fmt::format("set data.packing.batch_rows={} (the global batch must stay the same)", saved / world)
                : fmt::format("{} rows do not split over {} ranks (the global batch must stay the same)", saved, world));
}

TrainReport TrainingRun::run() {
  run_start_ = std::chrono::steady_clock::now();
  const InTrainingLoop in_loop;
  while (step_ < config_.train.steps) {
    log_step(train_step());
    evaluate_if_due();
    if (stop_requested()) {
      out_ << "stop requested: saving a checkpoint\n";
      save_checkpoint(step_);
      report_.interrupted = true;
      report_.steps_done = step_;
      g_stop_requested.store(false);  // the request is served; a later run in this process starts clean
      if (group_) group_->finish();
      return report_;
    }
    if (config_.save.interval > 0 && step_ % config_.save.interval == 0 && step_ < config_.train.steps)
      save_checkpoint(step_);
  }
  save_checkpoint(step_);
  const fs::path final_dir = output_dir_ / "final";
  if (main_rank_) save_trainable(*model_, trainable_, config_, final_dir.string());
  if (group_) {
    wait_for_rank0("saving the final weights");
    group_->finish();
  }
  out_ << fmt::format("done: {} steps, final weights in {}\n", step_, final_dir.string());
  report_.steps_done = step_;
  report_.final_dir = final_dir.string();
  return report_;
}

}  // namespace

void request_training_stop() { g_stop_requested.store(true); }

void install_training_signal_handlers() {
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

TrainReport run_training(const TrainConfig& config, const TrainOptions& options) {
  return TrainingRun(config, options).run();
}

}  // namespace mlr
