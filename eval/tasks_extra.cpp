// ARC, HellaSwag, PIQA and Winogrande from JSONL (../shared/EVAL_FORMATS.md section 6).
#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/text.h"
#include "eval/tasks.h"
#include "tensor/error.h"

namespace mlr::eval {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct RowError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const json& member(const json& row, const char* key) {
  if (!row.is_object() || !row.contains(key)) throw RowError(fmt::format("missing field \"{}\"", key));
  return row.at(key);
}

std::string text_of(const json& row, const char* key) {
  const json& v = member(row, key);
  if (!v.is_string()) throw RowError(fmt::format("field \"{}\" is {}, expected a string", key, v.type_name()));
  return v.get<std::string>();
}

std::vector<std::string> texts_of(const json& v, const char* key) {
  if (!v.is_array()) throw RowError(fmt::format("field \"{}\" is {}, expected an array", key, v.type_name()));
  std::vector<std::string> out;
  for (const auto& e : v) {
    if (!e.is_string()) throw RowError(fmt::format("field \"{}\" has a {} element, expected strings", key, e.type_name()));
    out.push_back(e.get<std::string>());
  }
  return out;
}

// An int label given as an int or an all-digit string (the harness turns "3" into 3).
int int_label(const json& row, const char* key) {
  const json& v = member(row, key);
  if (v.is_number_integer()) return v.get<int>();
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (!s.empty() && s.size() < 9 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return std::stoi(s);
    }
  }
  throw RowError(fmt::format("field \"{}\" is {}, expected an integer label", key, v.dump()));
}

std::vector<std::pair<std::string, std::string>> flat_fields(const json& row) {
  std::vector<std::pair<std::string, std::string>> fields;
  for (const auto& [k, v] : row.items()) fields.emplace_back(k, v.is_string() ? v.get<std::string>() : v.dump());
  return fields;
}

Doc arc_doc(const json& row) {
  Doc d;
  d.fields = flat_fields(row);
  std::string question;
  std::vector<std::string> labels;
  const json& q = member(row, "question");
  if (q.is_object()) {  // AI2 release layout
    question = text_of(q, "stem");
    const json& choices = member(q, "choices");
    if (!choices.is_array()) throw RowError("field \"question.choices\" is not an array");
    for (const auto& c : choices) {
      d.choices.push_back(text_of(c, "text"));
      labels.push_back(text_of(c, "label"));
    }
  } else {
    question = text_of(row, "question");
    const json& choices = member(row, "choices");
    d.choices = texts_of(member(choices, "text"), "choices.text");
    labels = texts_of(member(choices, "label"), "choices.label");
    if (labels.size() != d.choices.size()) {
      throw RowError(fmt::format("{} choice labels for {} choice texts", labels.size(), d.choices.size()));
    }
  }
  const std::string key = text_of(row, "answerKey");
  const auto it = std::find(labels.begin(), labels.end(), key);
  if (it == labels.end()) throw RowError(fmt::format("answerKey \"{}\" is not among the choice labels", key));
  d.gold = static_cast<int>(it - labels.begin());
  d.text = "Question: " + question + "\nAnswer:";
  return d;
}

Doc hellaswag_doc(const json& row) {
  Doc d;
  d.fields = flat_fields(row);
  const std::string ctx = text_of(row, "ctx_a") + " " + python_capitalize(text_of(row, "ctx_b"));
  d.text = hellaswag_preprocess(text_of(row, "activity_label") + ": " + ctx);
  for (const auto& ending : texts_of(member(row, "endings"), "endings")) d.choices.push_back(hellaswag_preprocess(ending));
  const int label = int_label(row, "label");
  d.gold = label >= 0 && label < static_cast<int>(d.choices.size()) ? label : -100;
  return d;
}

Doc piqa_doc(const json& row) {
  Doc d;
  d.fields = flat_fields(row);
  d.text = "Question: " + text_of(row, "goal") + "\nAnswer:";
  d.choices = {text_of(row, "sol1"), text_of(row, "sol2")};
  const int label = int_label(row, "label");
  d.gold = label == 0 || label == 1 ? label : -100;
  return d;
}

Doc winogrande_doc(const json& row) {
  Doc d;
  d.fields = flat_fields(row);
  const std::string sentence = text_of(row, "sentence");
  const size_t blank = sentence.find('_');
  if (blank == std::string::npos) throw RowError("field \"sentence\" has no \"_\" blank");
  const std::string answer = text_of(row, "answer");
  if (answer != "1" && answer != "2") throw RowError(fmt::format("field \"answer\" is \"{}\", expected \"1\" or \"2\"", answer));
  d.choices = {sentence.substr(0, blank) + text_of(row, "option1"), sentence.substr(0, blank) + text_of(row, "option2")};
  d.target = std::string(data::strip(std::string_view(sentence).substr(blank + 1)));
  d.gold = answer == "1" ? 0 : 1;
  return d;
}

std::vector<Doc> read_jsonl_docs(std::string_view name, const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  MLR_CHECK(in.good(), "eval: {}: cannot open {}", name, path.string());
  std::vector<Doc> docs;
  std::string line;
  int64_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (data::strip(line).empty()) continue;
    try {
      const json row = json::parse(line);
      if (!row.is_object()) throw RowError(fmt::format("a line is {}, expected a JSON object", row.type_name()));
      if (name == "arc_easy" || name == "arc_challenge") docs.push_back(arc_doc(row));
      else if (name == "hellaswag") docs.push_back(hellaswag_doc(row));
      else if (name == "piqa") docs.push_back(piqa_doc(row));
      else docs.push_back(winogrande_doc(row));
    } catch (const json::exception& e) {
      throw Error(fmt::format("eval: {}:{}: {}", path.string(), line_number, e.what()));
    } catch (const RowError& e) {
      throw Error(fmt::format("eval: {}:{}: {}", path.string(), line_number, e.what()));
    }
  }
  MLR_CHECK(!docs.empty(), "eval: {}: {} has no rows", name, path.string());
  return docs;
}

TaskConfig extra_config(std::string_view name) {
  TaskConfig c;
  c.name = std::string(name);
  c.version = 1.0;
  c.training_split = "train";
  c.validation_split = "validation";
  c.metrics = {"acc", "acc_norm"};
  if (name == "arc_easy" || name == "arc_challenge") {
    c.tag = "ai2_arc";
    c.dataset_path = "allenai/ai2_arc";
    c.dataset_name = name == "arc_easy" ? "ARC-Easy" : "ARC-Challenge";
    c.test_split = "test";
    c.doc_to_text = "Question: {{question}}\nAnswer:";
    c.doc_to_target = "{{choices.label.index(answerKey)}}";
    c.doc_to_choice = "{{choices.text}}";
  } else if (name == "hellaswag") {
    c.tag = "multiple_choice";
    c.dataset_path = "Rowan/hellaswag";
    c.doc_to_text = "{{query}}";
    c.doc_to_target = "{{label}}";
    c.doc_to_choice = "choices";
  } else if (name == "piqa") {
    c.dataset_path = "baber/piqa";
    c.doc_to_text = "Question: {{goal}}\nAnswer:";
    c.doc_to_target = "label";
    c.doc_to_choice = "{{[sol1, sol2]}}";
  } else {
    c.dataset_path = "allenai/winogrande";
    c.dataset_name = "winogrande_xl";
    c.doc_to_text = "!function preprocess_winogrande.doc_to_text";
    c.doc_to_target = "!function preprocess_winogrande.doc_to_target";
    c.doc_to_choice = "!function preprocess_winogrande.doc_to_choice";
    c.multiple_input = true;
    c.metrics = {"acc"};
  }
  return c;
}

}  // namespace

std::string python_capitalize(std::string_view text) {
  std::string out(text);
  for (size_t i = 0; i < out.size(); ++i) {
    char& c = out[i];
    if (i == 0 && c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    else if (i > 0 && c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string hellaswag_preprocess(std::string_view text) {
  std::string s = data::replace_all(data::strip(text), " [title]", ". ");
  // re.sub(r"\[.*?\]", "", s): "." does not match a newline, so a "[" whose next "]" comes after a
  // newline (or that has none) is kept and the scan resumes after it.
  std::string removed;
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] == '[') {
      const size_t close = s.find(']', i + 1);
      const size_t newline = s.find('\n', i + 1);
      if (close != std::string::npos && (newline == std::string::npos || newline > close)) {
        i = close + 1;
        continue;
      }
    }
    removed += s[i++];
  }
  return data::replace_all(removed, "  ", " ");
}

const std::vector<std::string>& extra_task_names() {
  static const std::vector<std::string> names{"arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande"};
  return names;
}

Task load_extra_task(std::string_view name, const fs::path& eval_file, const std::optional<fs::path>& fewshot_file) {
  const auto& known = extra_task_names();
  MLR_CHECK(std::find(known.begin(), known.end(), name) != known.end(), "eval: unknown task \"{}\" (known: {})", name,
            fmt::join(known, ", "));
  Task task;
  task.config = extra_config(name);
  task.docs = read_jsonl_docs(name, eval_file);
  if (fewshot_file) task.fewshot_docs = read_jsonl_docs(name, *fewshot_file);
  return task;
}

Task load_task(std::string_view name, const fs::path& eval_file, const std::optional<fs::path>& fewshot_file) {
  const auto& extra = extra_task_names();
  if (std::find(extra.begin(), extra.end(), name) != extra.end()) return load_extra_task(name, eval_file, fewshot_file);
  const auto& sg = superglue_task_names();
  MLR_CHECK(name == "rte" || std::find(sg.begin(), sg.end(), name) != sg.end(),
            "eval: unknown task \"{}\" (known: {}, {}, and mmlu, loaded with load_mmlu)", name, fmt::join(sg, ", "),
            fmt::join(extra, ", "));
  return load_superglue_task(name, eval_file, fewshot_file);
}

}  // namespace mlr::eval
