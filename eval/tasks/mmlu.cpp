// MMLU (see mmlu.h). Files in the hendrycks release layout, read by data/'s MMLU reader.
#include "eval/tasks/mmlu.h"

#include <algorithm>
#include <set>

#include "data/text.h"
#include "eval/task_docs.h"
#include "tensor/error.h"

namespace mlr::eval {

namespace fs = std::filesystem;

const std::vector<std::pair<std::string, std::string>>& mmlu_subjects() {
  static const std::vector<std::pair<std::string, std::string>> subjects{
      {"abstract_algebra", "stem"}, {"anatomy", "stem"}, {"astronomy", "stem"}, {"business_ethics", "other"},
      {"clinical_knowledge", "other"}, {"college_biology", "stem"}, {"college_chemistry", "stem"},
      {"college_computer_science", "stem"}, {"college_mathematics", "stem"}, {"college_medicine", "other"},
      {"college_physics", "stem"}, {"computer_security", "stem"}, {"conceptual_physics", "stem"},
      {"econometrics", "social_sciences"}, {"electrical_engineering", "stem"}, {"elementary_mathematics", "stem"},
      {"formal_logic", "humanities"}, {"global_facts", "other"}, {"high_school_biology", "stem"},
      {"high_school_chemistry", "stem"}, {"high_school_computer_science", "stem"},
      {"high_school_european_history", "humanities"}, {"high_school_geography", "social_sciences"},
      {"high_school_government_and_politics", "social_sciences"}, {"high_school_macroeconomics", "social_sciences"},
      {"high_school_mathematics", "stem"}, {"high_school_microeconomics", "social_sciences"},
      {"high_school_physics", "stem"}, {"high_school_psychology", "social_sciences"},
      {"high_school_statistics", "stem"}, {"high_school_us_history", "humanities"},
      {"high_school_world_history", "humanities"}, {"human_aging", "other"}, {"human_sexuality", "social_sciences"},
      {"international_law", "humanities"}, {"jurisprudence", "humanities"}, {"logical_fallacies", "humanities"},
      {"machine_learning", "stem"}, {"management", "other"}, {"marketing", "other"}, {"medical_genetics", "other"},
      {"miscellaneous", "other"}, {"moral_disputes", "humanities"}, {"moral_scenarios", "humanities"},
      {"nutrition", "other"}, {"philosophy", "humanities"}, {"prehistory", "humanities"},
      {"professional_accounting", "other"}, {"professional_law", "humanities"}, {"professional_medicine", "other"},
      {"professional_psychology", "social_sciences"}, {"public_relations", "social_sciences"},
      {"security_studies", "social_sciences"}, {"sociology", "social_sciences"},
      {"us_foreign_policy", "social_sciences"}, {"virology", "other"}, {"world_religions", "humanities"}};
  return subjects;
}

namespace {

TaskConfig subject_config(const std::string& subject, const std::string& category, std::string_view split) {
  TaskConfig c;
  c.name = "mmlu_" + subject;
  c.alias = subject;
  c.tag = "mmlu_" + category + "_tasks";
  c.version = 1.0;
  c.dataset_path = "cais/mmlu";
  c.dataset_name = subject;
  c.test_split = std::string(split);
  c.fewshot_split = "dev";
  c.sampler = Sampler::first_n;
  c.doc_to_text =
      "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:";
  c.doc_to_choice = "[\"A\", \"B\", \"C\", \"D\"]";
  c.doc_to_target = "answer";
  c.description = "The following are multiple choice questions (with answers) about " +
                  data::replace_all(subject, "_", " ") + ".\n\n";
  return c;
}

// The harness's doc: question, subject, the four options as `choices`, `answer` as their index.
DocValues mmlu_values(data::Record&& r) {
  DocValues v;
  Value::List choices(4);
  for (auto& [name, text] : r.fields) {
    if (name.size() == 1 && name[0] >= 'A' && name[0] <= 'D') choices[static_cast<size_t>(name[0] - 'A')] = std::move(text);
    else if (name == "question" || name == "subject") v.emplace(name, std::move(text));
  }
  v.emplace("choices", std::move(choices));
  v.emplace("answer", r.label);
  return v;
}

}  // namespace

Task load_mmlu_csv(const std::string& subject, const fs::path& eval_file, const fs::path& dev_file,
                   std::string_view split, const std::string& category) {
  Task t;
  t.config = subject_config(subject, category, split);
  const DocRenderer renderer(t.config);
  auto make_doc = [&](data::Record&& r) {
    auto fields = r.fields;
    return renderer.render(mmlu_values(std::move(r)), std::move(fields));
  };
  t.docs = read_record_docs(data::Format::mmlu, eval_file, make_doc);
  t.fewshot_docs = read_record_docs(data::Format::mmlu, dev_file, make_doc);
  return t;
}

std::vector<Task> load_mmlu(const fs::path& root, std::string_view split, const std::vector<std::string>& subjects) {
  std::set<std::string> wanted(subjects.begin(), subjects.end());
  for (const auto& s : wanted) {
    const auto& all = mmlu_subjects();
    MLR_CHECK(std::any_of(all.begin(), all.end(), [&](const auto& p) { return p.first == s; }),
              "eval: \"{}\" is not one of the 57 MMLU subjects", s);
  }
  std::vector<Task> tasks;
  for (const auto& [subject, category] : mmlu_subjects()) {
    if (!wanted.empty() && !wanted.count(subject)) continue;
    const fs::path eval_file = root / std::string(split) / (subject + "_" + std::string(split) + ".csv");
    const fs::path dev_file = root / "dev" / (subject + "_dev.csv");
    MLR_CHECK(fs::exists(eval_file), "eval: MMLU file {} not found (expected <root>/<split>/<subject>_<split>.csv)",
              eval_file.string());
    MLR_CHECK(fs::exists(dev_file), "eval: MMLU few-shot file {} not found", dev_file.string());
    tasks.push_back(load_mmlu_csv(subject, eval_file, dev_file, split, category));
  }
  return tasks;
}

namespace {

std::vector<TaskGroup> groups_of(const std::vector<TaskConfig>& tasks) {
  static const std::vector<std::pair<std::string, std::string>> categories{
      {"stem", "stem"}, {"other", "other"}, {"social_sciences", "social sciences"}, {"humanities", "humanities"}};
  std::vector<TaskGroup> groups;
  TaskGroup top{"mmlu", "mmlu", {}, true, "2"};
  for (const auto& [category, alias] : categories) {
    TaskGroup g{"mmlu_" + category, alias, {}, true, "2"};
    for (const auto& t : tasks) {
      if (t.tag == "mmlu_" + category + "_tasks") g.children.push_back(t.name);
    }
    if (g.children.empty()) continue;
    top.children.push_back(g.name);
    groups.push_back(std::move(g));
  }
  if (!top.children.empty()) groups.push_back(std::move(top));
  return groups;
}

}  // namespace

std::vector<TaskGroup> mmlu_groups(const std::vector<Task>& tasks) {
  std::vector<TaskConfig> configs;
  for (const Task& t : tasks) configs.push_back(t.config);
  return groups_of(configs);
}

namespace {

TaskDefinition mmlu() {
  TaskDefinition d;
  d.name = "mmlu";
  for (const auto& [subject, category] : mmlu_subjects()) d.member_names.push_back("mmlu_" + subject);
  d.member_prefix = "mmlu_";
  d.usage = "mmlu, mmlu_<subject>";
  d.default_path = "mmlu";
  d.load = [](std::string_view name, const TaskFiles& files) {
    MLR_CHECK(fs::is_directory(files.scored),
              "eval: MMLU directory {} not found (give the data directory or a file for mmlu)", files.scored.string());
    std::vector<std::string> subjects;
    if (name != "mmlu") subjects.emplace_back(name.substr(5));
    return load_mmlu(files.scored, "test", subjects);
  };
  d.groups = groups_of;
  return d;
}

const TaskRegistration registration{mmlu()};

}  // namespace
}  // namespace mlr::eval
