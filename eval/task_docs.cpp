#include "eval/task_docs.h"

#include <algorithm>
#include <fstream>

#include <fmt/format.h>

#include "data/text.h"
#include "tensor/error.h"

namespace mlr::eval {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

bool all_digits(const std::string& s) {
  return !s.empty() && s.size() < 10 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

DocValues record_values(data::Record&& record) {
  DocValues values;
  for (auto& [name, text] : record.fields) values.insert_or_assign(name, Value(std::move(text)));
  values.insert_or_assign("label", Value(record.label));
  return values;
}

Value json_value(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_number_integer()) return value.get<int64_t>();
  if (value.is_array()) {
    Value::List list;
    for (const auto& element : value) list.push_back(json_value(element));
    return list;
  }
  if (value.is_object()) {
    Value::Object object;
    for (const auto& [key, member] : value.items()) object.emplace(key, json_value(member));
    return object;
  }
  return value.dump();
}

std::vector<std::pair<std::string, std::string>> json_fields(const json& row) {
  std::vector<std::pair<std::string, std::string>> fields;
  for (const auto& [k, v] : row.items()) fields.emplace_back(k, v.is_string() ? v.get<std::string>() : v.dump());
  return fields;
}

const json& json_member(const json& row, const char* key) {
  MLR_CHECK(row.is_object() && row.contains(key), "missing field \"{}\"", key);
  return row.at(key);
}

std::string json_text(const json& row, const char* key) {
  const json& v = json_member(row, key);
  MLR_CHECK(v.is_string(), "field \"{}\" is {}, expected a string", key, v.type_name());
  return v.get<std::string>();
}

std::vector<std::string> json_texts(const json& array, const char* key) {
  MLR_CHECK(array.is_array(), "field \"{}\" is {}, expected an array", key, array.type_name());
  std::vector<std::string> out;
  for (const auto& e : array) {
    MLR_CHECK(e.is_string(), "field \"{}\" has a {} element, expected strings", key, e.type_name());
    out.push_back(e.get<std::string>());
  }
  return out;
}

int json_int_label(const json& row, const char* key) {
  const json& v = json_member(row, key);
  if (v.is_number_integer()) return v.get<int>();
  if (v.is_string() && all_digits(v.get<std::string>()) && v.get<std::string>().size() < 9) {
    return std::stoi(v.get<std::string>());
  }
  throw Error(fmt::format("field \"{}\" is {}, expected an integer label", key, v.dump()));
}

DocRenderer::DocRenderer(const TaskConfig& config, DocFunctions functions)
    : generates_(config.output_type == OutputType::generate_until), functions_(std::move(functions)) {
  if (!functions_.text) text_.emplace(config.doc_to_text);
  if (!generates_ && !functions_.choices) choices_.emplace(config.doc_to_choice);
  if (!functions_.target) target_.emplace(config.doc_to_target);
}

Doc DocRenderer::render(const DocValues& values, std::vector<std::pair<std::string, std::string>> fields) const {
  Doc d;
  d.fields = std::move(fields);
  d.text = functions_.text ? functions_.text(values) : text_->render(values);
  const Value target = functions_.target ? functions_.target(values) : target_->evaluate(values);
  if (generates_) {
    d.target = target.string();
    return d;
  }
  d.choices = functions_.choices ? functions_.choices(values) : choices_->render(values);
  int64_t gold = 0;
  if (target.is_integer()) {
    gold = target.integer();
  } else if (all_digits(target.string())) {
    gold = std::stoll(target.string());
  } else {
    const auto it = std::find(d.choices.begin(), d.choices.end(), target.string());
    MLR_CHECK(it != d.choices.end(), "the target \"{}\" is not one of the {} choices", data::preview(target.string()),
              d.choices.size());
    gold = it - d.choices.begin();
  }
  d.gold = gold >= 0 && gold < static_cast<int64_t>(d.choices.size()) ? static_cast<int>(gold) : -100;
  return d;
}

std::vector<Doc> read_record_docs(data::Format format, const fs::path& path,
                                  const std::function<Doc(data::Record&&)>& make_doc) {
  data::ReadResult read = data::read_records(format, path);
  std::vector<Doc> docs;
  docs.reserve(read.records.size());
  for (auto& r : read.records) {
    const auto file = static_cast<size_t>(r.file);
    const int64_t line = r.line;
    try {
      docs.push_back(make_doc(std::move(r)));
    } catch (const Error& e) {
      throw Error(fmt::format("eval: {}:{}: {}", read.files.at(file), line, e.message()));
    }
  }
  MLR_CHECK(!docs.empty(), "eval: {} has no rows", path.string());
  return docs;
}

std::vector<Doc> read_jsonl_docs(std::string_view task, const fs::path& path,
                                 const std::function<Doc(const json&)>& make_doc) {
  std::ifstream in(path, std::ios::binary);
  MLR_CHECK(in.good(), "eval: {}: cannot open {}", task, path.string());
  std::vector<Doc> docs;
  std::string line;
  int64_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (data::strip(line).empty()) continue;
    try {
      const json row = json::parse(line);
      MLR_CHECK(row.is_object(), "a line is {}, expected a JSON object", row.type_name());
      docs.push_back(make_doc(row));
    } catch (const json::exception& e) {
      throw Error(fmt::format("eval: {}:{}: {}", path.string(), line_number, e.what()));
    } catch (const Error& e) {
      throw Error(fmt::format("eval: {}:{}: {}", path.string(), line_number, e.message()));
    }
  }
  MLR_CHECK(!docs.empty(), "eval: {}: {} has no rows", task, path.string());
  return docs;
}

TaskDefinition single_task(TaskConfig config, std::function<std::vector<Doc>(const fs::path&)> read_docs) {
  TaskDefinition d;
  d.name = config.name;
  d.load = [config = std::move(config), read_docs = std::move(read_docs)](std::string_view, const TaskFiles& files) {
    MLR_CHECK(fs::exists(files.scored), "eval: task {}: file {} not found", config.name, files.scored.string());
    Task task;
    task.config = config;
    task.docs = read_docs(files.scored);
    if (files.fewshot) task.fewshot_docs = read_docs(*files.fewshot);
    return std::vector<Task>{std::move(task)};
  };
  return d;
}

TaskDefinition record_task(TaskConfig config, data::Format format, std::string default_path, DocFunctions functions,
                           std::function<DocValues(data::Record&&)> values) {
  const DocRenderer renderer(config, std::move(functions));
  auto read = [renderer, format, values = std::move(values)](const fs::path& path) {
    return read_record_docs(format, path, [&](data::Record&& r) {
      auto fields = r.fields;
      return renderer.render(values(std::move(r)), std::move(fields));
    });
  };
  TaskDefinition d = single_task(std::move(config), std::move(read));
  d.default_path = std::move(default_path);
  return d;
}

TaskDefinition jsonl_task(TaskConfig config, std::function<DocValues(const json&)> values, DocFunctions functions) {
  const DocRenderer renderer(config, std::move(functions));
  const std::string name = config.name;
  auto read = [renderer, name, values = std::move(values)](const fs::path& path) {
    return read_jsonl_docs(name, path, [&](const json& row) { return renderer.render(values(row), json_fields(row)); });
  };
  return single_task(std::move(config), std::move(read));
}

}  // namespace mlr::eval
