// The demo's synthetic world and its multi-task dataset, generated from a seed (nothing is
// downloaded). A world is a set of people with a home city and a job, words in four categories,
// and the numbers 0..999. From it come:
//
//   family      shape                          file format (data/ readers)   chance
//   traits      yes/no: "X lives in Y. Question: can X swim?" /  BoolQ JSONL    1/2
//               "... does X own a boat?" (a fact stated only in the pretraining text)
//   categories  4-way: "Which of these is a fruit?" fig | red | saw | goat    MMLU CSV       1/4
//   counting    generation: "What number comes after N?" -> "N+1"        Alpaca JSON    ~0
//   people      4-way world knowledge: "In which city does X live?" / "What is the job of X?"
//               (facts stated only in the pretraining text)               MMLU CSV       1/4
//
// and the pretraining corpus (prompt_completion JSONL, empty prompts): statements of every
// person's facts and every word's category in several phrasings, and counting runs. It holds no
// question of any family: the formats are what fine-tuning teaches, the facts what it must use.
//
// Splits are disjoint by what must be generalised: categories by word (each category's words
// split 7 / 3), counting by number, traits and people by person (the same people held out). The same seed gives
// byte-identical files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace mlr::demo {

struct Person {
  std::string name, city, job;
  bool swims = false, owns_boat = false;
};

struct World {
  std::vector<Person> people;
  std::vector<std::string> cities, jobs, categories;
  std::vector<std::vector<std::string>> category_words;  // parallel to categories
};

struct DatasetSizes {
  int64_t people = 100;              // 2 questions each (city, job) and 4 yes/no (2 traits x 2 passages)
  double heldout_people = 0.3;       // fraction of people asked about only in the held-out split
  int64_t categories_train = 240, categories_test = 80;
  int64_t counting_train = 500, counting_test = 100;
  int64_t pretrain_documents = 16000;
};

World make_world(uint64_t seed, int64_t n_people);

// What one family wrote: its name, format, the train and held-out files, and chance accuracy.
struct FamilyFiles {
  std::string name;    // traits, categories, counting, people
  std::string shape;   // "yes/no", "4-way choice", "generation", "4-way world knowledge"
  std::string format;  // data/ reader format: boolq, mmlu, alpaca
  std::filesystem::path train, test, dev;  // dev: MMLU's few-shot file (empty otherwise)
  double chance = 0.0;
  int64_t n_train = 0, n_test = 0;
};

struct DatasetFiles {
  std::vector<FamilyFiles> families;
  std::filesystem::path pretrain_corpus;  // prompt_completion JSONL
  int64_t pretrain_documents = 0;
  std::string pretrain_text;              // every text of the corpus, for training the tokenizer
};

// Writes every family's splits and the pretraining corpus under `dir`:
//   dir/traits/{train,test}.jsonl              dir/counting/{train,test}.json
//   dir/mmlu/{train,test,dev}/{word_categories,people}_<split>.csv
//   dir/pretrain/corpus.jsonl
DatasetFiles write_dataset(const World& world, const std::filesystem::path& dir, uint64_t seed,
                           const DatasetSizes& sizes = {});

}  // namespace mlr::demo
