// The task registry (every file under eval/tasks/ registers its task, and the linker kept each
// registration) and the template renderer that task prompts are written in.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "eval/prompt_template.h"
#include "eval/task_docs.h"
#include "eval/task_files.h"
#include "eval/task_registry.h"
#include "tensor/error.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using namespace mlr::eval;

TEST_CASE("every file under eval/tasks/ registered a task, and the harness's task names are all there") {
  std::set<std::string> registered_from;
  for (const TaskDefinition& d : registered_tasks()) registered_from.insert(fs::path(d.source_file).filename().string());
  size_t files = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(MLR_SOURCE_DIR) / "eval" / "tasks")) {
    if (entry.path().extension() != ".cpp") continue;
    ++files;
    CAPTURE(entry.path().string());
    CHECK(registered_from.count(entry.path().filename().string()) == 1);
  }
  CHECK(files >= 12);
  for (const char* name : {"boolq", "cb", "copa", "multirc", "sglue_rte", "wic", "wsc", "mmlu", "mmlu_anatomy",
                           "mmlu_world_religions", "gsm8k", "arc_easy", "arc_challenge", "hellaswag", "piqa",
                           "winogrande"}) {
    CAPTURE(name);
    CHECK_NOTHROW(find_task(name));
  }
  CHECK(find_task("mmlu_anatomy").name == "mmlu");
  CHECK_THROWS_WITH_AS(find_task("rte"), doctest::Contains("sglue_rte"), mlr::Error);
  CHECK_THROWS_WITH_AS(find_task("lambada"), doctest::Contains("known: arc_challenge, arc_easy, boolq"), mlr::Error);
  // Sorted by name, no name provided twice.
  const auto& all = registered_tasks();
  CHECK(std::is_sorted(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.name < b.name; }));
}

TEST_CASE("a task without a default file asks for one; a missing file is named") {
  CHECK_THROWS_WITH_AS(load_named_tasks({"piqa"}, "/nonexistent"), doctest::Contains("piqa=PATH"), mlr::Error);
  CHECK_THROWS_WITH_AS(load_named_tasks({"cb"}, "/nonexistent"),
                       doctest::Contains("/nonexistent/superglue/CB/val.jsonl not found"), mlr::Error);
  CHECK_THROWS_WITH_AS(load_named_tasks({"mmlu_anatomy"}, "/nonexistent"), doctest::Contains("MMLU directory"),
                       mlr::Error);
}

TEST_CASE("templates: names, members, elements, slices in code points, strip() and index()") {
  const DocValues doc{{"q", "  Why?  "},
                      {"s", "h\xc3\xa9llo world"},  // é is one code point, two bytes
                      {"a", 1},
                      {"b", 5},
                      {"choices", Value::Object{{"text", Value::List{"x", "y"}}, {"label", Value::List{"A", "B"}}}},
                      {"key", "B"},
                      {"list", Value::List{"p", "q", "r"}}};
  CHECK(PromptTemplate("Q: {{q.strip()}}|{{ list[0] }}{{list[-1]}}|{{a}}").render(doc) == "Q: Why?|pr|1");
  CHECK(PromptTemplate("{{s[a:b]}}").render(doc) == "\xc3\xa9llo");
  CHECK(PromptTemplate("{{s[:2]}}/{{s[6:]}}/{{s[-5:]}}").render(doc) == "h\xc3\xa9/world/world");
  CHECK(PromptTemplate("{{choices.label.index(key)}}").evaluate(doc) == Value(1));
  CHECK(PromptTemplate("{{choices.text}}").evaluate(doc) == Value(Value::List{"x", "y"}));
  CHECK(PromptTemplate("no substitution").evaluate(doc) == Value("no substitution"));
  CHECK(ChoiceTemplate("{{[q, key]}}").render(doc) == std::vector<std::string>{"  Why?  ", "B"});
  CHECK(ChoiceTemplate("list").render(doc) == std::vector<std::string>{"p", "q", "r"});
  CHECK(ChoiceTemplate(R"(['''{{key}}\nyes''', "no", 'it\'s'])").render(doc) ==
        std::vector<std::string>{"B\nyes", "no", "it's"});
  CHECK(TargetTemplate("a").evaluate(doc) == Value(1));
  CHECK(TargetTemplate("{{key}}!").evaluate(doc) == Value("B!"));

  CHECK_THROWS_WITH_AS(PromptTemplate("{{q"), doctest::Contains("without"), mlr::Error);
  CHECK_THROWS_WITH_AS(PromptTemplate("{{q.upper()}}"), doctest::Contains("unknown method upper()"), mlr::Error);
  CHECK_THROWS_WITH_AS(PromptTemplate("{{q q}}"), doctest::Contains("unexpected text at offset 4"), mlr::Error);
  CHECK_THROWS_WITH_AS(ChoiceTemplate("['a', 'b'"), doctest::Contains("expected ',' or ']'"), mlr::Error);
  CHECK_THROWS_WITH_AS(PromptTemplate("{{missing}}").render(doc), doctest::Contains("no \"missing\""), mlr::Error);
  CHECK_THROWS_WITH_AS(PromptTemplate("{{list}}").render(doc), doctest::Contains("a list"), mlr::Error);
  CHECK_THROWS_WITH_AS(PromptTemplate("{{list[3]}}").render(doc), doctest::Contains("index 3 outside a list of 3"),
                       mlr::Error);
  CHECK_THROWS_WITH_AS(PromptTemplate("{{choices.label.index(q)}}").evaluate(doc),
                       doctest::Contains("q \"  Why?  \" is not among choices.label"), mlr::Error);
}

TEST_CASE("a doc from a config's templates: gold from an index, a digit string or a choice's text") {
  TaskConfig c;
  c.name = "toy";
  c.doc_to_text = "{{q}}?";
  c.doc_to_choice = "['no', 'yes']";
  c.doc_to_target = "label";
  const DocRenderer renderer(c);
  const Doc d = renderer.render({{"q", "Q"}, {"label", 1}}, {{"q", "Q"}});
  CHECK(d.text == "Q?");
  CHECK(d.choices == std::vector<std::string>{"no", "yes"});
  CHECK(d.gold == 1);
  CHECK(*d.field("q") == "Q");
  CHECK(d.field("label") == nullptr);
  CHECK(renderer.render({{"q", "Q"}, {"label", 2}}, {}).gold == -100);  // outside the choices: always wrong
  CHECK(renderer.render({{"q", "Q"}, {"label", "0"}}, {}).gold == 0);
  CHECK(renderer.render({{"q", "Q"}, {"label", "yes"}}, {}).gold == 1);
  CHECK_THROWS_WITH_AS(renderer.render({{"q", "Q"}, {"label", "maybe"}}, {}), doctest::Contains("\"maybe\" is not one"),
                       mlr::Error);
}
