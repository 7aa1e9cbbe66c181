// Readers on the real files of ../shared/data (counts from shared/data/SOURCES.md, skipped when
// absent) and on small hand-written files, malformed ones included: every bad row is an error
// naming the file and line, or with skip_bad a counted skip.
#include <map>
#include <random>
#include <set>

#include "data/csv.h"
#include "data/readers.h"
#include "data/text.h"
#include "tests/data/data_test_util.h"

using namespace mlr::data;
using namespace mlr::data::test;

namespace {

std::string field(const Record& r, const char* name) {
  const std::string* v = r.field(name);
  REQUIRE_MESSAGE(v != nullptr, "record has no field " << name);
  return *v;
}

std::map<int, int> label_counts(const ReadResult& r) {
  std::map<int, int> counts;
  for (const auto& rec : r.records) ++counts[rec.label];
  return counts;
}

}  // namespace

TEST_CASE("readers: real SuperGLUE and BoolQ validation files" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(shared_data_present(), "../shared/data is absent");
  const fs::path d = kSharedData;

  const ReadResult boolq = read_records(Format::boolq, d / "boolq" / "val.jsonl");
  CHECK(boolq.records.size() == 3270);
  CHECK(label_counts(boolq) == std::map<int, int>{{0, 1237}, {1, 2033}});
  CHECK(field(boolq.records[0], "question") == "does ethanol take more energy make that produces");
  CHECK(field(boolq.records[0], "passage").rfind("Ethanol fuel -- All biomass goes through", 0) == 0);
  CHECK(boolq.records[0].label == 0);
  CHECK(boolq.records[0].line == 1);
  CHECK(boolq.records[3269].line == 3270);

  const ReadResult cb = read_records(Format::cb, d / "superglue" / "CB" / "val.jsonl");
  CHECK(cb.records.size() == 56);
  CHECK(label_counts(cb) == std::map<int, int>{{0, 23}, {1, 28}, {2, 5}});
  CHECK(field(cb.records[0], "hypothesis") == "Valence was helping");
  CHECK(cb.records[0].label == 1);  // contradiction

  const ReadResult copa = read_records(Format::copa, d / "superglue" / "COPA" / "val.jsonl");
  CHECK(copa.records.size() == 100);
  CHECK(label_counts(copa) == std::map<int, int>{{0, 55}, {1, 45}});
  CHECK(field(copa.records[0], "premise") == "The man turned on the faucet.");
  CHECK(field(copa.records[0], "connector") == "therefore");
  CHECK(copa.records[0].label == 1);

  const ReadResult rte = read_records(Format::rte, d / "superglue" / "RTE" / "val.jsonl");
  CHECK(rte.records.size() == 277);
  CHECK(label_counts(rte) == std::map<int, int>{{0, 146}, {1, 131}});
  CHECK(field(rte.records[0], "hypothesis") == "Christopher Reeve had an accident.");
  CHECK(rte.records[0].label == 1);

  const ReadResult wic = read_records(Format::wic, d / "superglue" / "WiC" / "val.jsonl");
  CHECK(wic.records.size() == 638);
  CHECK(label_counts(wic) == std::map<int, int>{{0, 319}, {1, 319}});
  CHECK(field(wic.records[0], "sentence1_word") == "class");
  CHECK(wic.records[0].label == 0);

  const ReadResult wsc = read_records(Format::wsc, d / "superglue" / "WSC" / "val.jsonl");
  CHECK(wsc.records.size() == 104);
  CHECK(label_counts(wsc) == std::map<int, int>{{0, 66}, {1, 38}});
  CHECK(field(wsc.records[0], "passage") ==
        "Bernard, who had not told the government official that he was less than 21 when he filed for a homestead "
        "claim, did not consider that he had done anything dishonest. Still, anyone who knew that he was 19 years "
        "old could take his claim away from *him*.");
  // Row 6 has span1_text "The table" where the text says "the table": fixed as wsc.fixed does.
  CHECK(field(wsc.records[5], "span1_text") == "the table");

  const ReadResult multirc = read_records(Format::multirc, d / "superglue" / "MultiRC" / "val.jsonl");
  CHECK(multirc.records.size() == 4848);  // 83 passages, 953 questions, 4848 answer options
  CHECK(field(multirc.records[0], "paragraph").rfind("What causes a change in motion?", 0) == 0);
  CHECK(multirc.records[0].line == 1);
  CHECK(multirc.records.back().line == 83);
}

TEST_CASE("readers: real MMLU splits" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(shared_data_present(), "../shared/data is absent");
  const fs::path d = kSharedData / "mmlu";
  const ReadResult test = read_records(Format::mmlu, d / "test");
  CHECK(test.records.size() == 14042);
  CHECK(test.files.size() == 57);
  std::set<std::string> subjects;
  for (const auto& r : test.records) subjects.insert(field(r, "subject"));
  CHECK(subjects.size() == 57);
  CHECK(subjects.count("high school us history") == 1);
  const Record& first = test.records[0];
  CHECK(field(first, "subject") == "abstract algebra");
  CHECK(field(first, "question") == "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.");
  CHECK(field(first, "A") == "0");
  CHECK(field(first, "D") == "6");
  CHECK(field(first, "answer") == "B");
  CHECK(first.label == 1);
  // Python's csv keeps a stray quote in an unquoted field (val/college_medicine_val.csv row 6).
  const ReadResult val = read_records(Format::mmlu, d / "val" / "college_medicine_val.csv");
  REQUIRE(val.records.size() == 22);
  CHECK(field(val.records[5], "question") ==
        "Which of the following would be the most accurate definition of Nietzsche\u2019s Will to Truth?\"");
  // A quoted field with a comma: "0,1" is one choice.
  CHECK(field(test.records[2], "C") == "0,1");

  CHECK(read_records(Format::mmlu, d / "dev").records.size() == 285);
  CHECK(read_records(Format::mmlu, d / "val").records.size() == 1531);
}

TEST_CASE("readers: real Alpaca files" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(shared_data_present(), "../shared/data is absent");
  const fs::path d = kSharedData / "alpaca";
  const ReadResult subset = read_records(Format::alpaca, d / "alpaca_data_5000_subset.json");
  CHECK(subset.records.size() == 5000);
  const Record& first = subset.records[0];
  CHECK(field(first, "instruction") == "Are the two sentences below grammatically correct? Output yes or no.");
  CHECK(field(first, "input") == "Sentence 1: I am going to the store.\nSentence 2: I goes to the store.");
  CHECK(field(first, "output") == "No");
  int empty_inputs = 0;
  for (const auto& r : subset.records) empty_inputs += field(r, "input").empty();
  CHECK(empty_inputs == 3057);

  CHECK(read_records(Format::alpaca, d / "llamafactory_alpaca_en_demo.json").records.size() == 999);

  // The seed tasks are not Alpaca rows (their outputs sit in "instances"): line 1 is named.
  const std::string error = error_of([&] { read_records(Format::alpaca, d / "seed_tasks.jsonl"); });
  CHECK(error.find("seed_tasks.jsonl:1: field \"output\" is missing") != std::string::npos);
  const ReadResult skipped = read_records(Format::alpaca, d / "seed_tasks.jsonl", {.skip_bad = true});
  CHECK(skipped.records.empty());
  CHECK(skipped.n_bad == 175);
}

TEST_CASE("readers: unlabelled test splits cannot be trained on" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(shared_data_present(), "../shared/data is absent");
  const std::string error = error_of([&] { read_records(Format::boolq, kSharedData / "boolq" / "test.jsonl"); });
  CHECK(error.find("test.jsonl:1: field \"label\" is missing (an unlabelled split") != std::string::npos);
}

TEST_CASE("readers: hand-written JSONL rows of every generative format") {
  TempDir tmp;
  const auto alpaca = tmp.write("a.jsonl",
                                "{\"instruction\": \"Say hi\", \"output\": \"hi\"}\n"
                                "\n"
                                "{\"instruction\": \"Add\", \"input\": \"1+1\", \"output\": \"2\"}\r\n");
  const ReadResult a = read_records(Format::alpaca, alpaca);
  REQUIRE(a.records.size() == 2);
  CHECK(field(a.records[0], "input").empty());
  CHECK(a.records[1].line == 3);  // the blank line is counted, not read
  CHECK(field(a.records[1], "input") == "1+1");

  const auto pc = tmp.write("pc.jsonl", "{\"prompt\": \"2+2=\", \"completion\": \"4\"}\n");
  const ReadResult p = read_records(Format::prompt_completion, pc);
  REQUIRE(p.records.size() == 1);
  CHECK(field(p.records[0], "completion") == "4");

  const auto gsm = tmp.write("gsm.jsonl", "{\"question\": \"1+2?\", \"answer\": \"1+2=<<1+2=3>>3\\n#### 3\"}\n");
  const ReadResult g = read_records(Format::gsm8k, gsm);
  REQUIRE(g.records.size() == 1);
  CHECK(field(g.records[0], "answer") == "1+2=<<1+2=3>>3\n#### 3");

  const auto chat = tmp.write("chat.jsonl",
                              R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, )"
                              R"({"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}, )"
                              R"({"role": "assistant", "content": "Bye!"}]})"
                              "\n");
  const ReadResult c = read_records(Format::chat, chat);
  REQUIRE(c.records.size() == 1);
  REQUIRE(c.records[0].messages.size() == 5);
  CHECK(c.records[0].messages[4].content == "Bye!");
}

TEST_CASE("readers: malformed rows name the file and line; skip_bad counts them") {
  TempDir tmp;
  struct Case {
    Format format;
    std::string name, text, expected;  // expected: a substring of the error
  };
  const std::vector<Case> cases = {
      {Format::alpaca, "broken.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"a\", \"output\": }\n",
       "broken.jsonl:2: broken JSON at column"},
      {Format::alpaca, "missing.jsonl", "{\"instruction\": \"a\"}\n", "missing.jsonl:1: field \"output\" is missing"},
      {Format::alpaca, "type.jsonl", "{\"instruction\": \"a\", \"output\": 3}\n",
       "type.jsonl:1: field \"output\" is a number (3), expected a string"},
      {Format::prompt_completion, "notobject.jsonl", "[1, 2]\n", "notobject.jsonl:1: the row is array, expected a JSON object"},
      {Format::boolq, "label.jsonl",
       "{\"passage\": \"p\", \"question\": \"q\", \"label\": true}\n{\"passage\": \"p\", \"question\": \"q\", \"label\": \"maybe\"}\n",
       "label.jsonl:2: field \"label\" is a string (\"maybe\"), expected a boolean"},
      {Format::boolq, "label2.jsonl", "{\"passage\": \"p\", \"question\": \"q\", \"label\": 2}\n",
       "label2.jsonl:1: field \"label\" is a number (2), expected a boolean"},
      {Format::cb, "cb.jsonl", "{\"premise\": \"p\", \"hypothesis\": \"h\", \"label\": \"unsure\"}\n",
       "cb.jsonl:1: field \"label\" is a string (\"unsure\"), expected one of entailment, contradiction, neutral"},
      {Format::copa, "copa.jsonl",
       "{\"premise\": \"p.\", \"choice1\": \"a\", \"choice2\": \"b\", \"question\": \"why\", \"label\": 0}\n",
       "copa.jsonl:1: field \"question\" is \"why\", expected \"cause\" or \"effect\""},
      {Format::wic, "wic.jsonl",
       "{\"word\": \"w\", \"sentence1\": \"a w\", \"sentence2\": \"w b\", \"start1\": \"2\", \"end1\": 3, \"start2\": 0, "
       "\"end2\": 1, \"label\": false}\n",
       "wic.jsonl:1: field \"start1\" is a string (\"2\"), expected an integer"},
      {Format::alpaca, "utf8.jsonl", "{\"instruction\": \"ok\", \"output\": \"ok\"}\n{\"instruction\": \"caf\xe9\", \"output\": \"x\"}\n",
       "utf8.jsonl:2: not valid UTF-8 (byte 0xe9 at column 21)"},
      {Format::chat, "chat.jsonl", R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "x"}]})" "\n",
       "chat.jsonl:1: messages[1]: role \"bot\" is not one of system, user, assistant"},
      {Format::chat, "chat_end.jsonl", R"({"messages": [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "x"}]})" "\n",
       "chat_end.jsonl:1: the conversation ends with a \"user\" message"},
      {Format::multirc, "multirc.jsonl",
       R"({"passage": {"text": "t", "questions": [{"question": "q", "answers": [{"text": "a", "label": 1}, {"text": "b"}]}]}})" "\n",
       "multirc.jsonl:1: passage.questions[0]: answers[1]: field \"label\" is missing"},
      {Format::mmlu, "algebra_test.csv", "q,a,b,c,d,A\nq,a,b,c,d,E\n", "algebra_test.csv:2: answer \"E\" is not one of A, B, C, D"},
      {Format::mmlu, "fields_test.csv", "q,a,b,c,d\n", "fields_test.csv:1: the row has 5 fields, expected 6"},
      {Format::mmlu, "latin1_test.csv", "q,a,b,c,d,A\n\"multi\nline\",a,b,\xff,d,A\n",
       "latin1_test.csv:2: field 4 is not valid UTF-8 (byte 0xff"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const fs::path path = tmp.write(c.name, c.text);
    const std::string error = error_of([&] { read_records(c.format, path); });
    CHECK_MESSAGE(error.find(c.expected) != std::string::npos, error);
    CHECK(error.find(path.string()) != std::string::npos);
    // Skipping: every row but the bad one is kept, and the bad one is counted with its message.
    const ReadResult skipped = read_records(c.format, path, {.skip_bad = true});
    CHECK(skipped.n_bad == 1);
    REQUIRE(skipped.bad_messages.size() == 1);
    CHECK(skipped.bad_messages[0].find(c.expected) != std::string::npos);
    const size_t good_rows = c.name == "broken.jsonl" || c.name == "label.jsonl" || c.name == "utf8.jsonl" ||
                                     c.name == "algebra_test.csv" || c.name == "latin1_test.csv"
                                 ? 1
                                 : 0;
    CHECK(skipped.records.size() == good_rows);
  }
}

TEST_CASE("readers: Alpaca JSON arrays locate rows by the line where they start") {
  TempDir tmp;
  const auto path = tmp.write("a.json",
                              "[\n"
                              "  {\"instruction\": \"a\", \"output\": \"b\"},\n"
                              "  {\"instruction\": \"c\",\n"
                              "   \"output\": 7}\n"
                              "]\n");
  const std::string error = error_of([&] { read_records(Format::alpaca, path); });
  CHECK(error.find("a.json:3: field \"output\" is a number (7), expected a string") != std::string::npos);
  const ReadResult skipped = read_records(Format::alpaca, path, {.skip_bad = true});
  CHECK(skipped.records.size() == 1);
  CHECK(skipped.records[0].line == 2);
  CHECK(skipped.n_bad == 1);

  // A structural error in the array cannot be skipped: nothing after it can be trusted.
  const auto truncated = tmp.write("t.json", "[\n {\"instruction\": \"a\", \"output\": \"b\"},\n {\"instruction\": \"c\"");
  const std::string t_error = error_of([&] { read_records(Format::alpaca, truncated, {.skip_bad = true}); });
  CHECK(t_error.find("t.json:3: the JSON array is not closed before the end of the file") != std::string::npos);
}

TEST_CASE("readers: a directory is read in name order; an empty one is an error") {
  TempDir tmp;
  tmp.write("mmlu/b_subject_dev.csv", "q2,a,b,c,d,B\n");
  tmp.write("mmlu/a_subject_dev.csv", "q1,a,b,c,d,A\n");
  tmp.write("mmlu/notes.txt", "ignored");
  const ReadResult r = read_records(Format::mmlu, tmp.path / "mmlu");
  REQUIRE(r.records.size() == 2);
  CHECK(field(r.records[0], "subject") == "a subject");
  CHECK(field(r.records[1], "question") == "q2");
  CHECK(r.records[1].file == 1);
  fs::create_directories(tmp.path / "empty");
  CHECK(error_of([&] { read_records(Format::mmlu, tmp.path / "empty"); }).find("has no *.csv files") != std::string::npos);
  CHECK(error_of([&] { read_records(Format::boolq, tmp.path / "nope.jsonl"); }).find("nope.jsonl: no such file") !=
        std::string::npos);
  CHECK(error_of([] { parse_format("squad"); }).find("unknown dataset format 'squad' (known: alpaca,") != std::string::npos);
}

TEST_CASE("csv: RFC 4180 quoting, line counting and errors") {
  const auto rows = parse_csv("a,\"b,c\",\"d\"\"e\"\r\n\"multi\nline\",x\n\nlast,\"\"", "t.csv");
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].fields == std::vector<std::string>{"a", "b,c", "d\"e"});
  CHECK(rows[1].fields == std::vector<std::string>{"multi\nline", "x"});
  CHECK(rows[1].line == 2);
  CHECK(rows[2].line == 5);
  CHECK(rows[2].fields == std::vector<std::string>{"last", ""});
  CHECK(parse_csv("a,b\"c\n", "t.csv")[0].fields == std::vector<std::string>{"a", "b\"c"});  // as Python's csv
  CHECK(error_of([] { parse_csv("a\n\"open,b\n", "t.csv"); }).find("t.csv:2:1: quoted field is not closed") !=
        std::string::npos);
  CHECK(error_of([] { parse_csv("\"a\"b\n", "t.csv"); }).find("t.csv:1:4: unexpected character 'b' after the closing quote") !=
        std::string::npos);
}

TEST_CASE("text: Python string semantics") {
  CHECK(find_invalid_utf8("ok \xc3\xa9") == std::string_view::npos);
  CHECK(find_invalid_utf8("ab\xc0\xaf") == 2);      // overlong '/'
  CHECK(find_invalid_utf8("\xed\xa0\x80") == 0);    // a surrogate
  CHECK(find_invalid_utf8("x\xf4\x90\x80\x80") == 1);  // above U+10FFFF
  CHECK(utf8_slice("h\xc3\xa9llo", 1, 3) == "\xc3\xa9l");
  CHECK(utf8_slice("abc", 2, 10) == "c");
  CHECK(strip("\xc2\xa0 a b \n") == "a b");  // U+00A0 is whitespace to Python
  CHECK(drop_last("caf\xc3\xa9") == "caf");
  CHECK(lower_first("The") == "the");
  CHECK(general_detokenize("It is n't ( really ) \" so \" , is it .") == "It isn't (really)\"so\", is it.");
  CHECK(wsc_passage("Mark told Pete many lies about himself , which Pete included in his book .", 12, "his") ==
        "Mark told Pete many lies about himself, which Pete included in *his* book.");
}

TEST_CASE("readers: mutated files give mlr::Error or records, never anything else") {
  // Random byte flips, insertions and cuts of small valid files; each read either succeeds or
  // throws mlr::Error (run under ASan this also checks that no parser reads out of bounds).
  TempDir tmp;
  const std::vector<std::pair<Format, std::string>> seeds = {
      {Format::alpaca, "[\n {\"instruction\": \"a\\\"b\", \"input\": \"\", \"output\": \"c\"},\n {\"instruction\": \"d\", \"output\": \"e\"}\n]\n"},
      {Format::boolq, "{\"passage\": \"p \\u00e9\", \"question\": \"q\", \"label\": true}\n{\"passage\": \"p\", \"question\": \"q\", \"label\": \"False\"}\n"},
      {Format::mmlu, "\"q, \"\"x\"\"\",a,b,c,d,A\nq2,\"multi\nline\",b,c,d,D\n"},
      {Format::wsc, R"({"text": "Mark told Pete he lied .", "target": {"span1_index": 0, "span1_text": "Mark", "span2_index": 3, "span2_text": "he"}, "label": true})" "\n"},
  };
  std::mt19937 rng(1234);
  int errors = 0, reads = 0;
  for (const auto& [format, text] : seeds) {
    for (int trial = 0; trial < 400; ++trial) {
      std::string mutated = text;
      const int edits = 1 + static_cast<int>(rng() % 3);
      for (int e = 0; e < edits && !mutated.empty(); ++e) {
        const size_t at = rng() % mutated.size();
        switch (rng() % 3) {
          case 0: mutated[at] = static_cast<char>(rng() % 256); break;
          case 1: mutated.insert(at, 1, "\"{}[],:\\\n\xc3"[rng() % 12]); break;
          default: mutated.resize(at); break;
        }
      }
      const fs::path path = tmp.write(format == Format::mmlu ? "m_test.csv" : "f.jsonl", mutated);
      for (bool skip : {false, true}) {
        try {
          read_records(format, path, {.skip_bad = skip});
          ++reads;
        } catch (const mlr::Error& e) {
          ++errors;
          CHECK(std::string(e.what()).find(path.filename().string()) != std::string::npos);
        }
      }
    }
  }
  MESSAGE(reads << " reads succeeded, " << errors << " mlr::Errors");
  CHECK(errors > 0);
  CHECK(reads > 0);
}

TEST_CASE("readers: BoolQ labels as booleans, 0/1 or the strings \"true\"/\"false\" (the public files' form)") {
  TempDir tmp;
  const auto path = tmp.write("boolq.jsonl",
                              "{\"passage\": \"p\", \"question\": \"q\", \"label\": \"true\"}\n"
                              "{\"passage\": \"p\", \"question\": \"q\", \"label\": \"false\"}\n"
                              "{\"passage\": \"p\", \"question\": \"q\", \"label\": true}\n"
                              "{\"passage\": \"p\", \"question\": \"q\", \"label\": 0}\n");
  const ReadResult r = read_records(Format::boolq, path);
  REQUIRE(r.records.size() == 4);
  CHECK(r.records[0].label == 1);
  CHECK(r.records[1].label == 0);
  CHECK(r.records[2].label == 1);
  CHECK(r.records[3].label == 0);
}
