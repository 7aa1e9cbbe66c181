#include "eval/task.h"

#include <algorithm>

#include "tensor/error.h"

namespace mlr::eval {

const std::string* Doc::field(std::string_view name) const {
  for (const auto& [key, value] : fields) {
    if (key == name) return &value;
  }
  return nullptr;
}

int predicted_choice(const std::vector<LoglikelihoodResult>& results) {
  const auto best = std::max_element(results.begin(), results.end(),
                                     [](const auto& a, const auto& b) { return a.logprob < b.logprob; });
  return static_cast<int>(best - results.begin());
}

PromptBuilder::PromptBuilder(const Task& task, int64_t num_fewshot, uint64_t fewshot_seed)
    : task_(task), num_fewshot_(num_fewshot), rnd_(fewshot_seed) {
  MLR_CHECK(num_fewshot >= 0, "eval: {}: num_fewshot {} is negative", task.config.name, num_fewshot);
  MLR_CHECK(num_fewshot == 0 || !task.fewshot_docs.empty(),
            "eval: {}: {}-shot needs a few-shot pool (the {} split), and none was given", task.config.name,
            num_fewshot, task.config.fewshot_split.empty() ? task.config.training_split : task.config.fewshot_split);
  MLR_CHECK(task.config.sampler != Sampler::first_n || num_fewshot <= static_cast<int64_t>(task.fewshot_docs.size()),
            "eval: {}: {}-shot exceeds the {} docs of the few-shot pool", task.config.name, num_fewshot,
            task.fewshot_docs.size());
}

std::string shot_answer(const Doc& shot) {
  if (!shot.target.empty()) return shot.target;
  MLR_CHECK(shot.gold >= 0 && shot.gold < static_cast<int>(shot.choices.size()),
            "eval: a few-shot doc has gold index {} outside its {} choices", shot.gold, shot.choices.size());
  return shot.choices[static_cast<size_t>(shot.gold)];
}

std::vector<size_t> PromptBuilder::draw_shots(const Doc& doc) {
  const auto n = static_cast<size_t>(num_fewshot_);
  std::vector<size_t> shots;
  if (n == 0) return shots;  // the harness draws nothing for 0-shot
  const size_t pool = task_.fewshot_docs.size();
  if (task_.config.sampler == Sampler::first_n) {
    for (size_t i = 0; i < n; ++i) shots.push_back(i);
    return shots;
  }
  const bool extra = task_.config.draws_extra_shot();
  MLR_CHECK(n + (extra ? 1 : 0) <= pool, "eval: {}: drawing {} shots from a pool of {} docs", task_.config.name,
            n + (extra ? 1 : 0), pool);
  for (int64_t i : rnd_.sample(static_cast<int64_t>(pool), static_cast<int64_t>(n + (extra ? 1 : 0)))) {
    const auto index = static_cast<size_t>(i);
    if (extra && task_.fewshot_docs[index].same_row(doc)) continue;
    if (shots.size() < n) shots.push_back(index);
  }
  if (shots.size() < n) {
    // More than one copy of the eval doc was drawn: sample again from the pool without its copies.
    std::vector<size_t> others;
    for (size_t i = 0; i < pool; ++i) {
      if (!task_.fewshot_docs[i].same_row(doc)) others.push_back(i);
    }
    MLR_CHECK(others.size() >= n, "eval: {}: only {} few-shot docs differ from the eval doc, {} needed",
              task_.config.name, others.size(), n);
    shots.clear();
    for (int64_t i : rnd_.sample(static_cast<int64_t>(others.size()), static_cast<int64_t>(n))) {
      shots.push_back(others[static_cast<size_t>(i)]);
    }
  }
  return shots;
}

RenderedDoc PromptBuilder::render(const Doc& doc) {
  const TaskConfig& c = task_.config;
  RenderedDoc out;
  out.shot_indices = draw_shots(doc);
  std::string prefix = c.description;
  for (size_t index : out.shot_indices) {
    const Doc& shot = task_.fewshot_docs[index];
    if (c.multiple_input) {
      MLR_CHECK(shot.gold >= 0 && shot.gold < static_cast<int>(shot.choices.size()),
                "eval: {}: few-shot doc {} has gold {} outside its {} contexts", c.name, index, shot.gold,
                shot.choices.size());
      prefix += shot.choices[static_cast<size_t>(shot.gold)];
    } else {
      prefix += shot.text;
    }
    prefix += c.target_delimiter;
    prefix += shot_answer(shot);
    prefix += c.fewshot_delimiter;
  }
  if (c.output_type == OutputType::generate_until) {
    out.context = prefix + doc.text;
    out.generation = GenerationRequest{out.context, c.until, c.max_gen_toks};
    return out;
  }
  MLR_CHECK(!doc.choices.empty(), "eval: {}: a doc has no choices", c.name);
  if (c.multiple_input) {
    for (const auto& choice_context : doc.choices) {
      out.requests.push_back({prefix + choice_context, c.target_delimiter + doc.target});
    }
    const size_t shown = doc.gold >= 0 && doc.gold < static_cast<int>(doc.choices.size()) ? static_cast<size_t>(doc.gold) : 0;
    out.context = out.requests[shown].context;
  } else {
    out.context = prefix + doc.text;
    for (const auto& choice : doc.choices) out.requests.push_back({out.context, c.target_delimiter + choice});
  }
  return out;
}

}  // namespace mlr::eval
