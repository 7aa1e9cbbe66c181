// Opt-in: every labelled row of the shared MMLU / BoolQ / SuperGLUE files rendered by us against the
// same rows rendered by lm-evaluation-harness itself (scripts/eval/render_with_harness.py writes
// them; see its docstring). Runs when MLR_EVAL_HARNESS_PROMPTS names that file, else skips.
#include <doctest/doctest.h>

#include "tests/test_support.h"

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "eval/task.h"
#include "eval/tasks.h"

namespace fs = std::filesystem;
using namespace mlr::eval;
using json = nlohmann::json;

TEST_CASE("all shared rows render as lm-evaluation-harness renders them (opt-in)" * mlr_test::opt_in) {
  const char* expected_path = std::getenv("MLR_EVAL_HARNESS_PROMPTS");
  const fs::path data = fs::path(MLR_SOURCE_DIR) / ".." / "shared" / "data";
  MLR_SKIP_UNLESS(expected_path && fs::exists(data),
                  "set MLR_EVAL_HARNESS_PROMPTS (scripts/eval/render_with_harness.py) and provide ../shared/data");
  // The settings the script uses.
  const std::map<std::string, fs::path> files{
      {"boolq", data / "boolq" / "val.jsonl"},        {"cb", data / "superglue" / "CB" / "val.jsonl"},
      {"copa", data / "superglue" / "COPA" / "val.jsonl"}, {"multirc", data / "superglue" / "MultiRC" / "val.jsonl"},
      {"sglue_rte", data / "superglue" / "RTE" / "val.jsonl"}, {"wic", data / "superglue" / "WiC" / "val.jsonl"},
      {"wsc", data / "superglue" / "WSC" / "val.jsonl"}};
  std::map<std::string, Task> tasks;
  for (const auto& [name, path] : files) tasks.emplace(name, load_task(name, path, path));
  for (auto& t : load_mmlu(data / "mmlu")) tasks.emplace(t.config.name, std::move(t));
  std::map<std::string, PromptBuilder> builders;
  for (const auto& [name, task] : tasks) {
    const int64_t shots = name.starts_with("mmlu_") ? 5 : (name == "boolq" || name == "cb") ? 2 : 0;
    builders.emplace(name, PromptBuilder(task, shots));
  }
  std::ifstream in(expected_path);
  REQUIRE(in.good());
  std::string line;
  int64_t rows = 0, mismatches = 0;
  while (std::getline(in, line)) {
    const json row = json::parse(line);
    const std::string name = row["task"];
    const auto i = row["i"].get<size_t>();
    const Task& task = tasks.at(name);
    REQUIRE(i < task.docs.size());
    const RenderedDoc r = builders.at(name).render(task.docs[i]);
    const bool same = r.context == row["ctx"].get<std::string>() &&
                      task.docs[i].choices == row["choices"].get<std::vector<std::string>>() &&
                      task.docs[i].gold == row["gold"].get<int>();
    if (!same && ++mismatches <= 5) {
      CAPTURE(name);
      CAPTURE(i);
      CHECK(r.context == row["ctx"].get<std::string>());
      CHECK(task.docs[i].choices == row["choices"].get<std::vector<std::string>>());
      CHECK(task.docs[i].gold == row["gold"].get<int>());
    }
    ++rows;
  }
  MESSAGE(rows << " rows compared, " << mismatches << " differ");
  CHECK(rows == 23335);
  CHECK(mismatches == 0);
}
