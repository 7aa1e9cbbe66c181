// Tasks by name from a data directory (see task_files.h).
#include "eval/task_files.h"

#include "eval/gsm8k.h"
#include "tensor/error.h"

namespace mlr::eval {

namespace fs = std::filesystem;

namespace {

fs::path default_file(const fs::path& data_dir, const std::string& task) {
  static const std::map<std::string, std::string> superglue = {
      {"cb", "CB"}, {"copa", "COPA"}, {"multirc", "MultiRC"}, {"sglue_rte", "RTE"}, {"wic", "WiC"}, {"wsc", "WSC"}};
  if (task == "boolq") return data_dir / "boolq" / "val.jsonl";
  if (auto it = superglue.find(task); it != superglue.end()) return data_dir / "superglue" / it->second / "val.jsonl";
  if (task == "gsm8k") return data_dir / "gsm8k" / "test.jsonl";
  return {};
}

}  // namespace

LoadedTasks load_named_tasks(const std::vector<std::string>& names, const fs::path& data_dir,
                             const std::map<std::string, std::string>& files,
                             const std::map<std::string, std::string>& shots) {
  LoadedTasks out;
  MLR_CHECK(!names.empty(), "eval: no task names given");
  for (const std::string& name : names) {
    if (name == "mmlu" || name.rfind("mmlu_", 0) == 0) {
      const fs::path root = files.count("mmlu") ? fs::path(files.at("mmlu")) : data_dir / "mmlu";
      MLR_CHECK(fs::is_directory(root), "eval: MMLU directory {} not found (give the data directory or a file for mmlu)",
                root.string());
      std::vector<std::string> subjects;
      if (name != "mmlu") subjects.push_back(name.substr(5));
      for (Task& t : load_mmlu(root, "test", subjects)) out.tasks.push_back(std::move(t));
      continue;
    }
    const fs::path file = files.count(name) ? fs::path(files.at(name)) : default_file(data_dir, name);
    MLR_CHECK(!file.empty(), "eval: task {} has no default file; name its file explicitly ({}=PATH)", name, name);
    MLR_CHECK(fs::exists(file), "eval: task {}: file {} not found", name, file.string());
    std::optional<fs::path> pool;
    if (shots.count(name)) pool = fs::path(shots.at(name));
    else if (fs::exists(file.parent_path() / "train.jsonl")) pool = file.parent_path() / "train.jsonl";
    out.tasks.push_back(name == "gsm8k" ? load_gsm8k(file, pool) : load_task(name, file, pool));
  }
  out.groups = mmlu_groups(out.tasks);
  return out;
}

}  // namespace mlr::eval
