// Templates render exactly lm-evaluation-harness's zero-shot prompts (shared/EVAL_FORMATS.md §6)
// for the NLU and knowledge formats and the Stanford Alpaca prompt for instruction data. The
// expected strings are built here from the raw JSON/CSV rows, independently of the readers.
#include <nlohmann/json.hpp>

#include "data/readers.h"
#include "data/template.h"
#include "tests/data/data_test_util.h"

using namespace mlr::data;
using namespace mlr::data::test;
using nlohmann::json;

namespace {

Example render_first(Format format, const fs::path& path) {
  const ReadResult r = read_records(format, path);
  REQUIRE(!r.records.empty());
  const CompiledTemplate tmpl(default_template(format), format, std::string(format_name(format)));
  return tmpl.render(r.records[0], "first");
}

json first_json(const fs::path& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return json::parse(line);
}

Record make_record(std::vector<std::pair<std::string, std::string>> fields, int label = -1) {
  Record r;
  r.fields = std::move(fields);
  r.label = label;
  return r;
}

}  // namespace

TEST_CASE("templates: the harness prompts on the first row of each real file" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(shared_data_present(), "../shared/data is absent");
  const fs::path sg = kSharedData / "superglue";

  {
    const json row = first_json(kSharedData / "boolq" / "val.jsonl");
    const Example ex = render_first(Format::boolq, kSharedData / "boolq" / "val.jsonl");
    CHECK(ex.prompt == row["passage"].get<std::string>() + "\nQuestion: " + row["question"].get<std::string>() + "?\nAnswer:");
    CHECK(ex.choices == std::vector<std::string>{" no", " yes"});
    CHECK(ex.gold == 0);
    CHECK(ex.target == " no");
  }
  {
    const json row = first_json(sg / "CB" / "val.jsonl");
    const Example ex = render_first(Format::cb, sg / "CB" / "val.jsonl");
    CHECK(ex.prompt == row["premise"].get<std::string>() + "\nQuestion: Valence was helping. True, False, or Neither?\nAnswer:");
    CHECK(ex.choices == std::vector<std::string>{" True", " False", " Neither"});
    CHECK(ex.target == " False");  // contradiction
  }
  {
    const Example ex = render_first(Format::copa, sg / "COPA" / "val.jsonl");
    CHECK(ex.prompt == "The man turned on the faucet therefore");
    // The choice's own space plus the target delimiter: two spaces (EVAL_FORMATS.md §7.2).
    CHECK(ex.choices == std::vector<std::string>{"  the toilet filled with water.", "  water flowed from the spout."});
    CHECK(ex.target == "  water flowed from the spout.");
  }
  {
    const json row = first_json(sg / "RTE" / "val.jsonl");
    const Example ex = render_first(Format::rte, sg / "RTE" / "val.jsonl");
    CHECK(ex.prompt == row["premise"].get<std::string>() + "\nQuestion: Christopher Reeve had an accident. True or False?\nAnswer:");
    CHECK(ex.target == " False");  // not_entailment
  }
  {
    const Example ex = render_first(Format::wic, sg / "WiC" / "val.jsonl");
    CHECK(ex.prompt ==
          "Sentence 1: An emerging professional class.\nSentence 2: Apologizing for losing your temper, even though you "
          "were badly provoked, showed real class.\nQuestion: Is the word 'class' used in the same way in the two "
          "sentences above?\nAnswer:");
    CHECK(ex.choices == std::vector<std::string>{" no", " yes"});
    CHECK(ex.target == " no");
  }
  {
    const Example ex = render_first(Format::wsc, sg / "WSC" / "val.jsonl");
    CHECK(ex.prompt ==
          "Passage: Bernard, who had not told the government official that he was less than 21 when he filed for a "
          "homestead claim, did not consider that he had done anything dishonest. Still, anyone who knew that he was 19 "
          "years old could take his claim away from *him*.\nQuestion: In the passage above, does the pronoun \"*him*\" "
          "refer to \"*anyone*\"?\nAnswer:");
    CHECK(ex.target == " no");
  }
  {
    const json row = first_json(sg / "MultiRC" / "val.jsonl");
    const Example ex = render_first(Format::multirc, sg / "MultiRC" / "val.jsonl");
    CHECK(ex.prompt == row["passage"]["text"].get<std::string>() +
                           "\nQuestion: Would the mass of a baseball affect how much force you have to use to pick it up?\nAnswer:");
    CHECK(ex.choices == std::vector<std::string>{" No\nIs the answer correct? yes", " No\nIs the answer correct? no"});
    // label 0 (the answer "No" is wrong) -> gold index 0 -> "...? yes": the harness's inverted mapping.
    CHECK(ex.target == " No\nIs the answer correct? yes");
  }
  {
    const Example ex = render_first(Format::mmlu, kSharedData / "mmlu" / "test" / "abstract_algebra_test.csv");
    CHECK(ex.prompt ==
          "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
          "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:");
    CHECK(ex.choices == std::vector<std::string>{" A", " B", " C", " D"});
    CHECK(ex.target == " B");
  }
  {
    const Example ex = render_first(Format::alpaca, kSharedData / "alpaca" / "alpaca_data_5000_subset.json");
    CHECK(ex.prompt ==
          "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
          "response that appropriately completes the request.\n\n### Instruction:\nAre the two sentences below "
          "grammatically correct? Output yes or no.\n\n### Input:\nSentence 1: I am going to the store.\nSentence 2: I "
          "goes to the store.\n\n### Response:\n");
    CHECK(ex.target == "No");
    CHECK(ex.gold == -1);
    CHECK(ex.choices.empty());
  }
}

TEST_CASE("templates: Alpaca without input, MMLU strips only the question, GSM8K") {
  const CompiledTemplate alpaca(default_template(Format::alpaca), Format::alpaca, "alpaca");
  const Example a = alpaca.render(make_record({{"instruction", "Name a color."}, {"input", ""}, {"output", "Blue."}}), "x");
  CHECK(a.prompt ==
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nName a color.\n\n### Response:\n");
  CHECK(a.target == "Blue.");

  const CompiledTemplate mmlu(default_template(Format::mmlu), Format::mmlu, "mmlu");
  const Example m = mmlu.render(make_record({{"question", "  What?\n"}, {"A", " a "}, {"B", "b"}, {"C", "c"}, {"D", "d"},
                                             {"answer", "D"}, {"subject", "world religions"}},
                                            3),
                                "x");
  CHECK(m.prompt ==
        "The following are multiple choice questions (with answers) about world religions.\n\nWhat?\nA.  a \nB. b\nC. c\nD. d\nAnswer:");
  CHECK(m.target == " D");

  const CompiledTemplate gsm(default_template(Format::gsm8k), Format::gsm8k, "gsm8k");
  const Example g = gsm.render(make_record({{"question", "1+1?"}, {"answer", "2\n#### 2"}}), "x");
  CHECK(g.prompt == "Question: 1+1?\nAnswer:");
  CHECK(g.target == " 2\n#### 2");
}

TEST_CASE("templates: chat turns, every assistant message a target") {
  const CompiledTemplate chat(default_template(Format::chat), Format::chat, "chat");
  Record r;
  r.messages = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}, {"user", "Bye"}, {"assistant", "Bye!"}};
  const Example ex = chat.render(r, "x");
  REQUIRE(ex.history.size() == 1);
  CHECK(ex.history[0].prompt == "Be brief.\n\n### Instruction:\nHi\n\n### Response:\n");
  CHECK(ex.history[0].target == "Hello");
  CHECK(ex.prompt == "\n\n### Instruction:\nBye\n\n### Response:\n");
  CHECK(ex.target == "Bye!");
}

TEST_CASE("templates: custom templates, sections and filters") {
  Template t;
  t.prompt = "{{#input}}[{{input|strip|upper_first}}] {{/input}}{{^input}}(none) {{/input}}{{instruction|rstrip|drop_last}}";
  t.target = "{{output|lower_first}}";
  t.target_delimiter = " => ";
  const CompiledTemplate tmpl(t, Format::alpaca, "custom");
  CHECK(tmpl.render(make_record({{"instruction", "Do it!  "}, {"input", "  hello "}, {"output", "Done"}}), "x").prompt ==
        "[Hello] Do it");
  const Example e = tmpl.render(make_record({{"instruction", "Go."}, {"input", ""}, {"output", "OK"}}), "x");
  CHECK(e.prompt == "(none) Go");
  CHECK(e.target == " => oK");
}

TEST_CASE("templates: errors name the dataset, the key and the problem") {
  const auto compile = [](std::string prompt, Format format = Format::boolq) {
    Template t = default_template(format);
    t.prompt = std::move(prompt);
    return error_of([&] { CompiledTemplate(t, format, "mine"); });
  };
  CHECK(compile("{{pasage}}").find("dataset 'mine': template prompt: unknown field {{pasage}}; this format provides passage, "
                                   "question, label") != std::string::npos);
  CHECK(compile("{{passage|upper}}").find("unknown filter 'upper' (known: strip, rstrip, drop_last, lower_first, upper_first)") !=
        std::string::npos);
  CHECK(compile("{{#passage}}x").find("{{#passage}} is not closed by {{/passage}}") != std::string::npos);
  CHECK(compile("x{{/passage}}").find("{{/passage}} closes no section") != std::string::npos);
  CHECK(compile("{{passage").find("'{{' without a closing '}}'") != std::string::npos);

  Template no_target;
  no_target.prompt = "{{instruction}}";
  CHECK(error_of([&] { CompiledTemplate(no_target, Format::alpaca, "mine"); }).find("neither 'target' nor 'choices'") !=
        std::string::npos);

  // A label with no choice (a two-choice template on a three-class record).
  Template two = default_template(Format::cb);
  two.choices.resize(2);
  const CompiledTemplate tmpl(two, Format::cb, "cb2");
  const std::string error =
      error_of([&] { tmpl.render(make_record({{"premise", "p"}, {"hypothesis", "h"}, {"label", "neutral"}}, 2), "cb.jsonl:7"); });
  CHECK(error.find("data: cb.jsonl:7: label 2 has no choice in the template (2 choices)") != std::string::npos);
}
