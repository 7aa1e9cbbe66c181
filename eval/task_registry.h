// Every evaluation task registers itself: a task (or a family of tasks such as MMLU's 57
// subjects) is one file eval/tasks/<name>.cpp holding its config with its prompt, how it reads its
// files, its metrics, and one TaskRegistration at namespace scope. No list elsewhere names it:
// mlr-eval, mlr-train's periodic evaluation and --help find it here.
//
// The registrations are static objects in files that nothing references by symbol, so the eval
// library is linked whole (eval/CMakeLists.txt); tests/eval/task_registry_test.cpp checks that
// every file under eval/tasks/ did register.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <source_location>
#include <string>
#include <string_view>
#include <vector>

#include "eval/task.h"

namespace mlr::eval {

// A group of tasks as the harness aggregates it (aggregate_metric_list: acc, weight_by_size).
struct TaskGroup {
  std::string name, alias;
  std::vector<std::string> children;  // direct children: task or group names
  bool weight_by_size = true;
  std::string version = "2";
};

// Where one task's data is.
struct TaskFiles {
  std::filesystem::path scored;                  // the scored split (for MMLU the release's root directory)
  std::optional<std::filesystem::path> fewshot;  // the few-shot pool, when there is one
};

struct TaskDefinition {
  std::string name;  // the harness's task name, or a family's (mmlu); the NAME of --task-file NAME=PATH
  std::vector<std::string> member_names;  // further task names it provides (mmlu_<subject>)
  // Other names with this prefix are passed to load too, so it can say what is wrong with them
  // ("astrology" is not an MMLU subject); "" = none.
  std::string member_prefix;
  std::string usage;                      // how --help lists it, e.g. "mmlu, mmlu_<subject>"; "" = name
  // The scored file (or directory) under a data directory in the public layout; "" = none, the user
  // names the file. A train.jsonl beside a default or given file is the few-shot pool.
  std::string default_path;
  // Names users may try that are refused, with the reason (e.g. "rte": GLUE RTE in the harness).
  std::map<std::string, std::string> refused_names;
  // The tasks `name` (this definition's name or one of its members) asks for.
  std::function<std::vector<Task>(std::string_view name, const TaskFiles& files)> load;
  // Groups over the loaded tasks of this definition (optional), in the order they are reported.
  std::function<std::vector<TaskGroup>(const std::vector<TaskConfig>& tasks)> groups;
  std::string source_file;  // where it was registered (set by TaskRegistration)
};

// At namespace scope in a task file: `const TaskRegistration registration{definition()};`.
class TaskRegistration {
 public:
  explicit TaskRegistration(TaskDefinition definition,
                            std::source_location where = std::source_location::current());
};

// Every registered definition, sorted by name.
const std::vector<TaskDefinition>& registered_tasks();
// The definition providing `name` (its own or a member name); throws mlr::Error listing the known
// names, or the reason for a refused name.
const TaskDefinition& find_task(std::string_view name);
// "boolq, cb, ...": every definition's usage, for help texts and errors.
std::string known_task_names();

// Loads a single task by name from its files (the definition's load must give exactly one task).
Task load_task(std::string_view name, const std::filesystem::path& eval_file,
               const std::optional<std::filesystem::path>& fewshot_file = std::nullopt);

}  // namespace mlr::eval
