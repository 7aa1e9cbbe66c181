// The demo's data generator and tokenizer trainer: the files are in the formats our readers and
// the evaluator take, the splits are disjoint in what must be generalised, the same seed gives the
// same bytes, and the learned tokenizer loads and round-trips the corpus.
#include <fstream>
#include <set>
#include <sstream>

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <unistd.h>

#include "data/readers.h"
#include "demo/bpe_trainer.h"
#include "demo/world.h"
#include "eval/task_registry.h"
#include "eval/tasks/mmlu.h"
#include "llama/tokenizer.h"

namespace fs = std::filesystem;
using namespace mlr;
using namespace mlr::demo;

namespace {

const DatasetSizes kSmall{.people = 20, .heldout_people = 0.25, .categories_train = 40, .categories_test = 16, .counting_train = 50, .counting_test = 20,
                          .pretrain_documents = 200};

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / ("mlr_demo_test_" + name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string field(const data::Record& r, const char* name) {
  const std::string* v = r.field(name);
  REQUIRE_MESSAGE(v != nullptr, "record has no field " << name);
  return *v;
}

const FamilyFiles& family(const DatasetFiles& d, const std::string& name) {
  for (const FamilyFiles& f : d.families)
    if (f.name == name) return f;
  FAIL("no family " << name);
  throw;
}

std::vector<data::Record> records(data::Format format, const fs::path& p) { return data::read_records(format, p).records; }

// The text of `field` for every record.
std::set<std::string> values(const std::vector<data::Record>& rs, const char* name) {
  std::set<std::string> out;
  for (const auto& r : rs) out.insert(field(r, name));
  return out;
}

}  // namespace

TEST_CASE("demo data: every split reads with our readers, in the sizes asked") {
  TempDir dir("formats");
  const World world = make_world(3, kSmall.people);
  const DatasetFiles d = write_dataset(world, dir.path, 3, kSmall);
  REQUIRE(d.families.size() == 4);

  // Traits: 2 questions x 2 passages per person, 15 training and 5 held-out people.
  const auto traits_train = records(data::Format::boolq, family(d, "traits").train);
  CHECK(traits_train.size() == 60);
  CHECK(family(d, "traits").n_train == 60);
  CHECK(records(data::Format::boolq, family(d, "traits").test).size() == 20);
  int yes = 0;
  for (const auto& r : traits_train) yes += r.label;
  CHECK(yes > 10);  // both answers occur
  CHECK(yes < 50);

  const auto categories_test = records(data::Format::mmlu, family(d, "categories").test);
  CHECK(categories_test.size() == 16);
  CHECK(field(categories_test[0], "subject") == "word categories");
  CHECK(records(data::Format::alpaca, family(d, "counting").train).size() == 50);
  const auto people_test = records(data::Format::mmlu, family(d, "people").test);
  CHECK(people_test.size() == 2 * 5);  // 25% of 20 people, two questions each
  CHECK(family(d, "people").n_test == 10);
  for (const auto& r : people_test) CHECK(r.label >= 0);

  // The evaluator takes them: BoolQ through its registered task, MMLU through load_mmlu_csv.
  const auto boolq = eval::find_task("boolq").load("boolq", eval::TaskFiles{family(d, "traits").test, std::nullopt});
  REQUIRE(boolq.size() == 1);
  CHECK(boolq[0].docs.size() == 20);
  CHECK(boolq[0].docs[0].choices == std::vector<std::string>{"no", "yes"});
  const eval::Task people = eval::load_mmlu_csv("people", family(d, "people").test, family(d, "people").dev);
  CHECK(people.docs.size() == 10);
  CHECK(people.config.description == "The following are multiple choice questions (with answers) about people.\n\n");
  CHECK(people.docs[0].text.find("\nA. ") != std::string::npos);

  // The pretraining corpus: prompt/completion rows with empty prompts.
  const auto corpus = records(data::Format::prompt_completion, d.pretrain_corpus);
  CHECK(static_cast<int64_t>(corpus.size()) == d.pretrain_documents);
  CHECK(field(corpus[0], "prompt").empty());
}

TEST_CASE("demo data: train and held-out splits are disjoint in what must be generalised") {
  TempDir dir("splits");
  const World world = make_world(5, kSmall.people);
  const DatasetFiles d = write_dataset(world, dir.path, 5, kSmall);
  auto counted = [&](const fs::path& p) { return values(records(data::Format::alpaca, p), "instruction"); };
  const auto count_train = counted(family(d, "counting").train), count_test = counted(family(d, "counting").test);
  CHECK(count_train.size() == 50);
  for (const auto& q : count_test) CHECK_MESSAGE(!count_train.count(q), q);

  // Categories: the correct word of a held-out question is never correct in training.
  auto correct_words = [&](const fs::path& p) {
    std::set<std::string> out;
    for (const auto& r : records(data::Format::mmlu, p)) out.insert(field(r, std::string(1, "ABCD"[r.label]).c_str()));
    return out;
  };
  const auto word_train = correct_words(family(d, "categories").train);
  for (const auto& w : correct_words(family(d, "categories").test)) CHECK_MESSAGE(!word_train.count(w), w);
  // ... nor offered as a distractor: a held-out question shows held-out words only, so "pick the
  // word that was an answer in training" cannot score below (or above) chance.
  for (const auto& r : records(data::Format::mmlu, family(d, "categories").test))
    for (const char* option : {"A", "B", "C", "D"}) CHECK_MESSAGE(!word_train.count(field(r, option)), field(r, option));

  // People: held-out questions are about people no training question names; their facts are in
  // the pretraining corpus.
  auto people_in = [&](const fs::path& p, data::Format format = data::Format::mmlu) {
    std::set<std::string> out;
    for (const Person& person : world.people)
      for (const auto& q : values(records(format, p), "question"))
        if (q.find(" " + person.name + " ") != std::string::npos || q.find(" " + person.name + "?") != std::string::npos)
          out.insert(person.name);
    return out;
  };
  const auto people_train = people_in(family(d, "people").train), people_test = people_in(family(d, "people").test);
  CHECK(people_test.size() == 5);
  for (const auto& p : people_test) {
    CHECK_MESSAGE(!people_train.count(p), p);
    CHECK_MESSAGE(d.pretrain_text.find(p + " ") != std::string::npos, p);
  }
  // Traits ask about the same split of people: a held-out trait question names a held-out person.
  CHECK(people_in(family(d, "traits").train, data::Format::boolq) == people_train);
  CHECK(people_in(family(d, "traits").test, data::Format::boolq) == people_test);
}

TEST_CASE("demo data: the pretraining corpus states every asked fact and asks no family's question") {
  TempDir dir("corpus");
  DatasetSizes sizes = kSmall;
  sizes.pretrain_documents = 4000;  // enough that every fact comes up
  const World world = make_world(4, sizes.people);
  const DatasetFiles d = write_dataset(world, dir.path, 4, sizes);
  std::string corpus;
  for (const auto& r : records(data::Format::prompt_completion, d.pretrain_corpus)) corpus += field(r, "completion") + "\n";
  CHECK(corpus.find("Question:") == std::string::npos);
  CHECK(corpus.find("Answer:") == std::string::npos);
  for (const Person& p : world.people) {
    CHECK_MESSAGE(corpus.find(fmt::format("{} {} swim.", p.name, p.swims ? "can" : "cannot")) != std::string::npos, p.name);
    CHECK_MESSAGE(corpus.find(p.name + (p.owns_boat ? " owns a boat." : " has no boat.")) != std::string::npos, p.name);
    CHECK_MESSAGE(corpus.find(p.name + " lives in " + p.city + ".") != std::string::npos, p.name);
  }
  for (size_t c = 0; c < world.categories.size(); ++c)
    for (const auto& word : world.category_words[c])
      CHECK_MESSAGE(corpus.find(" " + word + " is ") != std::string::npos, word);
}

TEST_CASE("demo data: the same seed writes the same bytes, another seed other data") {
  TempDir a("seed_a"), b("seed_b"), c("seed_c");
  const DatasetFiles da = write_dataset(make_world(7, kSmall.people), a.path, 7, kSmall);
  const DatasetFiles db = write_dataset(make_world(7, kSmall.people), b.path, 7, kSmall);
  const DatasetFiles dc = write_dataset(make_world(8, kSmall.people), c.path, 8, kSmall);
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(a.path)) {
    if (!entry.is_regular_file()) continue;
    const fs::path rel = fs::relative(entry.path(), a.path);
    CHECK_MESSAGE(read_file(entry.path()) == read_file(b.path / rel), rel.string());
    ++files;
  }
  CHECK(files == 11);  // 2 + 2 + 6 (MMLU train/test/dev x 2) + the corpus
  CHECK(read_file(family(da, "people").test) != read_file(family(dc, "people").test));
  CHECK(read_file(da.pretrain_corpus) != read_file(dc.pretrain_corpus));
}

TEST_CASE("demo tokenizer: the learned byte-level BPE loads, round-trips and spells numbers digit by digit") {
  TempDir dir("tokenizer");
  const DatasetFiles d = write_dataset(make_world(1, kSmall.people), dir.path / "data", 1, kSmall);
  const BpeTokenizerInfo info = train_byte_level_bpe(d.pretrain_text, 420, dir.path / "tok");
  CHECK(info.vocab_size <= 420);
  CHECK(info.merges > 50);
  CHECK(info.eos_id == info.vocab_size - 1);
  const auto tok = load_tokenizer((dir.path / "tok").string());
  CHECK(tok->vocab_size() == info.vocab_size);
  REQUIRE(tok->eos_id().has_value());
  CHECK(*tok->eos_id() == info.eos_id);
  std::istringstream lines(d.pretrain_text);
  std::string line;
  int checked = 0;
  while (std::getline(lines, line) && checked < 300) {
    const auto ids = tok->encode(line);
    CHECK_MESSAGE(tok->decode(ids) == line, line);
    ++checked;
  }
  // Frequent words are one token; numbers one token per digit.
  CHECK(tok->encode("Answer").size() == 1);
  CHECK(tok->encode("What number comes after 347?").size() >= 7);
  const auto digits = tok->encode(" 347");
  CHECK(tok->decode({digits.end() - 3, digits.end()}) == "347");
  CHECK(tok->encode("<|endoftext|>") == std::vector<int32_t>{static_cast<int32_t>(info.eos_id)});
  // The same text gives the same files.
  train_byte_level_bpe(d.pretrain_text, 420, dir.path / "tok2");
  CHECK(read_file(dir.path / "tok/tokenizer.json") == read_file(dir.path / "tok2/tokenizer.json"));
}
