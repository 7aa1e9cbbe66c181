// The demo's world and dataset files (see world.h).
#include "demo/world.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/atomic_file.h"
#include "tensor/error.h"

namespace mlr::demo {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// SplitMix64: a fixed, portable stream (the standard distributions are implementation-defined, so
// the files would differ between standard libraries).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }
  template <typename T>
  const T& pick(const std::vector<T>& v) { return v[static_cast<size_t>(below(static_cast<int64_t>(v.size())))]; }
  template <typename T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[static_cast<size_t>(below(static_cast<int64_t>(i)))]);
  }

 private:
  uint64_t state_;
};

std::string capitalize(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

std::string article(const std::string& word) {
  return std::string("aeiou").find(word[0]) != std::string::npos ? "an" : "a";
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

struct Choice4 {
  std::string question;
  std::vector<std::string> options;  // 4
  int answer = 0;
};

std::string csv_rows(const std::vector<Choice4>& rows) {
  std::string out;
  for (const Choice4& r : rows) {
    out += csv_field(r.question);
    for (const auto& o : r.options) out += fmt::format(",{}", csv_field(o));
    out += fmt::format(",{}\n", static_cast<char>('A' + r.answer));
  }
  return out;
}

// Four options: the correct one and three distinct distractors, shuffled.
Choice4 four_way(Rng& rng, std::string question, const std::string& correct, const std::vector<std::string>& pool) {
  std::vector<std::string> wrong;
  for (const auto& w : pool)
    if (w != correct) wrong.push_back(w);
  rng.shuffle(wrong);
  MLR_CHECK(wrong.size() >= 3, "demo: fewer than 3 distractors for '{}'", correct);
  std::vector<std::string> options = {correct, wrong[0], wrong[1], wrong[2]};
  rng.shuffle(options);
  const int answer = static_cast<int>(std::find(options.begin(), options.end(), correct) - options.begin());
  return {std::move(question), std::move(options), answer};
}

// A yes/no row in BoolQ's fields.
struct YesNo {
  std::string passage, question;
  bool label = false;
};

std::string jsonl(const std::vector<json>& rows) {
  std::string out;
  for (const json& r : rows) out += r.dump() + "\n";
  return out;
}

void write(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  atomic_write_file(path.string(), text);
}

}  // namespace

World make_world(uint64_t seed, int64_t n_people) {
  Rng rng(seed);
  World w;
  w.cities = {"Karsil", "Dunmore", "Velhaven", "Ostrik", "Pellam", "Quorra", "Brindle", "Asteno"};
  w.jobs = {"baker", "farmer", "painter", "doctor", "sailor", "teacher", "miller", "tailor"};
  w.categories = {"fruit", "animal", "tool", "color"};
  w.category_words = {
      {"apple", "pear", "plum", "grape", "lemon", "mango", "peach", "cherry", "melon", "fig"},
      {"tiger", "horse", "rabbit", "wolf", "goat", "mouse", "eagle", "otter", "camel", "zebra"},
      {"hammer", "saw", "drill", "wrench", "chisel", "shovel", "rake", "axe", "spade", "ladder"},
      {"red", "blue", "green", "yellow", "purple", "brown", "black", "white", "pink", "gray"}};
  // Names from two syllables and an ending: 16 x 16 x 4 distinct made-up names.
  const std::vector<std::string> first = {"ta", "ro", "mi", "ve", "sa", "lo", "ke", "da",
                                          "bri", "no", "fe", "zu", "pa", "ri", "go", "wen"};
  const std::vector<std::string> second = {"vo", "ran", "li", "sen", "ko", "dra", "mi", "tas",
                                           "bel", "nor", "ga", "ri", "lun", "pe", "sto", "fa"};
  const std::vector<std::string> ending = {"", "n", "k", "l"};
  std::vector<std::string> names;
  for (const auto& a : first)
    for (const auto& b : second)
      for (const auto& e : ending) names.push_back(capitalize(a + b + e));
  rng.shuffle(names);
  MLR_CHECK(n_people >= 8 && n_people <= static_cast<int64_t>(names.size()), "demo: {} people: expected 8 to {}",
            n_people, names.size());
  for (int64_t i = 0; i < n_people; ++i) {
    Person p{names[static_cast<size_t>(i)], rng.pick(w.cities), rng.pick(w.jobs)};
    p.swims = rng.below(2) == 1;
    p.owns_boat = rng.below(2) == 1;
    w.people.push_back(std::move(p));
  }
  return w;
}

DatasetFiles write_dataset(const World& w, const fs::path& dir, uint64_t seed, const DatasetSizes& sizes) {
  Rng rng(seed ^ 0xD1B54A32D192ED03ull);
  DatasetFiles out;

  // Each category's words split 7 for training, 3 held out; held-out words appear in the
  // pretraining statements only.
  std::vector<std::vector<std::string>> train_words(w.categories.size()), test_words(w.categories.size());
  for (size_t c = 0; c < w.categories.size(); ++c) {
    std::vector<std::string> ws = w.category_words[c];
    rng.shuffle(ws);
    train_words[c].assign(ws.begin(), ws.begin() + 7);
    test_words[c].assign(ws.begin() + 7, ws.end());
  }

  // ---- categories: 4-way choice (MMLU CSV); held-out questions have held-out correct words ----
  // A split's distractors come from the same split's words: were held-out questions to offer
  // training words as distractors, "pick the word that was an answer before" would score below
  // chance, and the models learn that shortcut instead of the categories.
  auto category_split = [&](const std::vector<std::vector<std::string>>& split_words, int64_t n) {
    std::vector<Choice4> rows;
    for (int64_t i = 0; i < n; ++i) {
      const size_t c = static_cast<size_t>(i) % w.categories.size();
      std::vector<std::string> others;
      for (size_t o = 0; o < w.categories.size(); ++o)
        if (o != c) others.insert(others.end(), split_words[o].begin(), split_words[o].end());
      rows.push_back(four_way(rng, fmt::format("Which of these is {} {}?", article(w.categories[c]), w.categories[c]),
                              rng.pick(split_words[c]), others));
    }
    return rows;
  };
  const auto categories_train = category_split(train_words, sizes.categories_train);
  const auto categories_test = category_split(test_words, sizes.categories_test);
  FamilyFiles categories{"categories", "4-way choice", "mmlu", dir / "mmlu/train/word_categories_train.csv",
                         dir / "mmlu/test/word_categories_test.csv", dir / "mmlu/dev/word_categories_dev.csv", 0.25,
                         sizes.categories_train, sizes.categories_test};
  write(categories.train, csv_rows(categories_train));
  write(categories.test, csv_rows(categories_test));
  write(categories.dev, csv_rows({categories_train.begin(), categories_train.begin() + 5}));

  // ---- counting: generation (Alpaca JSON), disjoint numbers ----
  std::vector<int64_t> numbers;
  for (int64_t n = 100; n < 999; ++n) numbers.push_back(n);
  rng.shuffle(numbers);
  MLR_CHECK(sizes.counting_train + sizes.counting_test <= static_cast<int64_t>(numbers.size()),
            "demo: at most {} counting examples", numbers.size());
  auto counting_json = [&](size_t from, int64_t n) {
    json rows = json::array();
    for (size_t i = from; i < from + static_cast<size_t>(n); ++i)
      rows.push_back({{"instruction", fmt::format("What number comes after {}?", numbers[i])},
                      {"input", ""},
                      {"output", std::to_string(numbers[i] + 1)}});
    return rows.dump(1) + "\n";
  };
  FamilyFiles counting{"counting", "generation", "alpaca", dir / "counting/train.json", dir / "counting/test.json", {},
                       0.0, sizes.counting_train, sizes.counting_test};
  write(counting.train, counting_json(0, sizes.counting_train));
  write(counting.test, counting_json(static_cast<size_t>(sizes.counting_train), sizes.counting_test));

  // ---- people: world knowledge (MMLU CSV), held-out people ----
  const int64_t n_test_people =
      std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(w.people.size()) * sizes.heldout_people));
  const size_t first_test = w.people.size() - static_cast<size_t>(n_test_people);
  auto people_split = [&](size_t from, size_t to) {
    std::vector<Choice4> rows;
    for (size_t i = from; i < to; ++i) {
      const Person& p = w.people[i];
      rows.push_back(four_way(rng, fmt::format("In which city does {} live?", p.name), p.city, w.cities));
      rows.push_back(four_way(rng, fmt::format("What is the job of {}?", p.name), p.job, w.jobs));
    }
    return rows;
  };
  const auto people_train = people_split(0, first_test), people_test = people_split(first_test, w.people.size());
  FamilyFiles people{"people", "4-way world knowledge", "mmlu", dir / "mmlu/train/people_train.csv",
                     dir / "mmlu/test/people_test.csv", dir / "mmlu/dev/people_dev.csv", 0.25,
                     static_cast<int64_t>(people_train.size()), static_cast<int64_t>(people_test.size())};
  write(people.train, csv_rows(people_train));
  write(people.test, csv_rows(people_test));
  write(people.dev, csv_rows({people_train.begin(), people_train.begin() + 5}));

  // ---- traits: yes/no (BoolQ JSONL) about the same people split; the passage states another of
  // the person's facts, the answer is only in the pretraining text ----
  auto traits_split = [&](size_t from, size_t to) {
    std::vector<YesNo> rows;
    for (size_t i = from; i < to; ++i) {
      const Person& p = w.people[i];
      for (const std::string& passage : {fmt::format("{} lives in {}.", p.name, p.city),
                                         fmt::format("{} works as {} {}.", p.name, article(p.job), p.job)}) {
        rows.push_back({passage, fmt::format("can {} swim", p.name), p.swims});
        rows.push_back({passage, fmt::format("does {} own a boat", p.name), p.owns_boat});
      }
    }
    rng.shuffle(rows);
    return rows;
  };
  const auto traits_train = traits_split(0, first_test), traits_test = traits_split(first_test, w.people.size());
  auto boolq_jsonl = [](const std::vector<YesNo>& rows) {
    std::vector<json> lines;
    for (size_t i = 0; i < rows.size(); ++i)
      lines.push_back({{"question", rows[i].question}, {"passage", rows[i].passage}, {"idx", i}, {"label", rows[i].label}});
    return jsonl(lines);
  };
  FamilyFiles traits{"traits", "yes/no", "boolq", dir / "traits/train.jsonl", dir / "traits/test.jsonl", {}, 0.5,
                     static_cast<int64_t>(traits_train.size()), static_cast<int64_t>(traits_test.size())};
  write(traits.train, boolq_jsonl(traits_train));
  write(traits.test, boolq_jsonl(traits_test));

  out.families = {traits, categories, counting, people};

  // ---- the pretraining corpus: statements of the facts every family asks about ----
  auto fact_sentence = [&](const Person& p) {
    switch (rng.below(8)) {
      case 0: return fmt::format("{} lives in {}.", p.name, p.city);
      case 1: return fmt::format("{} works as {} {}.", p.name, article(p.job), p.job);
      case 2: return fmt::format("{} is {} {} from {}.", p.name, article(p.job), p.job, p.city);
      case 3: return fmt::format("The {} {} lives in {}.", p.job, p.name, p.city);
      case 4: return fmt::format("In {} lives {}, who works as {} {}.", p.city, p.name, article(p.job), p.job);
      case 5: return fmt::format("{} has a home in {} and is {} {}.", p.name, p.city, article(p.job), p.job);
      case 6: return fmt::format("{} {} swim.", p.name, p.swims ? "can" : "cannot");
      default: return fmt::format("{} {}.", p.name, p.owns_boat ? "owns a boat" : "has no boat");
    }
  };
  auto category_sentence = [&](const std::string& word, const std::string& category) {
    switch (rng.below(3)) {
      case 0: return fmt::format("{} {} is {} {}.", capitalize(article(word)), word, article(category), category);
      case 1: return fmt::format("The {} is a kind of {}.", word, category);
      default: return fmt::format("One {} is the {}.", category, word);
    }
  };
  // Facts and counting runs only, no question of any family: what a family's question format
  // means is left to fine-tuning, so the base column shows what each method adds.
  std::vector<std::string> docs;
  for (int64_t d = 0; d < sizes.pretrain_documents; ++d) {
    std::string text;
    switch (d % 8) {
      case 0:
      case 1:
      case 2:  // facts about people, three sentences about different people
        for (int s = 0; s < 3; ++s) text += fmt::format("{}{}", s ? " " : "", fact_sentence(rng.pick(w.people)));
        break;
      case 3:
      case 4:
      case 5:  // the categories of words
        for (int s = 0; s < 3; ++s) {
          const size_t c = static_cast<size_t>(rng.below(static_cast<int64_t>(w.categories.size())));
          text += fmt::format("{}{}", s ? " " : "", category_sentence(rng.pick(w.category_words[c]), w.categories[c]));
        }
        break;
      default: {  // counting runs
        const int64_t start = rng.below(990), len = 4 + rng.below(6);
        for (int64_t n = start; n < std::min<int64_t>(start + len, 1000); ++n) text += fmt::format("{}{}", n > start ? " " : "", n);
        text += ".";
        break;
      }
    }
    docs.push_back(std::move(text));
  }
  std::vector<json> corpus;
  for (const auto& t : docs) {
    corpus.push_back({{"prompt", ""}, {"completion", t}});
    out.pretrain_text += t + "\n";
  }
  out.pretrain_corpus = dir / "pretrain/corpus.jsonl";
  out.pretrain_documents = static_cast<int64_t>(docs.size());
  write(out.pretrain_corpus, jsonl(corpus));
  // The tasks' texts and prompt words too, so the tokenizer has merges for every word they use.
  std::string& t = out.pretrain_text;
  for (const auto* rows : {&traits_train, &traits_test})
    for (const YesNo& r : *rows) t += fmt::format("{}\nQuestion: {}?\nAnswer: {}\n", r.passage, r.question, r.label ? "yes" : "no");
  for (const auto* rows : {&categories_train, &categories_test, &people_train, &people_test})
    for (const Choice4& r : *rows) {
      t += r.question + "\nAnswer:";
      for (size_t i = 0; i < 4; ++i) t += " " + r.options[i];
      t += "\n";
    }
  for (size_t i = 0; i < static_cast<size_t>(sizes.counting_train + sizes.counting_test); ++i)
    t += fmt::format("What number comes after {}?\nAnswer: {}\n", numbers[i], numbers[i] + 1);
  return out;
}

}  // namespace mlr::demo
