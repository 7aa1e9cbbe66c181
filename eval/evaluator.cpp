#include "eval/evaluator.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <functional>
#include <map>
#include <set>
#include <span>

#include "data/text.h"
#include "eval/metrics.h"
#include "tensor/error.h"

namespace mlr::eval {

using json = nlohmann::json;

namespace {

int64_t limited_count(int64_t n, const std::optional<double>& limit) {
  if (!limit) return n;
  MLR_CHECK(*limit > 0.0, "eval: limit {} must be positive", *limit);
  const int64_t count = *limit < 1.0 ? static_cast<int64_t>(std::ceil(static_cast<double>(n) * *limit))
                                     : static_cast<int64_t>(*limit);
  return std::min(n, count);
}

const MetricValue* find_metric(const std::vector<MetricValue>& metrics, const std::string& name) {
  for (const auto& m : metrics) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

std::string format_number(double v) { return fmt::format("{:.4f}", v); }

bool is_per_doc_metric(const std::string& name) { return name == "acc" || name == "acc_norm"; }

// Step 1. Every request of every task, rendered in evaluation order (each task has its own
// few-shot RNG). A doc's requests are a contiguous range of one of the two request lists.
struct DocSlot {
  size_t task, doc, first_request, n_requests;  // generation tasks: first_request indexes `generations`
};

struct RenderedRequests {
  std::vector<LoglikelihoodRequest> loglikelihoods;
  std::vector<GenerationRequest> generations;
  std::vector<DocSlot> slots;          // grouped by task, in task order
  std::vector<int64_t> shots_of_task;  // the num_fewshot each task ran with
};

RenderedRequests render_requests(const std::vector<Task>& tasks, const EvalOptions& options) {
  RenderedRequests out;
  for (size_t t = 0; t < tasks.size(); ++t) {
    const Task& task = tasks[t];
    const int64_t shots = options.num_fewshot.value_or(task.config.default_num_fewshot);
    out.shots_of_task.push_back(shots);
    PromptBuilder builder(task, shots, options.fewshot_seed);
    const int64_t n = limited_count(static_cast<int64_t>(task.docs.size()), options.limit);
    MLR_CHECK(n >= 1, "eval: task {} has no documents to score", task.config.name);
    for (int64_t d = 0; d < n; ++d) {
      RenderedDoc rendered = builder.render(task.docs[static_cast<size_t>(d)]);
      if (rendered.generation) {
        out.slots.push_back({t, static_cast<size_t>(d), out.generations.size(), 1});
        out.generations.push_back(std::move(*rendered.generation));
        continue;
      }
      out.slots.push_back({t, static_cast<size_t>(d), out.loglikelihoods.size(), rendered.requests.size()});
      for (auto& r : rendered.requests) out.loglikelihoods.push_back(std::move(r));
    }
  }
  return out;
}

// Step 2. All requests go to the scorer in one call per kind, so it can batch and sort them.
struct ModelAnswers {
  std::vector<LoglikelihoodResult> loglikelihoods;
  std::vector<std::string> responses;
};

ModelAnswers run_requests(LanguageModelScorer& scorer, const RenderedRequests& rendered) {
  ModelAnswers out;
  if (!rendered.loglikelihoods.empty()) out.loglikelihoods = scorer.loglikelihood(rendered.loglikelihoods);
  MLR_CHECK(out.loglikelihoods.size() == rendered.loglikelihoods.size(),
            "eval: scorer {} returned {} results for {} requests", scorer.name(), out.loglikelihoods.size(),
            rendered.loglikelihoods.size());
  if (!rendered.generations.empty()) out.responses = scorer.generate_until(rendered.generations);
  MLR_CHECK(out.responses.size() == rendered.generations.size(),
            "eval: scorer {} returned {} generations for {} requests", scorer.name(), out.responses.size(),
            rendered.generations.size());
  return out;
}

// Step 3. Per-doc values and their aggregation, one task at a time.
TaskResult empty_task_result(const Task& task, int64_t shots) {
  TaskResult tr;
  tr.name = task.config.name;
  tr.alias = task.config.alias.empty() ? task.config.name : task.config.alias;
  tr.version = task.config.version;
  tr.num_fewshot = shots;
  tr.n_original = static_cast<int64_t>(task.docs.size());
  return tr;
}

// acc and acc_norm: the mean of the per-doc values; other metrics: the task's own aggregation.
std::vector<MetricValue> aggregate_choice_metrics(const TaskConfig& config, const std::vector<ScoredDoc>& docs,
                                                  const std::vector<std::vector<std::pair<std::string, double>>>& per_doc) {
  std::vector<MetricValue> out;
  for (const Metric& metric : config.metrics) {
    MetricValue m;
    m.name = metric.name;
    if (metric.aggregate) {
      m.value = metric.aggregate(docs);  // custom aggregation: the harness reports stderr "N/A"
    } else {
      MLR_CHECK(is_per_doc_metric(metric.name), "eval: {}: metric \"{}\" has no aggregation (only acc and acc_norm "
                "are computed per doc)", config.name, metric.name);
      std::vector<double> values;
      for (const auto& d : per_doc) {
        for (const auto& [name, v] : d) {
          if (name == metric.name) values.push_back(v);
        }
      }
      m.value = mean(values);
      m.standard_error = mean_stderr(values);
    }
    out.push_back(m);
  }
  return out;
}

TaskResult score_choice_task(const Task& task, std::span<const DocSlot> slots, const RenderedRequests& rendered,
                             const ModelAnswers& answers, TaskResult tr, const EvalOptions& options) {
  std::vector<std::vector<LoglikelihoodResult>> results;
  std::vector<std::vector<std::pair<std::string, double>>> per_doc;
  results.reserve(slots.size());
  for (const DocSlot& s : slots) {
    const Doc& doc = task.docs[s.doc];
    const auto first = static_cast<std::ptrdiff_t>(s.first_request), last = first + static_cast<std::ptrdiff_t>(s.n_requests);
    results.emplace_back(answers.loglikelihoods.begin() + first, answers.loglikelihoods.begin() + last);
    per_doc.push_back(doc_metrics(task.config, doc, results.back()));
    if (options.log_samples) {
      SampleRecord rec;
      rec.doc_id = static_cast<int64_t>(s.doc);
      rec.doc = doc;
      rec.requests.assign(rendered.loglikelihoods.begin() + first, rendered.loglikelihoods.begin() + last);
      rec.results = results.back();
      rec.metrics = per_doc.back();
      tr.samples.push_back(std::move(rec));
    }
  }
  std::vector<ScoredDoc> scored;
  for (size_t i = 0; i < slots.size(); ++i) scored.push_back({&task.docs[slots[i].doc], &results[i]});
  tr.n_effective = static_cast<int64_t>(slots.size());
  tr.metrics = aggregate_choice_metrics(task.config, scored, per_doc);
  return tr;
}

// Each response through each of the task's filters; each filtered answer scored by each metric.
// Results are reported per (metric, filter), filter by filter as the harness lists them.
TaskResult score_generation_task(const Task& task, std::span<const DocSlot> slots, const RenderedRequests& rendered,
                                 const ModelAnswers& answers, TaskResult tr, const EvalOptions& options) {
  const TaskConfig& c = task.config;
  MLR_CHECK(!c.filters.empty(), "eval: {}: a generation task needs at least one answer filter", c.name);
  for (const Metric& metric : c.metrics) {
    MLR_CHECK(static_cast<bool>(metric.score_answer), "eval: {}: metric \"{}\" cannot score a generated answer",
              c.name, metric.name);
  }
  // values[filter][metric][doc]
  std::vector<std::vector<std::vector<double>>> values(c.filters.size(), std::vector<std::vector<double>>(c.metrics.size()));
  for (const DocSlot& s : slots) {
    const Doc& doc = task.docs[s.doc];
    const std::string& response = answers.responses[s.first_request];
    SampleRecord rec;
    for (size_t f = 0; f < c.filters.size(); ++f) {
      SampleRecord::Filtered filtered{c.filters[f].name, c.filters[f].extract(response), {}};
      for (size_t m = 0; m < c.metrics.size(); ++m) {
        const double value = c.metrics[m].score_answer(filtered.answer, doc);
        values[f][m].push_back(value);
        filtered.metrics.emplace_back(c.metrics[m].name, value);
      }
      rec.filtered.push_back(std::move(filtered));
    }
    if (options.log_samples) {
      rec.doc_id = static_cast<int64_t>(s.doc);
      rec.doc = doc;
      rec.generation = rendered.generations[s.first_request];
      rec.response = response;
      tr.samples.push_back(std::move(rec));
    }
  }
  tr.n_effective = static_cast<int64_t>(slots.size());
  for (size_t f = 0; f < c.filters.size(); ++f) {
    for (size_t m = 0; m < c.metrics.size(); ++m) {
      tr.metrics.push_back({c.metrics[m].name, c.filters[f].name, mean(values[f][m]), mean_stderr(values[f][m]), true});
    }
  }
  return tr;
}

// Step 4. A group over its leaf tasks (found recursively through subgroups): acc weighted by size
// with the pooled stderr, and our acc_macro.
GroupResult aggregate_group(const TaskGroup& g, const std::vector<const TaskResult*>& leaves) {
  MLR_CHECK(!leaves.empty(), "eval: group {} has no tasks", g.name);
  GroupResult gr;
  gr.name = g.name;
  gr.alias = g.alias;
  gr.version = g.version;
  gr.children = g.children;
  std::vector<int64_t> sizes;
  for (const auto* leaf : leaves) {
    sizes.push_back(leaf->n_effective);
    gr.sample_count += leaf->n_effective;
  }
  gr.num_fewshot = leaves.front()->num_fewshot;
  for (const auto* leaf : leaves) {
    if (leaf->num_fewshot != *gr.num_fewshot) gr.num_fewshot.reset();
  }
  std::vector<double> values;
  std::vector<std::optional<double>> stderrs;
  for (const auto* leaf : leaves) {
    const MetricValue* m = find_metric(leaf->metrics, "acc");
    MLR_CHECK(m != nullptr, "eval: group {}: task {} has no acc", g.name, leaf->name);
    values.push_back(m->value);
    stderrs.push_back(m->standard_error);
  }
  MetricValue acc{"acc", "none", aggregate_subtask_metrics(values, sizes, g.weight_by_size), std::nullopt, true};
  acc.standard_error = pooled_sample_stderr(stderrs, sizes);
  gr.metrics.push_back(acc);
  MetricValue macro{"acc_macro", "none", mean(values), std::nullopt, true};
  double sum_squares = 0.0;
  bool all_stderr = true;
  for (const auto& se : stderrs) {
    if (!se) all_stderr = false;
    else sum_squares += *se * *se;
  }
  if (all_stderr) macro.standard_error = std::sqrt(sum_squares) / static_cast<double>(stderrs.size());
  gr.metrics.push_back(macro);
  return gr;
}

std::vector<GroupResult> aggregate_groups(const std::vector<TaskGroup>& groups, const std::vector<TaskResult>& tasks) {
  std::map<std::string, const TaskGroup*> group_by_name;
  for (const auto& g : groups) group_by_name[g.name] = &g;
  std::map<std::string, const TaskResult*> task_by_name;
  for (const auto& tr : tasks) task_by_name[tr.name] = &tr;
  std::function<void(const std::string&, std::vector<const TaskResult*>&)> collect = [&](const std::string& name,
                                                                                        std::vector<const TaskResult*>& leaves) {
    if (auto it = task_by_name.find(name); it != task_by_name.end()) {
      leaves.push_back(it->second);
      return;
    }
    auto g = group_by_name.find(name);
    MLR_CHECK(g != group_by_name.end(), "eval: group member \"{}\" is neither a task nor a group", name);
    for (const auto& child : g->second->children) collect(child, leaves);
  };
  std::vector<GroupResult> out;
  for (const auto& g : groups) {
    std::vector<const TaskResult*> leaves;
    collect(g.name, leaves);
    out.push_back(aggregate_group(g, leaves));
  }
  return out;
}

}  // namespace

std::vector<std::pair<std::string, double>> doc_metrics(const TaskConfig& config, const Doc& doc,
                                                        const std::vector<LoglikelihoodResult>& results) {
  MLR_CHECK(results.size() == doc.choices.size(), "eval: {}: {} results for {} choices", config.name, results.size(),
            doc.choices.size());
  std::vector<LoglikelihoodResult> normalized = results;
  for (size_t i = 0; i < results.size(); ++i) {
    normalized[i].logprob = results[i].logprob / static_cast<double>(data::utf8_length(doc.choices[i]));
  }
  std::vector<std::pair<std::string, double>> out;
  for (const Metric& metric : config.metrics) {
    if (metric.aggregate) continue;
    if (metric.name == "acc") out.emplace_back("acc", predicted_choice(results) == doc.gold ? 1.0 : 0.0);
    if (metric.name == "acc_norm") out.emplace_back("acc_norm", predicted_choice(normalized) == doc.gold ? 1.0 : 0.0);
  }
  return out;
}

EvalResults evaluate(const std::vector<Task>& tasks, const std::vector<TaskGroup>& groups, LanguageModelScorer& scorer,
                     const EvalOptions& options) {
  EvalResults out;
  out.model_name = scorer.name();
  out.options = options;
  const RenderedRequests rendered = render_requests(tasks, options);
  const ModelAnswers answers = run_requests(scorer, rendered);
  const std::span<const DocSlot> all_slots(rendered.slots);
  size_t first = 0;
  for (size_t t = 0; t < tasks.size(); ++t) {
    size_t last = first;
    while (last < all_slots.size() && all_slots[last].task == t) ++last;
    const std::span<const DocSlot> slots = all_slots.subspan(first, last - first);
    TaskResult tr = empty_task_result(tasks[t], rendered.shots_of_task[t]);
    out.tasks.push_back(tasks[t].config.output_type == OutputType::generate_until
                            ? score_generation_task(tasks[t], slots, rendered, answers, std::move(tr), options)
                            : score_choice_task(tasks[t], slots, rendered, answers, std::move(tr), options));
    out.configs.push_back(tasks[t].config);
    first = last;
  }
  out.groups = aggregate_groups(groups, out.tasks);
  return out;
}

namespace {

json stderr_json(const std::optional<double>& se) { return se ? json(*se) : json("N/A"); }

json config_json(const TaskConfig& c, int64_t num_fewshot) {
  json j;
  j["task"] = c.name;
  if (!c.alias.empty()) j["task_alias"] = c.alias;
  if (!c.tag.empty()) j["tag"] = c.tag;
  j["dataset_path"] = c.dataset_path;
  j["dataset_name"] = c.dataset_name;
  if (!c.training_split.empty()) j["training_split"] = c.training_split;
  if (!c.validation_split.empty()) j["validation_split"] = c.validation_split;
  if (!c.test_split.empty()) j["test_split"] = c.test_split;
  if (!c.fewshot_split.empty()) j["fewshot_split"] = c.fewshot_split;
  j["doc_to_text"] = c.doc_to_text;
  j["doc_to_target"] = c.doc_to_target;
  j["doc_to_choice"] = c.doc_to_choice;
  j["description"] = c.description;
  j["target_delimiter"] = c.target_delimiter;
  j["fewshot_delimiter"] = c.fewshot_delimiter;
  if (c.sampler == Sampler::first_n) j["fewshot_config"] = {{"sampler", "first_n"}};
  j["num_fewshot"] = num_fewshot;
  json metric_list = json::array();
  for (const Metric& m : c.metrics) {
    json entry{{"metric", m.name}, {"higher_is_better", true}, {"aggregation", m.aggregation}};
    entry.update(m.options);
    metric_list.push_back(entry);
  }
  j["metric_list"] = metric_list;
  if (c.output_type == OutputType::generate_until) {
    j["output_type"] = "generate_until";
    j["generation_kwargs"] = {{"until", c.until}, {"do_sample", false}, {"temperature", 0.0}};
    json filters = json::array();
    for (const AnswerFilter& f : c.filters) filters.push_back({{"name", f.name}});
    j["filter_list"] = filters;
  } else {
    j["output_type"] = "multiple_choice";
  }
  j["repeats"] = 1;
  j["should_decontaminate"] = false;
  j["metadata"] = {{"version", c.version}};
  return j;
}

std::string iso_date() {
  const std::time_t now = std::time(nullptr);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return buffer;
}

}  // namespace

json results_json(const EvalResults& r) {
  json j;
  json results = json::object(), groups = json::object(), group_subtasks = json::object(), configs = json::object(),
       versions = json::object(), n_shot = json::object(), higher = json::object(), n_samples = json::object();
  for (size_t t = 0; t < r.tasks.size(); ++t) {
    const TaskResult& tr = r.tasks[t];
    json entry{{"name", tr.name}, {"alias", tr.alias}, {"sample_len", tr.n_effective}};
    json hib = json::object();
    for (const auto& m : tr.metrics) {
      entry[m.name + "," + m.filter] = m.value;
      entry[m.name + "_stderr," + m.filter] = stderr_json(m.standard_error);
      hib[m.name] = m.higher_is_better;
    }
    results[tr.name] = entry;
    configs[tr.name] = config_json(r.configs[t], tr.num_fewshot);
    versions[tr.name] = tr.version;
    n_shot[tr.name] = tr.num_fewshot;
    higher[tr.name] = hib;
    n_samples[tr.name] = {{"original", tr.n_original}, {"effective", tr.n_effective}};
  }
  for (const auto& g : r.groups) {
    json entry{{"name", g.name}, {"alias", g.alias}, {"sample_len", g.sample_count}};
    json hib = json::object();
    for (const auto& m : g.metrics) {
      entry[m.name + ",none"] = m.value;
      entry[m.name + "_stderr,none"] = stderr_json(m.standard_error);
      hib[m.name] = m.higher_is_better;
    }
    entry["sample_count"] = {{"acc,none", g.sample_count}};
    results[g.name] = entry;
    groups[g.name] = entry;
    group_subtasks[g.name] = g.children;
    versions[g.name] = g.version;
    if (g.num_fewshot) n_shot[g.name] = *g.num_fewshot;
    higher[g.name] = hib;
  }
  j["results"] = results;
  if (!r.groups.empty()) j["groups"] = groups;
  j["group_subtasks"] = group_subtasks;
  j["configs"] = configs;
  j["versions"] = versions;
  j["n-shot"] = n_shot;
  j["higher_is_better"] = higher;
  j["n-samples"] = n_samples;
  json config{{"model", r.model_name}, {"bootstrap_iters", 100000}, {"fewshot_seed", r.options.fewshot_seed}};
  config["limit"] = r.options.limit ? json(*r.options.limit) : json(nullptr);
  config["num_fewshot"] = r.options.num_fewshot ? json(*r.options.num_fewshot) : json(nullptr);
  j["config"] = config;
  j["date"] = iso_date();
  return j;
}

std::string results_table(const EvalResults& r) {
  struct Row {
    std::string task, version, filter, shots, metric, arrow, value, pm, se;
  };
  std::vector<Row> rows;
  auto add_rows = [&](const std::string& label, const std::string& version, const std::optional<int64_t>& shots,
                      const std::vector<MetricValue>& metrics) {
    bool first = true;
    for (const auto& m : metrics) {
      rows.push_back({first ? label : "", first ? version : "", m.filter,
                      first && shots ? std::to_string(*shots) : "", m.name, m.higher_is_better ? "↑" : "↓",
                      format_number(m.value), "±", m.standard_error ? format_number(*m.standard_error) : "N/A"});
      first = false;
    }
  };
  auto version_text = [](double v) { return v == std::floor(v) ? fmt::format("{}", static_cast<int64_t>(v)) : fmt::format("{}", v); };
  std::set<std::string> in_group;
  for (const auto& g : r.groups) in_group.insert(g.children.begin(), g.children.end());
  for (const auto& tr : r.tasks) {
    add_rows(in_group.count(tr.name) ? " - " + tr.alias : tr.alias, version_text(tr.version), tr.num_fewshot, tr.metrics);
  }
  std::vector<Row> group_rows;
  std::swap(rows, group_rows);
  for (const auto& g : r.groups) add_rows(g.alias, g.version, g.num_fewshot, g.metrics);
  std::swap(rows, group_rows);
  auto width = [](const std::string& s) { return data::utf8_length(s); };
  auto table = [&](const std::vector<Row>& body, const std::string& first_header) {
    const std::vector<std::string> headers{first_header, "Version", "Filter", "n-shot", "Metric", "", "Value", "", "Stderr"};
    std::vector<size_t> w(headers.size());
    for (size_t c = 0; c < headers.size(); ++c) w[c] = std::max<size_t>(width(headers[c]), 1);
    auto cells = [](const Row& row) {
      return std::vector<std::string>{row.task, row.version, row.filter, row.shots, row.metric, row.arrow, row.value, row.pm, row.se};
    };
    for (const auto& row : body) {
      const auto cs = cells(row);
      for (size_t c = 0; c < cs.size(); ++c) w[c] = std::max(w[c], width(cs[c]));
    }
    const std::vector<bool> right{false, true, false, true, false, false, true, false, true};
    auto line = [&](const std::vector<std::string>& cs) {
      std::string s = "|";
      for (size_t c = 0; c < cs.size(); ++c) {
        const std::string pad(w[c] - width(cs[c]), ' ');
        s += right[c] ? pad + cs[c] : cs[c] + pad;
        s += "|";
      }
      return s + "\n";
    };
    std::string out = line(headers);
    std::string rule = "|";
    for (size_t c = 0; c < headers.size(); ++c) rule += std::string(w[c] - (right[c] ? 1 : 0), '-') + (right[c] ? ":|" : "|");
    out += rule + "\n";
    for (const auto& row : body) out += line(cells(row));
    return out;
  };
  std::string out = table(rows, "Tasks");
  if (!group_rows.empty()) {
    out += '\n';
    out += table(group_rows, "Groups");
  }
  return out;
}

void write_samples_jsonl(const TaskResult& task, std::ostream& out) {
  for (const auto& s : task.samples) {
    json doc = json::object();
    for (const auto& [k, v] : s.doc.fields) doc[k] = v;
    if (s.generation) {  // one line per filter, as the harness logs them
      json arguments{{"gen_args_0",
                      {{"arg_0", s.generation->context},
                       {"arg_1", {{"until", s.generation->until}, {"do_sample", false}, {"temperature", 0.0}}}}}};
      for (const auto& f : s.filtered) {
        json line{{"doc_id", s.doc_id}, {"doc", doc}, {"target", s.doc.target}, {"arguments", arguments},
                  {"resps", json::array({json::array({s.response})})}, {"filtered_resps", json::array({f.answer})},
                  {"filter", f.filter}};
        json metric_names = json::array();
        for (const auto& [name, value] : f.metrics) {
          metric_names.push_back(name);
          line[name] = value;
        }
        line["metrics"] = metric_names;
        out << line.dump() << "\n";
      }
      continue;
    }
    json arguments = json::object();
    json resps = json::array(), filtered = json::array();
    for (size_t i = 0; i < s.requests.size(); ++i) {
      arguments["gen_args_" + std::to_string(i)] = {{"arg_0", s.requests[i].context}, {"arg_1", s.requests[i].continuation}};
      json pair = json::array({s.results[i].logprob, s.results[i].is_greedy});
      resps.push_back(json::array({pair}));
      filtered.push_back(pair);
    }
    json line{{"doc_id", s.doc_id}, {"doc", doc}, {"target", s.doc.gold}, {"arguments", arguments},
              {"resps", resps}, {"filtered_resps", filtered}, {"filter", "none"}};
    json metric_names = json::array();
    for (const auto& [name, value] : s.metrics) {
      metric_names.push_back(name);
      line[name] = value;
    }
    line["metrics"] = metric_names;
    out << line.dump() << "\n";
  }
}

}  // namespace mlr::eval
