// What task files share to turn the rows of their files into Docs: the harness's `doc` for a row
// (DocValues), the config's doc_to_text / doc_to_choice / doc_to_target rendered over it
// (DocRenderer), readers that name the file and line of a bad row, and definitions of the usual
// shapes of task (one scored file, one few-shot file).
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/readers.h"
#include "eval/prompt_template.h"
#include "eval/task.h"
#include "eval/task_registry.h"

namespace mlr::eval {

// A row's fields as strings (moved out of the record) and "label" as the integer label (the
// SuperGLUE docs of the harness).
DocValues record_values(data::Record&& record);

// JSON -> Value: strings, integers, arrays and objects as they are; any other value as its JSON text.
Value json_value(const nlohmann::json& value);
// A JSON row's members as (name, text) pairs for Doc::fields (strings as they are, others dumped).
std::vector<std::pair<std::string, std::string>> json_fields(const nlohmann::json& row);
// Checked members of a JSON row; a failure throws mlr::Error naming the field.
const nlohmann::json& json_member(const nlohmann::json& row, const char* key);
std::string json_text(const nlohmann::json& row, const char* key);
std::vector<std::string> json_texts(const nlohmann::json& array, const char* key);
// An integer label given as an integer or an all-digit string (the harness turns "3" into 3).
int json_int_label(const nlohmann::json& row, const char* key);

// The doc_to_* of a config whose text is "!function ...": the harness's Python function, as code.
struct DocFunctions {
  std::function<std::string(const DocValues&)> text;
  std::function<std::vector<std::string>(const DocValues&)> choices;
  std::function<Value(const DocValues&)> target;
};

// Builds Docs from DocValues with the config's templates (parsed once) or the given functions.
// The target gives the gold index as the harness reads it: an integer (or all-digit text) indexes
// the choices (-100, always wrong, when outside them); other text is found among the choices.
// For generate_until tasks the target is the reference answer (Doc::target).
class DocRenderer {
 public:
  explicit DocRenderer(const TaskConfig& config, DocFunctions functions = {});
  Doc render(const DocValues& values, std::vector<std::pair<std::string, std::string>> fields) const;

 private:
  bool generates_;
  DocFunctions functions_;
  std::optional<PromptTemplate> text_;
  std::optional<ChoiceTemplate> choices_;
  std::optional<TargetTemplate> target_;
};

// Reads `path` in a data/ reader format and builds one Doc per record (make_doc may take the
// record's strings). An error names the file and the record's line; a file without rows is an error.
std::vector<Doc> read_record_docs(data::Format format, const std::filesystem::path& path,
                                  const std::function<Doc(data::Record&&)>& make_doc);

// Reads JSONL (one object per line, blank lines skipped) and builds one Doc per row. An error names
// the file and line; a file without rows is an error.
std::vector<Doc> read_jsonl_docs(std::string_view task, const std::filesystem::path& path,
                                 const std::function<Doc(const nlohmann::json&)>& make_doc);

// The definition of one task (named by config.name) whose scored split and few-shot pool are read
// by `read_docs`, one file each.
TaskDefinition single_task(TaskConfig config, std::function<std::vector<Doc>(const std::filesystem::path&)> read_docs);

// One task read with data/'s reader of `format`, its docs rendered from the config's templates over
// `values` of each record.
TaskDefinition record_task(TaskConfig config, data::Format format, std::string default_path, DocFunctions functions = {},
                           std::function<DocValues(data::Record&&)> values = record_values);

// One task read from JSONL, its docs rendered from the config's templates over `values` of each row.
TaskDefinition jsonl_task(TaskConfig config, std::function<DocValues(const nlohmann::json&)> values,
                          DocFunctions functions = {});

}  // namespace mlr::eval
