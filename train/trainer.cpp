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
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "autograd/functions.h"
#include "autograd/grad_mode.h"
#include "data/config.h"
#include "data/loader.h"
#include "data/report.h"
#include "eval/evaluator.h"
#include "eval/llama_scorer.h"
#include "eval/task_files.h"
#include "llama/model.h"
#include "llama/safetensors.h"
#include "llama/tokenizer.h"
#include "multilora/inject.h"
#include "multilora/smora.h"
#include "optim/adamw.h"
#include "optim/grad_utils.h"
#include "optim/loss_scaler.h"
#include "optim/lr_schedule.h"
#include "tensor/error.h"
#include "train/run_files.h"
#include "train/tensorboard.h"

namespace mlr {

namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_stop_requested{false};

extern "C" void on_stop_signal(int) { g_stop_requested.store(true); }

DType compute_dtype(const std::string& precision) {
  if (precision == "bf16") return DType::bf16;
  if (precision == "fp16") return DType::f16;
  return DType::f32;
}

Device pick_device(const std::string& name) {
  if (name == "auto") return cuda_available() ? Device::cuda(0) : Device::cpu();
  return parse_device(name);
}

// ---- the trainable parameters: adapters injected into the model, or every weight ----
struct Trainable {
  std::vector<std::pair<std::string, Variable>> named;
  std::vector<NamedAdapter> adapters;  // empty for full fine-tuning
  bool full = false;
};

InjectionSpec injection_spec(const AdapterSection& a, uint64_t seed) {
  InjectionSpec spec;
  spec.target_modules = a.target_modules;
  spec.layers_to_transform = a.layers;
  spec.seed = seed;
  if (a.type == "lora") {
    spec.kind = AdapterKind::lora;
    spec.lora.r = a.r;
    spec.lora.alpha = a.alpha;
    spec.lora.dropout = a.dropout;
    spec.lora.use_rslora = a.rslora;
    spec.lora.dtype = DType::f32;
  } else if (a.type == "multilora") {
    spec.kind = AdapterKind::multilora;
    spec.multilora.r = a.r;
    spec.multilora.n_modules = a.n_modules;
    spec.multilora.ranks = a.ranks;
    spec.multilora.alpha = a.alpha;
    spec.multilora.dropout = a.dropout;
    spec.multilora.scale_mode = a.scale == "per_channel" ? MultiLoraScale::per_channel : MultiLoraScale::per_module;
    spec.multilora.learnable_scale = !a.fixed_scale;
    spec.multilora.scale_init = a.scale_init;
    spec.multilora.init = a.init == "gaussian" ? MultiLoraInit::gaussian : MultiLoraInit::kaiming_uniform;
    spec.multilora.dtype = DType::f32;
  } else {
    spec.kind = AdapterKind::smora;
    spec.smora.r = a.r;
    spec.smora.top_k = a.top_k;
    spec.smora.alpha = a.alpha;
    spec.smora.score = a.router == "softmax" ? SmoraScore::softmax : SmoraScore::sigmoid;
    spec.smora.bias_update_rate = a.balance_rate;
    spec.smora.dropout = a.dropout;
    spec.smora.dtype = DType::f32;
  }
  return spec;
}

Trainable setup_trainable(LlamaForCausalLM& model, const TrainConfig& config) {
  Trainable t;
  if (config.adapter.type == "full") {
    t.full = true;
    model.requires_grad_(true);
  } else {
    t.adapters = inject_adapters(model, injection_spec(config.adapter, static_cast<uint64_t>(config.seed)));
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

// Mean cross-entropy over the target tokens of one batch (labels pre-shifted by the packer).
Variable batch_loss(LlamaForCausalLM& model, const DeviceBatch& d) {
  LlamaBatch input = d.batch;  // no labels: the packer has shifted them already
  CausalLMOutput out = model.forward(input);
  const int64_t n = d.targets.numel();
  return cross_entropy(out.logits.reshape({n, out.logits.size(-1)}), d.targets, -100, Reduction::mean);
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

// FLOPs per trained token: 6N for full fine-tuning (forward, input and weight gradients), 4N with
// frozen base weights (forward and input gradients), N the model's parameters; attention and the
// adapters' own FLOPs are left out, so MFU is slightly understated.
double flops_per_token(const LlamaForCausalLM& model, bool full) {
  return (full ? 6.0 : 4.0) * static_cast<double>(model.num_parameters());
}

// Dense peak of the device for the compute dtype: H100/H200 SXM bf16/fp16 989.4 TFLOP/s, f32 without
// TF32 66.9 (override with MLR_PEAK_TFLOPS). 0 on the CPU: MFU is not reported there.
double peak_flops(Device device, DType dtype) {
  if (const char* v = std::getenv("MLR_PEAK_TFLOPS")) return std::atof(v) * 1e12;
  if (!device.is_cuda()) return 0.0;
  return dtype == DType::f32 ? 66.9e12 : 989.4e12;
}

std::string progress_bar(int64_t done, int64_t total, int width = 30) {
  const int filled = total > 0 ? static_cast<int>(width * done / total) : width;
  return "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
}

nlohmann::json read_json_file(const fs::path& path) {
  std::ifstream in(path);
  MLR_CHECK(in.good(), "mlr-train: cannot read {}", path.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("mlr-train: {} is not valid JSON: {}", path.string(), e.what()));
  }
}

}  // namespace

void request_training_stop() { g_stop_requested.store(true); }

void install_training_signal_handlers() {
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

TrainReport run_training(const TrainConfig& config, const TrainOptions& options) {
  std::ostream& out = options.out ? *options.out : std::cout;
  const fs::path output_dir(config.output_dir);
  fs::create_directories(output_dir);
  atomic_write_file((output_dir / "config.resolved.yaml").string(), to_yaml(config));
  out << "resolved configuration (" << (output_dir / "config.resolved.yaml").string() << "):\n"
      << to_yaml(config) << std::flush;

  const Device device = pick_device(config.model.device);
  const DType dtype = compute_dtype(config.train.precision);
  manual_seed(static_cast<uint64_t>(config.seed));

  // Model, tokenizer, adapters.
  auto model = LlamaForCausalLM::from_pretrained(config.model.path, dtype, device);
  model->set_gradient_checkpointing(config.train.activation_checkpointing);
  const auto tokenizer = load_tokenizer(config.model.path);
  Trainable trainable = setup_trainable(*model, config);
  model->train();

  // Data.
  MLR_CHECK(!config.data_yaml.empty(), "mlr-train: the configuration has no data section");
  DataPipeline train_data = prepare_data(config.data_yaml, "data", config, *tokenizer);
  std::optional<DataPipeline> heldout;
  // Evaluation runs every eval.interval steps; 0 switches it off (the tasks and data are then not loaded).
  const bool evaluating = config.eval.interval > 0;
  if (evaluating && config.eval.heldout_batches > 0)
    heldout = prepare_data(config.eval.data_yaml, "eval.data", config, *tokenizer);
  // Benchmark tasks for the periodic evaluation, loaded once.
  std::optional<eval::LoadedTasks> eval_tasks;
  if (evaluating && !config.eval.tasks.empty()) eval_tasks = eval::load_named_tasks(config.eval.tasks, config.eval.data_dir);

  // Optimizer, schedule, loss scaling.
  AdamWOptions adam;
  adam.lr = config.optim.lr;
  adam.beta1 = config.optim.beta1;
  adam.beta2 = config.optim.beta2;
  adam.eps = config.optim.eps;
  adam.weight_decay = config.optim.weight_decay;
  NoDecayRules no_decay;
  if (config.optim.decay_norms_biases_scales) no_decay.patterns.clear();
  AdamW optimizer(make_param_groups(trainable.named, adam, no_decay));
  LrSchedule schedule;
  schedule.kind = parse_lr_schedule_kind(config.optim.schedule);
  schedule.base_lr = config.optim.lr;
  schedule.warmup_steps = config.optim.warmup_steps;
  schedule.total_steps = config.train.steps;
  schedule.min_lr_ratio = config.optim.min_lr_ratio;
  schedule.validate();
  LossScalerOptions scaler_options;
  scaler_options.enabled = dtype == DType::f16;
  scaler_options.init_scale = config.optim.loss_scale_init;
  scaler_options.growth_interval = config.optim.loss_scale_growth_interval;
  DynamicLossScaler scaler(scaler_options);
  const std::vector<Variable> params = optimizer.parameters();

  // Resume.
  CheckpointDirectory checkpoints((output_dir / "checkpoints").string());
  TrainReport report;
  int64_t step = 0;
  std::optional<data::LoaderState> loader_state;
  if (options.resume) {
    const auto latest = checkpoints.latest();
    MLR_CHECK(latest.has_value(), "mlr-train --resume: no complete checkpoint in {}",
              (output_dir / "checkpoints").string());
    const fs::path dir(*latest);
    const nlohmann::json state = read_json_file(dir / "trainer_state.json");
    load_trainable(*model, trainable, (dir / "weights").string());
    TrainingState optim_state;
    optim_state.tensors = load_checkpoint_tensors((dir / "optimizer.safetensors").string(), std::nullopt, device);
    optim_state.scalars = state.at("optimizer");
    optimizer.load_state_dict(optim_state);
    scaler.load_state_dict(state.at("loss_scaler"));
    loader_state = data::LoaderState::from_json(state.at("loader").dump(), (dir / "trainer_state.json").string());
    default_generator().set_state(state.at("rng").at("seed").get<uint64_t>(), state.at("rng").at("offset").get<uint64_t>());
    if (state.contains("adapter_dropout_rng")) {
      const nlohmann::json& dropout = state.at("adapter_dropout_rng");
      for (const NamedAdapter& a : trainable.adapters) {
        MLR_CHECK(dropout.contains(a.module_path), "mlr-train --resume: {} has no dropout state for {}",
                  (dir / "trainer_state.json").string(), a.module_path);
        const auto& g = dropout.at(a.module_path);
        a.adapter->dropout_generator().set_state(g.at(0).get<uint64_t>(), g.at(1).get<uint64_t>());
      }
    }
    if (state.contains("smora_total_counts")) {
      for (const NamedAdapter& a : trainable.adapters)
        if (auto* smora = dynamic_cast<SmoraLinear*>(a.adapter))
          smora->set_total_counts(state.at("smora_total_counts").at(a.module_path).get<std::vector<int64_t>>());
    }
    step = state.at("step").get<int64_t>();
    out << fmt::format("resumed from {} at step {}\n", dir.string(), step);
  }
  report.start_step = step;
  auto loader = make_loader(train_data, loader_state ? &*loader_state : nullptr);

  MetricsLog metrics((output_dir / "metrics.jsonl").string(), options.resume);
  std::unique_ptr<TensorBoardWriter> tensorboard;
  if (config.log.tensorboard) tensorboard = std::make_unique<TensorBoardWriter>((output_dir / "tensorboard").string());

  const double model_flops_per_token = flops_per_token(*model, trainable.full);
  const double peak = peak_flops(device, dtype);
  const bool bar = options.progress_bar && isatty(STDERR_FILENO);
  out << fmt::format("training {} of {} parameters ({} tensors) on {} in {}, {} steps x {} micro-batches\n",
                     model->num_parameters(true), model->num_parameters(), trainable.named.size(), device.str(),
                     dtype_name(dtype), config.train.steps, config.train.grad_accum)
      << std::flush;

  auto save_checkpoint = [&](int64_t at_step) {
    const std::string staging = checkpoints.begin(at_step);
    save_trainable(*model, trainable, config, (fs::path(staging) / "weights").string());
    const TrainingState optim_state = optimizer.state_dict();
    std::vector<std::pair<std::string, Tensor>> tensors(optim_state.tensors.begin(), optim_state.tensors.end());
    save_safetensors((fs::path(staging) / "optimizer.safetensors").string(), tensors);
    nlohmann::json state;
    state["step"] = at_step;
    state["optimizer"] = optim_state.scalars;
    state["lr_schedule"] = schedule.state_dict();
    state["loss_scaler"] = scaler.state_dict();
    state["loader"] = nlohmann::json::parse(loader->state().to_json());
    state["rng"] = {{"seed", default_generator().seed()}, {"offset", default_generator().offset()}};
    nlohmann::json dropout = nlohmann::json::object();
    for (const NamedAdapter& a : trainable.adapters) {
      const Generator& g = a.adapter->dropout_generator();
      dropout[a.module_path] = {g.seed(), g.offset()};
    }
    state["adapter_dropout_rng"] = dropout;
    nlohmann::json smora_counts = nlohmann::json::object();
    for (const NamedAdapter& a : trainable.adapters)
      if (auto* smora = dynamic_cast<SmoraLinear*>(a.adapter)) smora_counts[a.module_path] = smora->total_counts();
    if (!smora_counts.empty()) state["smora_total_counts"] = smora_counts;
    atomic_write_file((fs::path(staging) / "trainer_state.json").string(), state.dump(2));
    const std::string path = checkpoints.commit(at_step, config.save.keep_last);
    out << fmt::format("saved checkpoint {}\n", path) << std::flush;
  };

  auto heldout_loss = [&]() {
    NoGradGuard no_grad;
    model->eval();
    auto eval_loader = make_loader(*heldout, nullptr);
    double total = 0;
    for (int64_t i = 0; i < config.eval.heldout_batches; ++i) {
      const DeviceBatch batch = to_device(eval_loader->next(), device, model->config().vocab_size);
      total += batch_loss(*model, batch).data().to(DType::f64).item<double>();
    }
    model->train();
    return total / static_cast<double>(config.eval.heldout_batches);
  };

  // The benchmark tasks scored as mlr-eval scores them (lm-evaluation-harness rules), adapters
  // unmerged, dropout off; returns the JSON record and logs every task's and group's metrics.
  auto task_eval = [&](int64_t at_step) {
    NoGradGuard no_grad;
    model->eval();
    eval::LlamaContinuationModel lm(*model);
    eval::TokenizedScorer scorer(*tokenizer, lm, config.model.path);
    eval::EvalOptions eval_options;
    if (config.eval.limit > 0) eval_options.limit = static_cast<double>(config.eval.limit);
    const eval::EvalResults results = eval::evaluate(eval_tasks->tasks, eval_tasks->groups, scorer, eval_options);
    model->train();
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
    for (const eval::TaskGroup& g : eval_tasks->groups)
      for (const std::string& c : g.children) grouped.insert(c);
    for (const eval::TaskResult& t : results.tasks) add(t.name, t.metrics, !grouped.count(t.name));
    for (const eval::GroupResult& g : results.groups) add(g.name, g.metrics, g.name == "mmlu" || !grouped.count(g.name));
    out << line << "\n" << std::flush;
    metrics.write(record);
    if (tensorboard) tensorboard->add_scalars(scalars, at_step);
  };

  const auto run_start = std::chrono::steady_clock::now();
  while (step < config.train.steps) {
    const auto t0 = std::chrono::steady_clock::now();
    const double lr = schedule.lr(step);
    optimizer.set_lr_factor(schedule.factor(step));
    double step_loss = 0;
    int64_t tokens = 0;
    for (int64_t micro = 0; micro < config.train.grad_accum; ++micro) {
      const DeviceBatch batch = to_device(loader->next(), device, model->config().vocab_size);
      Variable loss = batch_loss(*model, batch);
      step_loss += loss.data().to(DType::f64).item<double>() / static_cast<double>(config.train.grad_accum);
      tokens += batch.real_tokens;
      Variable scaled = mul(loss, 1.0 / static_cast<double>(config.train.grad_accum));
      scaled = scaler.scale_loss(scaled);
      scaled.backward();
    }
    scaler.unscale_(optimizer);
    const double grad_norm = config.optim.clip_grad_norm > 0 ? clip_grad_norm_(params, config.optim.clip_grad_norm)
                                                              : global_grad_norm(params);
    const bool stepped = scaler.step(optimizer);
    scaler.update();
    optimizer.zero_grad();
    for (const NamedAdapter& a : trainable.adapters)
      if (auto* smora = dynamic_cast<SmoraLinear*>(a.adapter)) smora->update_load_balance();
    ++step;
    report.losses.push_back(step_loss);
    if (device.is_cuda()) synchronize(device);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double tokens_per_s = tokens / std::max(seconds, 1e-9);
    const double mfu = peak > 0 ? tokens_per_s * model_flops_per_token / peak : -1;
    const MemoryStats mem = memory_stats(device);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
    const double eta = elapsed / static_cast<double>(step - report.start_step) * static_cast<double>(config.train.steps - step);

    if (step % config.log.interval == 0 || step == config.train.steps) {
      out << fmt::format("step {}/{} | loss {:.4f} | lr {:.3e} | grad norm {:.3f}{} | {:.0f} tok/s | MFU {} | mem {} | ETA {}\n",
                         step, config.train.steps, step_loss, lr, grad_norm, stepped ? "" : " (skipped: inf/NaN)",
                         tokens_per_s, mfu >= 0 ? fmt::format("{:.1f}%", 100 * mfu) : std::string("n/a"),
                         human_bytes(static_cast<double>(mem.peak_bytes)), human_duration(eta))
          << std::flush;
      nlohmann::json record = {{"step", step},          {"loss", step_loss},        {"lr", lr},
                               {"grad_norm", grad_norm}, {"tokens_per_s", tokens_per_s}, {"peak_memory_bytes", mem.peak_bytes},
                               {"skipped", !stepped},    {"loss_scale", scaler.scale()}};
      if (mfu >= 0) record["mfu"] = mfu;
      std::vector<std::pair<std::string, float>> scalars = {{"train/loss", static_cast<float>(step_loss)},
                                                            {"train/lr", static_cast<float>(lr)},
                                                            {"train/grad_norm", static_cast<float>(grad_norm)},
                                                            {"train/tokens_per_s", static_cast<float>(tokens_per_s)}};
      if (!trainable.adapters.empty()) {
        if (auto* smora = dynamic_cast<SmoraLinear*>(trainable.adapters.front().adapter)) {
          const SmoraLoadStats s = smora->load_stats();
          record["smora_max_over_mean_load"] = s.max_over_mean;
          record["smora_load_cv"] = s.coefficient_of_variation;
          scalars.push_back({"smora/max_over_mean_load", static_cast<float>(s.max_over_mean)});
        }
      }
      metrics.write(record);
      if (tensorboard) tensorboard->add_scalars(scalars, step);
    }
    if (bar) std::cerr << "\r" << progress_bar(step, config.train.steps) << " " << step << "/" << config.train.steps
                       << (step == config.train.steps ? "\n" : "") << std::flush;

    const bool eval_now = config.eval.interval > 0 && (step % config.eval.interval == 0 || step == config.train.steps);
    if (eval_tasks && eval_now) task_eval(step);
    if (heldout && eval_now) {
      const double l = heldout_loss();
      report.heldout_losses.push_back(l);
      out << fmt::format("eval step {} | held-out loss {:.4f} | perplexity {:.2f}\n", step, l, std::exp(l)) << std::flush;
      metrics.write({{"step", step}, {"heldout_loss", l}});
      if (tensorboard) tensorboard->add_scalar("eval/heldout_loss", l, step);
    }
    if (g_stop_requested.load()) {
      out << "stop requested: saving a checkpoint\n";
      save_checkpoint(step);
      report.interrupted = true;
      report.steps_done = step;
      g_stop_requested.store(false);  // the request is served; a later run in this process starts clean
      return report;
    }
    if (config.save.interval > 0 && step % config.save.interval == 0 && step < config.train.steps) save_checkpoint(step);
  }
  save_checkpoint(step);
  const fs::path final_dir = output_dir / "final";
  save_trainable(*model, trainable, config, final_dir.string());
  out << fmt::format("done: {} steps, final weights in {}\n", step, final_dir.string());
  report.steps_done = step;
  report.final_dir = final_dir.string();
  return report;
}

}  // namespace mlr
