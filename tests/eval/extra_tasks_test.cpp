// ARC, HellaSwag, PIQA and Winogrande on small hand-made files in the Hugging Face row layout. The
// expected requests (1-shot, few-shot pool = the train file) are those lm-evaluation-harness 0.4.13
// built for the same rows (its YAMLs with dataset_path "json"), written out here: they exercise
// the HellaSwag preprocessing ([title], [tags], double spaces, capitalize), ARC's test split with
// a plain n-shot draw, and Winogrande's per-option contexts with a shared continuation.
#include <doctest/doctest.h>

#include "tests/test_support.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "eval/task.h"
#include "eval/tasks.h"
#include "eval/tasks/hellaswag.h"
#include "tensor/error.h"

namespace fs = std::filesystem;
using namespace mlr::eval;

namespace {


struct Expected {
  std::vector<std::pair<std::string, std::string>> requests;
  int gold;
};

const std::string k_arc_val =
    "{\"id\": \"Mercury_7175875\", \"question\": \"An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most likely effect of this increase in rotation?\", \"choices\": {\"text\": [\"Planetary density will decrease.\", \"Planetary years will become longer.\", \"Planetary days will become shorter.\", \"Planetary gravity will become stronger.\"], \"label\": [\"A\", \"B\", \"C\", \"D\"]}, \"answerKey\": \"C\"}\n"
    "{\"id\": \"NYSEDREGENTS_2015_4_8\", \"question\": \"Which tool is used to measure the mass of a rock?\", \"choices\": {\"text\": [\"balance\", \"ruler\", \"thermometer\"], \"label\": [\"1\", \"2\", \"3\"]}, \"answerKey\": \"1\"}\n";
const std::string k_arc_train =
    "{\"id\": \"t1\", \"question\": \"Which gas do plants take in?\", \"choices\": {\"text\": [\"oxygen\", \"carbon dioxide\"], \"label\": [\"A\", \"B\"]}, \"answerKey\": \"B\"}\n"
    "{\"id\": \"t2\", \"question\": \"What melts ice?\", \"choices\": {\"text\": [\"heat\", \"cold\", \"dark\"], \"label\": [\"A\", \"B\", \"C\"]}, \"answerKey\": \"A\"}\n"
    "{\"id\": \"t3\", \"question\": \"Which is a mammal?\", \"choices\": {\"text\": [\"shark\", \"whale\", \"trout\", \"eel\"], \"label\": [\"A\", \"B\", \"C\", \"D\"]}, \"answerKey\": \"B\"}\n";
const std::string k_hellaswag_val =
    "{\"ind\": 4, \"activity_label\": \"Removing ice from car\", \"ctx_a\": \"Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes smiles.\", \"ctx_b\": \"then\", \"endings\": [\", the man adds wax to the windshield and cuts it.\", \", a person board a ski lift, while two men supporting the head of the person wearing winter clothes snow as the we girls sled.\", \", the man puts on a christmas coat, knitted with netting.\", \", the man continues removing the snow on his car.\"], \"label\": \"3\"}\n"
    "{\"ind\": 7, \"activity_label\": \"Home and Garden\", \"ctx_a\": \"[header] How to clean a BBQ grill [title] Turn off the Gas.\", \"ctx_b\": \"Remove The grates  FIRST.\", \"endings\": [\"[step] Scrub  them [substeps] well.\", \" Soak them overnight. \", \"Use [a\\nb] brush\", \"Done [title] Next\"], \"label\": \"0\"}\n";
const std::string k_hellaswag_train =
    "{\"ind\": 1, \"activity_label\": \"Cooking\", \"ctx_a\": \"A chef slices onions.\", \"ctx_b\": \"He\", \"endings\": [\"puts them in a pan.\", \"eats the knife.\", \"sings.\", \"leaves.\"], \"label\": \"0\"}\n"
    "{\"ind\": 2, \"activity_label\": \"Running\", \"ctx_a\": \"A man runs.\", \"ctx_b\": \"He Stops\", \"endings\": [\"and drinks water.\", \"flies.\", \"melts.\", \"swims [title] away.\"], \"label\": \"0\"}\n"
    "{\"ind\": 3, \"activity_label\": \"Painting\", \"ctx_a\": \"A girl paints a fence.\", \"ctx_b\": \"she\", \"endings\": [\"uses a brush.\", \"eats paint.\", \"drives.\", \"sleeps.\"], \"label\": \"0\"}\n";
const std::string k_piqa_val =
    "{\"goal\": \"How do I ready a guinea pig cage for it's new occupants?\", \"sol1\": \"Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips, you will also need to supply it with a water bottle and a food dish.\", \"sol2\": \"Provide the guinea pig with a cage full of a few inches of bedding made of ripped jeans material, you will also need to supply it with a water bottle and a food dish.\", \"label\": 0}\n"
    "{\"goal\": \"To open a jar\", \"sol1\": \"twist the lid clockwise\", \"sol2\": \"twist the lid counterclockwise\", \"label\": 1}\n";
const std::string k_piqa_train =
    "{\"goal\": \"Keep bread fresh\", \"sol1\": \"store it in a sealed bag\", \"sol2\": \"store it in water\", \"label\": 0}\n"
    "{\"goal\": \"Dry wet shoes\", \"sol1\": \"put them in the freezer\", \"sol2\": \"stuff them with newspaper\", \"label\": 1}\n"
    "{\"goal\": \"Cool soup\", \"sol1\": \"stir it\", \"sol2\": \"boil it\", \"label\": 0}\n";
const std::string k_winogrande_val =
    "{\"sentence\": \"Sarah was a much better surgeon than Maria so _ always got the harder cases.\", \"option1\": \"Sarah\", \"option2\": \"Maria\", \"answer\": \"1\"}\n"
    "{\"sentence\": \"The trophy doesn't fit into the brown suitcase because the _'s too large.\", \"option1\": \"trophy\", \"option2\": \"suitcase\", \"answer\": \"1\"}\n";
const std::string k_winogrande_train =
    "{\"sentence\": \"Ian volunteered to eat Dennis's menudo after already having a bowl because _ despised eating intestine.\", \"option1\": \"Ian\", \"option2\": \"Dennis\", \"answer\": \"2\"}\n"
    "{\"sentence\": \"He never comes to my home, but I always go to his house because the _ is smaller.\", \"option1\": \"home\", \"option2\": \"house\", \"answer\": \"1\"}\n"
    "{\"sentence\": \"Kyle doesn't wear leg warmers to bed, while Logan almost always does. _ is more likely to live in a colder climate.\", \"option1\": \"Kyle\", \"option2\": \"Logan\", \"answer\": \"2\"}\n";
const std::vector<Expected> k_arc_easy_expected{
    {{
      {"Question: What melts ice?\nAnswer: heat\n\nQuestion: An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most likely effect of this increase in rotation?\nAnswer:",
       " Planetary density will decrease."},
      {"Question: What melts ice?\nAnswer: heat\n\nQuestion: An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most likely effect of this increase in rotation?\nAnswer:",
       " Planetary years will become longer."},
      {"Question: What melts ice?\nAnswer: heat\n\nQuestion: An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most likely effect of this increase in rotation?\nAnswer:",
       " Planetary days will become shorter."},
      {"Question: What melts ice?\nAnswer: heat\n\nQuestion: An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most likely effect of this increase in rotation?\nAnswer:",
       " Planetary gravity will become stronger."},
    }, 2},
    {{
      {"Question: Which gas do plants take in?\nAnswer: carbon dioxide\n\nQuestion: Which tool is used to measure the mass of a rock?\nAnswer:",
       " balance"},
      {"Question: Which gas do plants take in?\nAnswer: carbon dioxide\n\nQuestion: Which tool is used to measure the mass of a rock?\nAnswer:",
       " ruler"},
      {"Question: Which gas do plants take in?\nAnswer: carbon dioxide\n\nQuestion: Which tool is used to measure the mass of a rock?\nAnswer:",
       " thermometer"},
    }, 0},
};
const std::vector<Expected> k_hellaswag_expected{
    {{
      {"Running: A man runs. He stops and drinks water.\n\nRemoving ice from car: Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes smiles. Then",
       " , the man adds wax to the windshield and cuts it."},
      {"Running: A man runs. He stops and drinks water.\n\nRemoving ice from car: Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes smiles. Then",
       " , a person board a ski lift, while two men supporting the head of the person wearing winter clothes snow as the we girls sled."},
      {"Running: A man runs. He stops and drinks water.\n\nRemoving ice from car: Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes smiles. Then",
       " , the man puts on a christmas coat, knitted with netting."},
      {"Running: A man runs. He stops and drinks water.\n\nRemoving ice from car: Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes smiles. Then",
       " , the man continues removing the snow on his car."},
    }, 3},
    {{
      {"Cooking: A chef slices onions. He puts them in a pan.\n\nHome and Garden: How to clean a BBQ grill. Turn off the Gas. Remove the grates first.",
       "  Scrub them well."},
      {"Cooking: A chef slices onions. He puts them in a pan.\n\nHome and Garden: How to clean a BBQ grill. Turn off the Gas. Remove the grates first.",
       " Soak them overnight."},
      {"Cooking: A chef slices onions. He puts them in a pan.\n\nHome and Garden: How to clean a BBQ grill. Turn off the Gas. Remove the grates first.",
       " Use [a\nb] brush"},
      {"Cooking: A chef slices onions. He puts them in a pan.\n\nHome and Garden: How to clean a BBQ grill. Turn off the Gas. Remove the grates first.",
       " Done. Next"},
    }, 0},
};
const std::vector<Expected> k_piqa_expected{
    {{
      {"Question: Dry wet shoes\nAnswer: stuff them with newspaper\n\nQuestion: How do I ready a guinea pig cage for it's new occupants?\nAnswer:",
       " Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips, you will also need to supply it with a water bottle and a food dish."},
      {"Question: Dry wet shoes\nAnswer: stuff them with newspaper\n\nQuestion: How do I ready a guinea pig cage for it's new occupants?\nAnswer:",
       " Provide the guinea pig with a cage full of a few inches of bedding made of ripped jeans material, you will also need to supply it with a water bottle and a food dish."},
    }, 0},
    {{
      {"Question: Keep bread fresh\nAnswer: store it in a sealed bag\n\nQuestion: To open a jar\nAnswer:",
       " twist the lid clockwise"},
      {"Question: Keep bread fresh\nAnswer: store it in a sealed bag\n\nQuestion: To open a jar\nAnswer:",
       " twist the lid counterclockwise"},
    }, 1},
};
const std::vector<Expected> k_winogrande_expected{
    {{
      {"He never comes to my home, but I always go to his house because the home is smaller.\n\nSarah was a much better surgeon than Maria so Sarah",
       " always got the harder cases."},
      {"He never comes to my home, but I always go to his house because the home is smaller.\n\nSarah was a much better surgeon than Maria so Maria",
       " always got the harder cases."},
    }, 0},  // gold = doc_to_text: answer "1" -> 0
    {{
      {"Ian volunteered to eat Dennis's menudo after already having a bowl because Dennis despised eating intestine.\n\nThe trophy doesn't fit into the brown suitcase because the trophy",
       " 's too large."},
      {"Ian volunteered to eat Dennis's menudo after already having a bowl because Dennis despised eating intestine.\n\nThe trophy doesn't fit into the brown suitcase because the suitcase",
       " 's too large."},
    }, 0},
};

void check_task(const std::string& name, const fs::path& val, const fs::path& train, const std::vector<Expected>& expected) {
  CAPTURE(name);
  const Task task = load_task(name, val, train);
  REQUIRE(task.docs.size() == expected.size());
  PromptBuilder builder(task, 1);
  for (size_t d = 0; d < expected.size(); ++d) {
    CAPTURE(d);
    const RenderedDoc r = builder.render(task.docs[d]);
    REQUIRE(r.requests.size() == expected[d].requests.size());
    for (size_t i = 0; i < r.requests.size(); ++i) {
      CHECK(r.requests[i].context == expected[d].requests[i].first);
      CHECK(r.requests[i].continuation == expected[d].requests[i].second);
    }
    CHECK(task.docs[d].gold == expected[d].gold);
  }
}

}  // namespace

TEST_CASE("ARC, HellaSwag, PIQA, Winogrande: 1-shot requests match the harness") {
  TempDir dir;
  check_task("arc_easy", dir.write("arc_val.jsonl", k_arc_val), dir.write("arc_train.jsonl", k_arc_train), k_arc_easy_expected);
  check_task("hellaswag", dir.write("hs_val.jsonl", k_hellaswag_val), dir.write("hs_train.jsonl", k_hellaswag_train),
             k_hellaswag_expected);
  check_task("piqa", dir.write("piqa_val.jsonl", k_piqa_val), dir.write("piqa_train.jsonl", k_piqa_train), k_piqa_expected);
  check_task("winogrande", dir.write("wg_val.jsonl", k_winogrande_val), dir.write("wg_train.jsonl", k_winogrande_train),
             k_winogrande_expected);
  const Task arc = load_task("arc_challenge", dir.path / "arc_val.jsonl");
  CHECK(arc.config.dataset_name == "ARC-Challenge");
  CHECK(arc.config.eval_split() == "test");
  CHECK(!arc.config.draws_extra_shot());
}

TEST_CASE("HellaSwag preprocessing and capitalize") {
  // Values from the harness's hellaswag/utils.py preprocess().
  CHECK(hellaswag_preprocess("  [header] How to x [title] Do y.  ") == " How to x. Do y.");
  CHECK(hellaswag_preprocess("a [b\nc] d") == "a [b\nc] d");
  CHECK(hellaswag_preprocess("a   b") == "a  b");  // one pass of "  " -> " "
  CHECK(hellaswag_preprocess("x [y] [z]") == "x ");
  CHECK(python_capitalize("hELLO World") == "Hello world");
}

TEST_CASE("extra task files: malformed rows name the file and line") {
  TempDir dir;
  const auto bad_key = dir.write("bad_key.jsonl", R"({"question": "q", "choices": {"text": ["a"], "label": ["A"]}, "answerKey": "B"})" "\n");
  CHECK_THROWS_WITH_AS(load_task("arc_easy", bad_key), doctest::Contains("bad_key.jsonl:1: answerKey \"B\""), mlr::Error);
  const auto no_blank = dir.write("wg.jsonl", "\n" R"({"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"})" "\n");
  CHECK_THROWS_WITH_AS(load_task("winogrande", no_blank), doctest::Contains("wg.jsonl:2: field \"sentence\" has no"), mlr::Error);
  const auto broken = dir.write("piqa.jsonl", "{\"goal\": \n");
  CHECK_THROWS_WITH_AS(load_task("piqa", broken), doctest::Contains("piqa.jsonl:1:"), mlr::Error);
  const auto label = dir.write("hs.jsonl", R"({"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "endings": ["d"], "label": "x"})" "\n");
  CHECK_THROWS_WITH_AS(load_task("hellaswag", label), doctest::Contains("integer label"), mlr::Error);
  CHECK_THROWS_WITH_AS(load_task("lambada", label), doctest::Contains("unknown task"), mlr::Error);
}
