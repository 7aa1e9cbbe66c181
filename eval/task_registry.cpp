#include "eval/task_registry.h"

#include <algorithm>

#include <fmt/format.h>

#include "tensor/error.h"

namespace mlr::eval {

namespace {

// Constructed on first use, so registrations from any file's static initialisation find it.
std::vector<TaskDefinition>& registry() {
  static std::vector<TaskDefinition> definitions;
  return definitions;
}

bool provides(const TaskDefinition& d, std::string_view name) {
  return d.name == name || std::find(d.member_names.begin(), d.member_names.end(), name) != d.member_names.end();
}

}  // namespace

TaskRegistration::TaskRegistration(TaskDefinition definition, std::source_location where) {
  definition.source_file = where.file_name();
  auto& all = registry();
  for (const TaskDefinition& d : all) {
    MLR_CHECK(!provides(d, definition.name), "eval: task {} is registered twice ({} and {})", definition.name,
              d.source_file, definition.source_file);
  }
  MLR_CHECK(static_cast<bool>(definition.load), "eval: task {} ({}) has no load function", definition.name,
            definition.source_file);
  const auto at = std::lower_bound(all.begin(), all.end(), definition.name,
                                   [](const TaskDefinition& d, const std::string& name) { return d.name < name; });
  all.insert(at, std::move(definition));
}

const std::vector<TaskDefinition>& registered_tasks() { return registry(); }

std::string known_task_names() {
  std::vector<std::string> usages;
  for (const TaskDefinition& d : registry()) usages.push_back(d.usage.empty() ? d.name : d.usage);
  return fmt::format("{}", fmt::join(usages, ", "));
}

const TaskDefinition& find_task(std::string_view name) {
  for (const TaskDefinition& d : registry()) {
    if (provides(d, name)) return d;
  }
  for (const TaskDefinition& d : registry()) {
    if (!d.member_prefix.empty() && name.starts_with(d.member_prefix)) return d;
    if (auto it = d.refused_names.find(std::string(name)); it != d.refused_names.end()) {
      throw Error(fmt::format("eval: task \"{}\": {}", name, it->second));
    }
  }
  throw Error(fmt::format("eval: unknown task \"{}\" (known: {})", name, known_task_names()));
}

Task load_task(std::string_view name, const std::filesystem::path& eval_file,
               const std::optional<std::filesystem::path>& fewshot_file) {
  std::vector<Task> tasks = find_task(name).load(name, TaskFiles{eval_file, fewshot_file});
  MLR_CHECK(tasks.size() == 1, "eval: task {} loads {} tasks from {}; load it by name with load_named_tasks", name,
            tasks.size(), eval_file.string());
  return std::move(tasks.front());
}

}  // namespace mlr::eval
