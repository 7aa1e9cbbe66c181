// Prompts rendered from the real files in ../shared/data, compared byte for byte with the contexts
// lm-evaluation-harness (0.4.13, installed from PyPI) renders for the same rows: its task YAMLs
// loaded with dataset_path "json" over the shared files converted to the Hugging Face row layout.
// The expected strings are written out here; the few-shot draws of the default sampler are those
// the harness made (Random(1234), the n + 1 rule, the eval doc excluded at docs 44 and 52).
#include <doctest/doctest.h>

#include "tests/test_support.h"

#include <filesystem>
#include <string>
#include <vector>

#include "eval/task.h"
#include "eval/tasks.h"
#include "tensor/error.h"

namespace fs = std::filesystem;
using namespace mlr::eval;

namespace {

const fs::path kData = fs::path(MLR_SOURCE_DIR) / ".." / "shared" / "data";

bool shared_data_present() {
  if (fs::exists(kData / "superglue") && fs::exists(kData / "mmlu") && fs::exists(kData / "boolq")) return true;
  return false;
}

fs::path superglue_file(const std::string& task) {
  if (task == "boolq") return kData / "boolq" / "val.jsonl";
  const std::string dir = task == "cb" ? "CB" : task == "copa" ? "COPA" : task == "multirc" ? "MultiRC"
                          : task == "sglue_rte" ? "RTE" : task == "wic" ? "WiC" : "WSC";
  return kData / "superglue" / dir / "val.jsonl";
}

const std::string k_boolq_context =
    "Ethanol fuel -- All biomass goes through at least some of these steps: it needs to be grown, collect"
    "ed, dried, fermented, distilled, and burned. All of these steps require resources and an infrastruct"
    "ure. The total amount of energy input into the process compared to the energy released by burning th"
    "e resulting ethanol fuel is known as the energy balance (or ``energy returned on energy invested'')."
    " Figures compiled in a 2007 report by National Geographic Magazine point to modest results for corn "
    "ethanol produced in the US: one unit of fossil-fuel energy is required to create 1.3 energy units fr"
    "om the resulting ethanol. The energy balance for sugarcane ethanol produced in Brazil is more favora"
    "ble, with one unit of fossil-fuel energy required to create 8 from the ethanol. Energy balance estim"
    "ates are not easily produced, thus numerous such reports have been generated that are contradictory."
    " For instance, a separate survey reports that production of ethanol from sugarcane, which requires a"
    " tropical climate to grow productively, returns from 8 to 9 units of energy for each unit expended, "
    "as compared to corn, which only returns about 1.34 units of fuel energy for each unit of energy expe"
    "nded. A 2006 University of California Berkeley study, after analyzing six separate studies, conclude"
    "d that producing ethanol from corn uses much less petroleum than producing gasoline.\n"
    "Question: does ethanol take more energy make that produces?\n"
    "Answer:";
// choices: ["no", "yes"] target: 0
const std::string k_cb_context =
    "Valence the void-brain, Valence the virtuous valet. Why couldn't the figger choose his own portion o"
    "f titanic anatomy to shaft? Did he think he was helping?\n"
    "Question: Valence was helping. True, False, or Neither?\n"
    "Answer:";
// choices: ["True", "False", "Neither"] target: 1
const std::string k_copa_context =
    "The man turned on the faucet therefore";
// choices: [" the toilet filled with water.", " water flowed from the spout."] target: " water flowed from the spout."
const std::string k_multirc_context =
    "What causes a change in motion? The application of a force. Any time an object changes motion, a for"
    "ce has been applied. In what ways can this happen? Force can cause an object at rest to start moving"
    ". Forces can cause objects to speed up or slow down. Forces can cause a moving object to stop. Force"
    "s can also cause a change in direction. In short, forces cause changes in motion. The moving object "
    "may change its speed, its direction, or both. We know that changes in motion require a force. We kno"
    "w that the size of the force determines the change in motion. How much an objects motion changes whe"
    "n a force is applied depends on two things. It depends on the strength of the force. It also depends"
    " on the objects mass. Think about some simple tasks you may regularly do. You may pick up a baseball"
    ". This requires only a very small force. \n"
    "Question: Would the mass of a baseball affect how much force you have to use to pick it up?\n"
    "Answer:";
// choices: ["No\nIs the answer correct? yes", "No\nIs the answer correct? no"] target: 0
const std::string k_sglue_rte_context =
    "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, according t"
    "o the Christopher Reeve Foundation.\n"
    "Question: Christopher Reeve had an accident. True or False?\n"
    "Answer:";
// choices: ["True", "False"] target: 1
const std::string k_wic_context =
    "Sentence 1: An emerging professional class.\n"
    "Sentence 2: Apologizing for losing your temper, even though you were badly provoked, showed real cla"
    "ss.\n"
    "Question: Is the word 'class' used in the same way in the two sentences above?\n"
    "Answer:";
// choices: ["no", "yes"] target: 0
const std::string k_wsc_context =
    "Passage: Bernard, who had not told the government official that he was less than 21 when he filed fo"
    "r a homestead claim, did not consider that he had done anything dishonest. Still, anyone who knew th"
    "at he was 19 years old could take his claim away from *him*.\n"
    "Question: In the passage above, does the pronoun \"*him*\" refer to \"*anyone*\"?\n"
    "Answer:";
// choices: ["no", "yes"] target: 0
const std::string k_mmlu_abstract_algebra_5shot =
    "The following are multiple choice questions (with answers) about abstract algebra.\n"
    "\n"
    "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\n"
    "A. 0\n"
    "B. 1\n"
    "C. 2\n"
    "D. 3\n"
    "Answer: B\n"
    "\n"
    "Statement 1 | If aH is an element of a factor group, then |aH| divides |a|. Statement 2 | If H and K"
    " are subgroups of G then HK is a subgroup of G.\n"
    "A. True, True\n"
    "B. False, False\n"
    "C. True, False\n"
    "D. False, True\n"
    "Answer: B\n"
    "\n"
    "Statement 1 | Every element of a group generates a cyclic subgroup of the group. Statement 2 | The s"
    "ymmetric group S_10 has 10 elements.\n"
    "A. True, True\n"
    "B. False, False\n"
    "C. True, False\n"
    "D. False, True\n"
    "Answer: C\n"
    "\n"
    "Statement 1| Every function from a finite set onto itself must be one to one. Statement 2 | Every su"
    "bgroup of an abelian group is abelian.\n"
    "A. True, True\n"
    "B. False, False\n"
    "C. True, False\n"
    "D. False, True\n"
    "Answer: A\n"
    "\n"
    "Find the characteristic of the ring 2Z.\n"
    "A. 0\n"
    "B. 3\n"
    "C. 12\n"
    "D. 30\n"
    "Answer: A\n"
    "\n"
    "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
    "A. 0\n"
    "B. 4\n"
    "C. 2\n"
    "D. 6\n"
    "Answer:";

}  // namespace

TEST_CASE("SuperGLUE and BoolQ: first validation doc, 0-shot, matches the harness" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(shared_data_present(), "../shared/data is absent");
  struct Case {
    std::string task;
    const std::string* context;
    std::vector<std::string> choices;
    int gold;
  };
  const std::vector<Case> cases{
      {"boolq", &k_boolq_context, {"no", "yes"}, 0},
      {"cb", &k_cb_context, {"True", "False", "Neither"}, 1},
      {"copa", &k_copa_context, {" the toilet filled with water.", " water flowed from the spout."}, 1},
      {"multirc", &k_multirc_context, {"No\nIs the answer correct? yes", "No\nIs the answer correct? no"}, 0},
      {"sglue_rte", &k_sglue_rte_context, {"True", "False"}, 1},
      {"wic", &k_wic_context, {"no", "yes"}, 0},
      {"wsc", &k_wsc_context, {"no", "yes"}, 0},
  };
  for (const auto& c : cases) {
    CAPTURE(c.task);
    const Task task = load_task(c.task, superglue_file(c.task));
    REQUIRE(!task.docs.empty());
    PromptBuilder builder(task, 0);
    const RenderedDoc r = builder.render(task.docs[0]);
    CHECK(r.context == *c.context);
    CHECK(task.docs[0].choices == c.choices);
    CHECK(task.docs[0].gold == c.gold);
    REQUIRE(r.requests.size() == c.choices.size());
    for (size_t i = 0; i < c.choices.size(); ++i) {
      CHECK(r.requests[i].context == *c.context);
      CHECK(r.requests[i].continuation == " " + c.choices[i]);
    }
  }
}

TEST_CASE("split sizes of the shared validation files" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(shared_data_present(), "../shared/data is absent");
  const std::vector<std::pair<std::string, size_t>> sizes{{"boolq", 3270}, {"cb", 56},  {"copa", 100}, {"multirc", 4848},
                                                          {"sglue_rte", 277}, {"wic", 638}, {"wsc", 104}};
  for (const auto& [name, n] : sizes) {
    CAPTURE(name);
    CHECK(load_task(name, superglue_file(name)).docs.size() == n);
  }
}

TEST_CASE("COPA continuations begin with two spaces; MultiRC's gold is the inverted label" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(shared_data_present(), "../shared/data is absent");
  const Task copa = load_task("copa", superglue_file("copa"));
  PromptBuilder builder(copa, 0);
  const RenderedDoc r = builder.render(copa.docs[0]);
  CHECK(r.requests[1].continuation == "  water flowed from the spout.");
  // MultiRC doc 1 is the answer "Yes", labelled correct (1): gold index 1 is the "...? no" choice.
  const Task multirc = load_task("multirc", superglue_file("multirc"));
  CHECK(multirc.docs[1].choices[1] == "Yes\nIs the answer correct? no");
  CHECK(multirc.docs[1].gold == 1);
}

TEST_CASE("MMLU: 5-shot abstract_algebra doc 0 is byte-identical to the harness's context" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(shared_data_present(), "../shared/data is absent");
  const auto tasks = load_mmlu(kData / "mmlu", "test", {"abstract_algebra"});
  REQUIRE(tasks.size() == 1);
  const Task& t = tasks[0];
  CHECK(t.config.name == "mmlu_abstract_algebra");
  CHECK(t.docs.size() == 100);
  CHECK(t.fewshot_docs.size() == 5);
  PromptBuilder builder(t, 5);
  const RenderedDoc r = builder.render(t.docs[0]);
  CHECK(r.context == k_mmlu_abstract_algebra_5shot);
  CHECK(r.shot_indices == std::vector<size_t>{0, 1, 2, 3, 4});
  REQUIRE(r.requests.size() == 4);
  CHECK(r.requests[0].continuation == " A");
  CHECK(r.requests[3].continuation == " D");
  CHECK(t.docs[0].gold == 1);
  // The second doc gets the same shots (first_n), and 6 shots exceed the dev split.
  CHECK(builder.render(t.docs[1]).shot_indices == std::vector<size_t>{0, 1, 2, 3, 4});
  CHECK_THROWS_AS(PromptBuilder(t, 6), mlr::Error);
}

TEST_CASE("MMLU: all 57 subjects, 14042 test questions, descriptions from the subject name" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(shared_data_present(), "../shared/data is absent");
  const auto tasks = load_mmlu(kData / "mmlu");
  REQUIRE(tasks.size() == 57);
  size_t total = 0;
  for (const auto& t : tasks) total += t.docs.size();
  CHECK(total == 14042);
  CHECK(tasks[30].config.name == "mmlu_high_school_us_history");
  CHECK(tasks[30].config.description ==
        "The following are multiple choice questions (with answers) about high school us history.\n\n");
  const auto groups = mmlu_groups(tasks);
  REQUIRE(groups.size() == 5);
  CHECK(groups[0].name == "mmlu_stem");
  CHECK(groups[0].children.size() == 19);
  CHECK(groups[1].children.size() == 13);  // other
  CHECK(groups[2].alias == "social sciences");
  CHECK(groups[2].children.size() == 12);
  CHECK(groups[3].children.size() == 13);  // humanities
  CHECK(groups[4].name == "mmlu");
  CHECK(groups[4].children == std::vector<std::string>{"mmlu_stem", "mmlu_other", "mmlu_social_sciences", "mmlu_humanities"});
  CHECK_THROWS_AS(load_mmlu(kData / "mmlu", "test", {"astrology"}), mlr::Error);
  CHECK_THROWS_WITH_AS(load_mmlu(kData / "mmlu", "train", {"anatomy"}), doctest::Contains("anatomy_train.csv"), mlr::Error);
}

TEST_CASE("default sampler: CB 3-shot draws for all 56 docs match the harness (pool = the same file)" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(shared_data_present(), "../shared/data is absent");
  Task cb = load_task("cb", superglue_file("cb"), superglue_file("cb"));
  const std::vector<std::vector<size_t>> expected{
      {49, 28, 7}, {5, 51, 37}, {42, 44, 5}, {49, 22, 15}, {1, 50, 22}, {39, 30, 29},
      {5, 11, 45}, {54, 0, 32}, {15, 4, 42}, {29, 4, 38}, {5, 32, 37}, {17, 52, 35},
      {41, 19, 30}, {22, 17, 15}, {12, 29, 33}, {1, 32, 4}, {21, 9, 45}, {42, 24, 10},
      {4, 37, 31}, {4, 35, 13}, {1, 22, 49}, {33, 9, 42}, {29, 2, 26}, {42, 51, 2},
      {17, 9, 19}, {9, 49, 53}, {2, 36, 24}, {22, 31, 21}, {52, 29, 30}, {50, 30, 55},
      {38, 10, 28}, {49, 33, 52}, {18, 17, 7}, {11, 26, 27}, {7, 33, 6}, {53, 31, 24},
      {52, 42, 16}, {12, 22, 6}, {44, 51, 10}, {17, 9, 54}, {46, 20, 50}, {46, 4, 5},
      {13, 3, 18}, {2, 14, 32}, {5, 50, 20}, {19, 29, 4}, {16, 54, 4}, {27, 12, 6},
      {12, 45, 29}, {15, 52, 51}, {54, 13, 32}, {26, 11, 37}, {19, 3, 22}, {34, 9, 31},
      {35, 30, 21}, {8, 3, 39}};
  REQUIRE(cb.docs.size() == expected.size());
  PromptBuilder builder(cb, 3);
  for (size_t d = 0; d < cb.docs.size(); ++d) {
    CAPTURE(d);
    const RenderedDoc r = builder.render(cb.docs[d]);
    CHECK(r.shot_indices == expected[d]);
  }
  // A shot reads text + " " + choices[gold] + "\n\n".
  PromptBuilder again(cb, 3);
  const RenderedDoc r0 = again.render(cb.docs[0]);
  const std::string first_shot = cb.docs[49].text + " " + cb.docs[49].choices[static_cast<size_t>(cb.docs[49].gold)] + "\n\n";
  CHECK(r0.context.starts_with(first_shot));
  CHECK(r0.context.ends_with("\n\n" + cb.docs[0].text));
}

TEST_CASE("task loading errors name the task or file") {
  CHECK_THROWS_WITH_AS(load_task("rte", "x.jsonl"), doctest::Contains("sglue_rte"), mlr::Error);
  CHECK_THROWS_WITH_AS(load_task("record", "x.jsonl"), doctest::Contains("unknown task"), mlr::Error);
}

TEST_CASE("task loading errors on the shared files name the task or file" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(shared_data_present(), "../shared/data is absent");
  const Task no_pool = load_task("cb", superglue_file("cb"));
  CHECK_THROWS_WITH_AS(PromptBuilder(no_pool, 2), doctest::Contains("few-shot pool"), mlr::Error);
  // The unlabelled test split is rejected by the reader with the file and line.
  CHECK_THROWS_WITH_AS(load_task("cb", kData / "superglue" / "CB" / "test.jsonl"), doctest::Contains("test.jsonl"),
                       mlr::Error);
}
