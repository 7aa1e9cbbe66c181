// The demo pipeline (see demo.h).
#include "demo/demo.h"

#include <chrono>
#include <fstream>
#include <ostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/atomic_file.h"
#include "demo/bpe_trainer.h"
#include "demo/world.h"
#include "eval/evaluator.h"
#include "eval/llama_scorer.h"
#include "eval/task_docs.h"
#include "eval/task_registry.h"
#include "eval/tasks/mmlu.h"
#include "llama/generate.h"
#include "llama/model.h"
#include "llama/safetensors.h"
#include "llama/tokenizer.h"
#include "multilora/inject.h"
#include "multilora/update_spectra.h"
#include "tensor/device.h"
#include "tensor/error.h"
#include "tensor/ops.h"
#include "train/config.h"
#include "train/trainer.h"

namespace mlr::demo {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// What a mode trains and evaluates. The full mode fits in 10 minutes on a 2-core CPU.
struct Settings {
  DatasetSizes sizes;
  LlamaConfig model;
  int64_t vocab_size = 640;
  int64_t seq_len = 256, pretrain_rows = 8, finetune_rows = 4;
  int64_t pretrain_steps = 800, finetune_steps = 400;
  double pretrain_lr = 3e-3, adapter_lr = 3e-3, full_lr = 1e-3;
  int64_t rank = 8;  // LoRA r; MultiLoRA 2 modules of r/2; SMoRA r rank-experts, r/2 per token
  int64_t eval_limit = 0;
};

Settings settings_for(const DemoOptions& o) {
  Settings s;
  LlamaConfig& m = s.model;
  m.hidden_size = 128;
  m.num_hidden_layers = 4;
  m.num_attention_heads = 4;
  m.num_key_value_heads = 4;
  m.intermediate_size = 352;
  m.max_position_embeddings = 256;
  m.rms_norm_eps = 1e-5;
  if (o.quick) {
    s.sizes = {.people = 24, .heldout_people = 0.25, .categories_train = 80,
               .categories_test = 24, .counting_train = 80, .counting_test = 24, .pretrain_documents = 2000};
    m.max_position_embeddings = 128;
    s.vocab_size = 400;
    s.seq_len = 128;
    s.pretrain_rows = 8;
    s.finetune_rows = 4;
    s.pretrain_steps = 250;
    s.finetune_steps = 100;
  }
  m.head_dim = m.hidden_size / m.num_attention_heads;
  if (o.pretrain_steps > 0) s.pretrain_steps = o.pretrain_steps;
  if (o.finetune_steps > 0) s.finetune_steps = o.finetune_steps;
  if (o.eval_limit > 0) s.eval_limit = o.eval_limit;
  return s;
}

std::string yaml_string(const fs::path& p) { return nlohmann::json(p.string()).dump(); }

// The data section shared by the runs (paths absolute, so the configs run from anywhere).
std::string data_section(const Settings& s, int64_t rows, const fs::path& tokenizer_dir, const fs::path& cache,
                         uint64_t seed, const std::string& datasets) {
  return fmt::format(
      "data:\n  tokenizer: {}\n  cache_dir: {}\n  threads: 2\n  seed: {}\n  mixture: {{mode: weights}}\n"
      "  packing: {{seq_len: {}, batch_rows: {}}}\n  datasets:\n{}",
      yaml_string(tokenizer_dir), yaml_string(cache), seed, s.seq_len, rows, datasets);
}

std::string run_yaml(const std::string& model_dir, const std::string& device, const std::string& adapter,
                     const std::string& data, int64_t steps, double lr, const fs::path& output_dir, uint64_t seed) {
  return fmt::format(
      "model: {{path: {}, device: {}}}\nadapter: {}\n{}train: {{steps: {}, precision: f32}}\n"
      "optim: {{lr: {}, schedule: cosine, warmup_steps: {}, min_lr_ratio: 0.1}}\n"
      "save: {{interval: 0, keep_last: 1}}\nlog: {{interval: {}, tensorboard: false}}\noutput_dir: {}\nseed: {}\n",
      yaml_string(model_dir), device, adapter, data, steps, lr, std::max<int64_t>(1, steps / 10), std::max<int64_t>(1, steps / 10),
      yaml_string(output_dir), seed);
}

struct TrainedRun {
  TrainReport report;
  double seconds = 0.0;
};

TrainedRun train_run(const std::string& yaml, const fs::path& config_file, const fs::path& log_file) {
  atomic_write_file(config_file.string(), yaml);
  const TrainConfig config = load_train_config(config_file, {});
  fs::create_directories(log_file.parent_path());
  std::ofstream log(log_file);
  TrainOptions options;
  options.out = &log;
  options.progress_bar = false;
  const auto t0 = Clock::now();
  TrainedRun run{run_training(config, options), 0.0};
  run.seconds = seconds_since(t0);
  MLR_CHECK(!run.report.interrupted, "demo: training {} was interrupted", config_file.string());
  return run;
}

void copy_tokenizer(const fs::path& from, const fs::path& to) {
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(from / f, to / f, fs::copy_options::overwrite_existing);
}

// The 4-way families' prompt, in training (data/ template) and in evaluation alike.
constexpr const char* kClozePrompt = "{{question}}\nAnswer:";

// The tasks scored: each family's held-out split, with the harness's prompt for its format.
std::vector<eval::Task> family_tasks(const DatasetFiles& files) {
  std::vector<eval::Task> tasks;
  for (const FamilyFiles& f : files.families) {
    eval::Task t;
    if (f.format == "boolq") {
      auto loaded = eval::find_task("boolq").load("boolq", eval::TaskFiles{f.test, std::nullopt});
      MLR_CHECK(loaded.size() == 1, "demo: boolq loaded {} tasks", loaded.size());
      t = std::move(loaded.front());
    } else if (f.format == "mmlu") {
      // The cloze formulation (the harness's mmlu_continuation): the question alone, each option's
      // text scored as the continuation. A model this small learns facts in minutes but not the
      // in-context look-up that letter answers need (see README).
      eval::TaskConfig c;
      c.name = f.name;
      c.doc_to_text = kClozePrompt;
      c.doc_to_choice = "{{[A, B, C, D]}}";
      c.doc_to_target = "{{label}}";
      eval::DocFunctions cloze;
      cloze.choices = [](const eval::DocValues& v) {
        return std::vector<std::string>{v.at("A").string(), v.at("B").string(), v.at("C").string(), v.at("D").string()};
      };
      cloze.target = [](const eval::DocValues& v) { return v.at("label"); };
      auto loaded = eval::record_task(c, data::Format::mmlu, "", cloze).load(f.name, eval::TaskFiles{f.test, std::nullopt});
      t = std::move(loaded.front());
    } else {  // alpaca: generation, exact match of the stripped answer
      eval::TaskConfig c;
      c.name = f.name;
      c.doc_to_text = "{{instruction}}\nAnswer:";
      c.doc_to_target = "{{output}}";
      c.output_type = eval::OutputType::generate_until;
      c.until = {"\n"};
      c.max_gen_toks = 8;
      c.filters = {{"strip", [](std::string_view r) {
                      const size_t a = r.find_first_not_of(" \t\n"), b = r.find_last_not_of(" \t\n");
                      return a == std::string_view::npos ? std::string() : std::string(r.substr(a, b - a + 1));
                    }}};
      eval::Metric exact{.name = "exact_match"};
      exact.score_answer = [](std::string_view answer, const eval::Doc& doc) { return answer == doc.target ? 1.0 : 0.0; };
      c.metrics = {exact};
      auto loaded = eval::record_task(c, data::Format::alpaca, "").load(f.name, eval::TaskFiles{f.test, std::nullopt});
      t = std::move(loaded.front());
    }
    t.config.name = f.name;
    t.config.alias = f.name;
    tasks.push_back(std::move(t));
  }
  return tasks;
}

double task_score(const eval::TaskResult& t) {
  for (const auto& m : t.metrics)
    if (m.name == "acc" || m.name == "exact_match") return m.value;
  throw Error(fmt::format("demo: task {} reported neither acc nor exact_match", t.name));
}

Device resolve_device(const std::string& name) {
  return name == "auto" ? (cuda_available() ? Device::cuda(0) : Device::cpu()) : parse_device(name);
}

// The update of a SMoRA adapter over its whole rank pool, B A (each token uses top_k of the r
// rank-experts, so this is the span its updates live in, not one token's update).
UpdateSpectra smora_update_spectra(const fs::path& adapter_dir, const std::string& label) {
  const auto tensors = load_checkpoint_tensors((adapter_dir / "adapter_model.safetensors").string(), DType::f64);
  UpdateSpectra run{label, {}};
  const std::string a_suffix = ".lora_A.weight", prefix = "base_model.model.";
  for (const auto& [name, a] : tensors) {
    if (name.size() < a_suffix.size() || name.compare(name.size() - a_suffix.size(), a_suffix.size(), a_suffix) != 0) continue;
    const std::string module = name.substr(0, name.size() - a_suffix.size());
    auto b = tensors.find(module + ".lora_B.weight");
    MLR_CHECK(b != tensors.end(), "demo: {} has {} but no lora_B", adapter_dir.string(), name);
    Tensor d = matmul(b->second, a);
    run.matrices.push_back({module.rfind(prefix, 0) == 0 ? module.substr(prefix.size()) : module, d, spectrum_stats(d)});
  }
  return run;
}

int64_t count_parameters(const fs::path& file, bool skip_buffers) {
  int64_t n = 0;
  for (const auto& [name, t] : load_checkpoint_tensors(file.string()))
    if (!skip_buffers || name.find("smora_bias") == std::string::npos) n += t.numel();
  return n;
}

}  // namespace

DemoReport run_demo(const DemoOptions& options, std::ostream& log) {
  const auto t_start = Clock::now();
  const Settings s = settings_for(options);
  const fs::path out = fs::absolute(options.out_dir);
  fs::create_directories(out / "configs");
  const Device device = resolve_device(options.device);
  const std::string device_name = device.is_cuda() ? device.str() : "cpu";
  DemoReport report;
  report.device = device_name;

  // 1. data
  const World world = make_world(options.seed, s.sizes.people);
  const DatasetFiles files = write_dataset(world, out / "data", options.seed, s.sizes);
  for (const FamilyFiles& f : files.families)
    report.families.push_back({f.name, f.shape, f.format, f.format == "alpaca" ? "exact match" : "acc", f.chance,
                               f.n_train, f.n_test});
  log << fmt::format("data: {} families, {} pretraining documents in {}\n", files.families.size(),
                     files.pretrain_documents, (out / "data").string());

  // 2. tokenizer and 3. the base model, pretrained from random weights
  const fs::path init_dir = out / "init";
  const BpeTokenizerInfo tok = train_byte_level_bpe(files.pretrain_text, s.vocab_size, init_dir);
  LlamaConfig mc = s.model;
  mc.vocab_size = tok.vocab_size;
  mc.bos_token_id = tok.eos_id;
  mc.eos_token_ids = {tok.eos_id};
  mc.pad_token_id = tok.eos_id;
  {
    Generator gen(options.seed);
    LlamaForCausalLM init(mc, &gen);
    init.save_pretrained(init_dir.string());
  }
  report.model_summary = fmt::format(
      "LLaMA, {} layers, hidden {}, {} heads, MLP {}, vocabulary {} (byte-level BPE, {} merges), context {}",
      mc.num_hidden_layers, mc.hidden_size, mc.num_attention_heads, mc.intermediate_size, mc.vocab_size, tok.merges,
      mc.max_position_embeddings);
  log << "model: " << report.model_summary << "\n";
  const fs::path cache = out / "cache";
  const std::string pretrain_data = data_section(
      s, s.pretrain_rows, init_dir, cache, options.seed,
      fmt::format("    - {{name: corpus, format: prompt_completion, path: {}, eos: true}}\n", yaml_string(files.pretrain_corpus)));
  log << fmt::format("pretraining: {} steps of {} x {} tokens (full training) ...\n", s.pretrain_steps, s.pretrain_rows,
                     s.seq_len)
      << std::flush;
  const TrainedRun pre = train_run(run_yaml(init_dir.string(), options.device, "{type: full}", pretrain_data,
                                            s.pretrain_steps, s.pretrain_lr, out / "runs/pretrain", options.seed),
                                   out / "configs/pretrain.yaml", out / "runs/pretrain.log");
  const fs::path base_dir = out / "base";
  fs::remove_all(base_dir);
  fs::rename(out / "runs/pretrain/final", base_dir);
  copy_tokenizer(init_dir, base_dir);
  report.pretrain_seconds = pre.seconds;
  report.pretrain_losses = pre.report.losses;
  log << fmt::format("  loss {:.3f} -> {:.3f} in {:.0f} s; base model in {}\n", pre.report.losses.front(),
                     pre.report.losses.back(), pre.seconds, base_dir.string());

  // 4. fine-tuning on the mixture of the four families
  std::string mixture;
  for (const FamilyFiles& f : files.families) {
    // EOS after every answer, so the models stop there when they generate (the samples).
    mixture += fmt::format("    - {{name: {}, format: {}, path: {}, eos: true", f.name, f.format, yaml_string(f.train));
    if (f.format == "alpaca")
      mixture += ", template: {prompt: \"{{instruction}}\\nAnswer:\", target: \"{{output}}\"}";
    if (f.format == "mmlu")
      mixture += fmt::format(", template: {{prompt: {}, choices: [\"{{{{A}}}}\", \"{{{{B}}}}\", \"{{{{C}}}}\", \"{{{{D}}}}\"]}}",
                             nlohmann::json(kClozePrompt).dump());
    mixture += "}\n";
  }
  const std::string finetune_data = data_section(s, s.finetune_rows, base_dir, cache, options.seed, mixture);
  const std::string targets = "[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]";
  struct MethodSpec {
    std::string name, label, adapter;
    double lr;
  };
  const int64_t r = s.rank;
  const std::vector<MethodSpec> specs = {
      {"lora", fmt::format("LoRA r={}", r), fmt::format("{{type: lora, r: {}, alpha: {}, target_modules: {}}}", r, 2 * r, targets),
       s.adapter_lr},
      {"multilora", fmt::format("MultiLoRA {}x{}", 2, r / 2),
       fmt::format("{{type: multilora, r: {}, alpha: {}, n_modules: 2, target_modules: {}}}", r, 2 * r, targets), s.adapter_lr},
      {"smora", fmt::format("SMoRA {} ranks, top {}", r, r / 2),
       fmt::format("{{type: smora, r: {}, alpha: {}, top_k: {}, target_modules: {}}}", r, 2 * r, r / 2, targets), s.adapter_lr},
      {"full", "full fine-tuning", "{type: full}", s.full_lr}};
  MethodResult base;
  base.name = "base";
  base.label = "base model";
  report.methods.push_back(std::move(base));
  for (const MethodSpec& m : specs) {
    log << fmt::format("fine-tuning {}: {} steps of {} x {} tokens ...\n", m.label, s.finetune_steps, s.finetune_rows, s.seq_len) << std::flush;
    const TrainedRun run = train_run(run_yaml(base_dir.string(), options.device, m.adapter, finetune_data,
                                              s.finetune_steps, m.lr, out / "runs" / m.name, options.seed),
                                     out / "configs" / (m.name + ".yaml"), out / "runs" / (m.name + ".log"));
    MethodResult res;
    res.name = m.name;
    res.label = m.label;
    res.train_seconds = run.seconds;
    res.losses = run.report.losses;
    res.final_loss = run.report.losses.back();
    const fs::path final_dir = run.report.final_dir;
    res.trainable_parameters = m.name == "full" ? count_parameters(final_dir / "model.safetensors", false)
                                                : count_parameters(final_dir / "adapter_model.safetensors", true);
    if (m.name == "full") copy_tokenizer(base_dir, final_dir);
    log << fmt::format("  loss {:.3f} -> {:.3f} in {:.0f} s\n", res.losses.front(), res.final_loss, run.seconds);
    report.methods.push_back(std::move(res));
  }

  // 5. evaluation, spectra, samples
  const std::vector<eval::Task> tasks = family_tasks(files);
  const auto tokenizer = load_tokenizer(base_dir.string());
  eval::EvalOptions eval_options;
  if (s.eval_limit > 0) eval_options.limit = static_cast<double>(s.eval_limit);
  std::vector<UpdateSpectra> spectra;
  for (MethodResult& m : report.methods) {
    const auto t0 = Clock::now();
    const fs::path run_dir = out / "runs" / m.name / "final";
    const std::string model_dir = m.name == "full" ? run_dir.string() : base_dir.string();
    auto model = LlamaForCausalLM::from_pretrained(model_dir, DType::f32, device);
    if (m.name != "base" && m.name != "full") inject_adapter_from_file(*model, run_dir.string());
    eval::LlamaContinuationModel lm(*model);
    eval::TokenizedScorer scorer(*tokenizer, lm, m.label);
    const eval::EvalResults results = eval::evaluate(tasks, {}, scorer, eval_options);
    for (const eval::TaskResult& t : results.tasks) m.accuracy.push_back(task_score(t));
    atomic_write_file((out / "runs" / (m.name + "_eval.json")).string(), eval::results_json(results).dump(2) + "\n");

    // Greedy continuations of the first held-out prompt of each family.
    GenerationConfig gen;
    gen.max_new_tokens = 12;
    gen.eos_token_ids = {tok.eos_id};
    gen.pad_token_id = tok.eos_id;
    gen.stop_strings = {"\n"};
    gen.tokenizer = tokenizer.get();
    std::vector<std::vector<int64_t>> prompts;
    std::vector<std::string> prompt_texts;
    for (const eval::Task& t : tasks) {
      const std::string text = t.config.description + t.docs.front().text;
      const auto ids = tokenizer->encode(text, false);
      prompts.emplace_back(ids.begin(), ids.end());
      prompt_texts.push_back(text);
    }
    const GenerationOutput g = generate(*model, prompts, gen);
    for (size_t i = 0; i < prompts.size(); ++i) {
      std::vector<int32_t> ids(g.tokens[i].begin(), g.tokens[i].end());
      m.samples.emplace_back(prompt_texts[i], tokenizer->decode(ids, true));
    }
    m.eval_seconds = seconds_since(t0);

    if (m.name != "base") {
      UpdateSpectra u = m.name == "full"    ? full_update_spectra(base_dir.string(), run_dir.string(), m.label)
                        : m.name == "smora" ? smora_update_spectra(run_dir, m.label)
                                            : adapter_update_spectra(base_dir.string(), run_dir.string(), m.label);
      m.matrices = static_cast<int64_t>(u.matrices.size());
      m.mean_effective_rank = u.mean_effective_rank();
      m.mean_entropy = u.mean_entropy();
      m.mean_top1_energy = u.mean_top_k_energy(1);
      m.mean_top4_energy = u.mean_top_k_energy(4);
      spectra.push_back(std::move(u));
    }
    std::string accs;
    for (size_t i = 0; i < m.accuracy.size(); ++i) accs += fmt::format(" {} {:.2f}", tasks[i].config.name, m.accuracy[i]);
    log << fmt::format("evaluated {}:{} ({:.1f} s)\n", m.label, accs, m.eval_seconds) << std::flush;
  }
  report.spectra_svg = update_spectra_svg(spectra, static_cast<size_t>(2 * s.rank));
  report.total_seconds = seconds_since(t_start);
  atomic_write_file((out / "index.html").string(), report_html(report));
  atomic_write_file((out / "results.txt").string(), report_tables(report));
  return report;
}

}  // namespace mlr::demo
