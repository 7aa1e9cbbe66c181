#include "eval/tasks.h"

#include <algorithm>
#include <map>
#include <set>

#include "data/text.h"
#include "tensor/error.h"

namespace mlr::eval {

namespace fs = std::filesystem;

namespace {

const std::string& field(const data::Record& r, std::string_view name) {
  const std::string* value = r.field(name);
  MLR_CHECK(value != nullptr, "eval: record of line {} has no field \"{}\"", r.line, name);
  return *value;
}

// An int gold, or -100 when it does not index the choices (the harness then scores 0).
int gold_index(int label, size_t n_choices) {
  return label >= 0 && static_cast<size_t>(label) < n_choices ? label : -100;
}

TaskConfig superglue_config(std::string_view name) {
  TaskConfig c;
  c.name = std::string(name);
  c.tag = "super-glue-lm-eval-v1";
  c.dataset_path = "aps/super_glue";
  c.dataset_name = std::string(name == "sglue_rte" ? "rte" : name == "wsc" ? "wsc.fixed" : name);
  c.training_split = "train";
  c.validation_split = "validation";
  c.doc_to_target = "label";
  if (name == "boolq") {
    c.version = 2.0;
    c.doc_to_text = "{{passage}}\nQuestion: {{question}}?\nAnswer:";
    c.doc_to_choice = "[\"no\", \"yes\"]";
  } else if (name == "cb") {
    c.version = 1.0;
    c.doc_to_text = "{{premise}}\nQuestion: {{hypothesis}}. True, False, or Neither?\nAnswer:";
    c.doc_to_choice = "['True', 'False', 'Neither']";
    c.metrics = {"acc", "f1"};
  } else if (name == "copa") {
    c.version = 1.0;
    c.doc_to_text = "!function utils.doc_to_text";
    c.doc_to_choice = "!function utils.doc_to_choice";
    c.doc_to_target = "!function utils.doc_to_target";
  } else if (name == "multirc") {
    c.version = 2.0;
    c.doc_to_text = "{{paragraph}}\nQuestion: {{question}}\nAnswer:";
    c.doc_to_choice = "['''{{answer}}\\nIs the answer correct? yes''', '''{{answer}}\\nIs the answer correct? no''']";
    c.metrics = {"acc", "f1a", "em"};
  } else if (name == "sglue_rte") {
    c.version = 0.0;
    c.doc_to_text = "{{premise}}\nQuestion: {{hypothesis}} True or False?\nAnswer:";
    c.doc_to_choice = "['True', 'False']";
  } else if (name == "wic") {
    c.version = 1.0;
    c.doc_to_text =
        "Sentence 1: {{sentence1}}\nSentence 2: {{sentence2}}\nQuestion: Is the word '{{sentence1[start1:end1]}}' used "
        "in the same way in the two sentences above?\nAnswer:";
    c.doc_to_choice = "['no', 'yes']";
  } else if (name == "wsc") {
    c.version = 1.0;
    c.doc_to_text = "!function preprocess_wsc.default_doc_to_text";
    c.doc_to_choice = "['no', 'yes']";
  }
  return c;
}

data::Format superglue_format(std::string_view name) {
  if (name == "sglue_rte") return data::Format::rte;
  return data::parse_format(name);
}

std::vector<Doc> read_docs(std::string_view name, const fs::path& path, bool mmlu) {
  const data::ReadResult read = data::read_records(mmlu ? data::Format::mmlu : superglue_format(name), path);
  std::vector<Doc> docs;
  docs.reserve(read.records.size());
  for (const auto& r : read.records) {
    try {
      docs.push_back(mmlu ? mmlu_doc(r) : superglue_doc(name, r));
    } catch (const Error& e) {
      std::string what = e.what();
      if (what.starts_with("mlr: ")) what.erase(0, 5);
      throw Error(fmt::format("eval: {}:{}: {}", read.files.at(static_cast<size_t>(r.file)), r.line, what));
    }
  }
  return docs;
}

}  // namespace

const std::vector<std::string>& superglue_task_names() {
  static const std::vector<std::string> names{"boolq", "cb", "copa", "multirc", "sglue_rte", "wic", "wsc"};
  return names;
}

Doc superglue_doc(std::string_view name, const data::Record& r) {
  Doc d;
  d.fields = r.fields;
  if (name == "boolq") {
    d.text = field(r, "passage") + "\nQuestion: " + field(r, "question") + "?\nAnswer:";
    d.choices = {"no", "yes"};
  } else if (name == "cb") {
    d.text = field(r, "premise") + "\nQuestion: " + field(r, "hypothesis") + ". True, False, or Neither?\nAnswer:";
    d.choices = {"True", "False", "Neither"};
  } else if (name == "copa") {
    // premise.strip()[:-1] drops the last character, assumed to be the period.
    d.text = data::drop_last(data::strip(field(r, "premise"))) + " " + field(r, "connector");
    d.choices = {" " + data::lower_first(field(r, "choice1")), " " + data::lower_first(field(r, "choice2"))};
    // doc_to_target is the transformed correct choice as a string: gold = choices.index(target).
    MLR_CHECK(r.label == 0 || r.label == 1, "eval: copa label {} is not 0 or 1", r.label);
    const std::string target = d.choices[static_cast<size_t>(r.label)];
    d.gold = static_cast<int>(std::find(d.choices.begin(), d.choices.end(), target) - d.choices.begin());
    return d;
  } else if (name == "multirc") {
    d.text = field(r, "paragraph") + "\nQuestion: " + field(r, "question") + "\nAnswer:";
    const std::string& answer = field(r, "answer");
    d.choices = {answer + "\nIs the answer correct? yes", answer + "\nIs the answer correct? no"};
    d.question_id = field(r, "paragraph") + '\x1f' + field(r, "question");
  } else if (name == "sglue_rte") {
    d.text = field(r, "premise") + "\nQuestion: " + field(r, "hypothesis") + " True or False?\nAnswer:";
    d.choices = {"True", "False"};
  } else if (name == "wic") {
    d.text = "Sentence 1: " + field(r, "sentence1") + "\nSentence 2: " + field(r, "sentence2") +
             "\nQuestion: Is the word '" + field(r, "sentence1_word") +
             "' used in the same way in the two sentences above?\nAnswer:";
    d.choices = {"no", "yes"};
  } else if (name == "wsc") {
    d.text = "Passage: " + field(r, "passage") + "\nQuestion: In the passage above, does the pronoun \"*" +
             field(r, "span2_text") + "*\" refer to \"*" + field(r, "span1_text") + "*\"?\nAnswer:";
    d.choices = {"no", "yes"};
  } else {
    throw Error(fmt::format("eval: unknown SuperGLUE task \"{}\" (known: {})", name,
                            fmt::join(superglue_task_names(), ", ")));
  }
  d.gold = gold_index(r.label, d.choices.size());
  return d;
}

Task load_superglue_task(std::string_view name, const fs::path& eval_file, const std::optional<fs::path>& fewshot_file) {
  if (name == "rte") {
    throw Error("eval: task \"rte\" is GLUE RTE in lm-evaluation-harness; SuperGLUE RTE is \"sglue_rte\"");
  }
  const auto& known = superglue_task_names();
  MLR_CHECK(std::find(known.begin(), known.end(), name) != known.end(), "eval: unknown task \"{}\" (known: {}, mmlu)",
            name, fmt::join(known, ", "));
  Task task;
  task.config = superglue_config(name);
  task.docs = read_docs(name, eval_file, false);
  if (fewshot_file) task.fewshot_docs = read_docs(name, *fewshot_file, false);
  return task;
}

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

Doc mmlu_doc(const data::Record& r) {
  Doc d;
  d.fields = r.fields;
  // Only the question is stripped; the choices are used as they are.
  d.text = std::string(data::strip(field(r, "question"))) + "\nA. " + field(r, "A") + "\nB. " + field(r, "B") +
           "\nC. " + field(r, "C") + "\nD. " + field(r, "D") + "\nAnswer:";
  d.choices = {"A", "B", "C", "D"};
  d.gold = gold_index(r.label, 4);
  return d;
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
    Task t;
    TaskConfig& c = t.config;
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
    const fs::path eval_file = root / std::string(split) / (subject + "_" + std::string(split) + ".csv");
    const fs::path dev_file = root / "dev" / (subject + "_dev.csv");
    MLR_CHECK(fs::exists(eval_file), "eval: MMLU file {} not found (expected <root>/<split>/<subject>_<split>.csv)",
              eval_file.string());
    MLR_CHECK(fs::exists(dev_file), "eval: MMLU few-shot file {} not found", dev_file.string());
    t.docs = read_docs(c.name, eval_file, true);
    t.fewshot_docs = read_docs(c.name, dev_file, true);
    tasks.push_back(std::move(t));
  }
  return tasks;
}

std::vector<TaskGroup> mmlu_groups(const std::vector<Task>& tasks) {
  static const std::vector<std::pair<std::string, std::string>> categories{
      {"stem", "stem"}, {"other", "other"}, {"social_sciences", "social sciences"}, {"humanities", "humanities"}};
  std::vector<TaskGroup> groups;
  TaskGroup top{"mmlu", "mmlu", {}, true, "2"};
  for (const auto& [category, alias] : categories) {
    TaskGroup g{"mmlu_" + category, alias, {}, true, "2"};
    for (const auto& t : tasks) {
      if (t.config.tag == "mmlu_" + category + "_tasks") g.children.push_back(t.config.name);
    }
    if (g.children.empty()) continue;
    top.children.push_back(g.name);
    groups.push_back(std::move(g));
  }
  if (!top.children.empty()) groups.push_back(std::move(top));
  return groups;
}

}  // namespace mlr::eval
