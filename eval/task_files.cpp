// Tasks by name from a data directory (see task_files.h).
#include "eval/task_files.h"

#include "tensor/error.h"

namespace mlr::eval {

namespace fs = std::filesystem;

namespace {

TaskFiles locate(const TaskDefinition& definition, const std::string& name, const fs::path& data_dir,
                 const std::map<std::string, std::string>& files, const std::map<std::string, std::string>& shots) {
  TaskFiles out;
  if (auto it = files.find(definition.name); it != files.end()) out.scored = it->second;
  else if (!definition.default_path.empty()) out.scored = data_dir / definition.default_path;
  MLR_CHECK(!out.scored.empty(), "eval: task {} has no default file; name its file explicitly ({}=PATH)", name, name);
  if (auto it = shots.find(definition.name); it != shots.end()) out.fewshot = it->second;
  else if (fs::exists(out.scored.parent_path() / "train.jsonl")) out.fewshot = out.scored.parent_path() / "train.jsonl";
  return out;
}

}  // namespace

LoadedTasks load_named_tasks(const std::vector<std::string>& names, const fs::path& data_dir,
                             const std::map<std::string, std::string>& files,
                             const std::map<std::string, std::string>& shots) {
  MLR_CHECK(!names.empty(), "eval: no task names given");
  LoadedTasks out;
  std::map<std::string, std::vector<TaskConfig>> configs_of_definition;  // for the groups
  for (const std::string& name : names) {
    const TaskDefinition& definition = find_task(name);
    for (Task& task : definition.load(name, locate(definition, name, data_dir, files, shots))) {
      if (definition.groups) configs_of_definition[definition.name].push_back(task.config);
      out.tasks.push_back(std::move(task));
    }
  }
  for (const TaskDefinition& definition : registered_tasks()) {
    const auto it = configs_of_definition.find(definition.name);
    if (it == configs_of_definition.end()) continue;
    for (TaskGroup& group : definition.groups(it->second)) out.groups.push_back(std::move(group));
  }
  return out;
}

}  // namespace mlr::eval
