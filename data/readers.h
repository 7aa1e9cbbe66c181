// Readers: dataset files -> Records (the fields of one row, its gold label, where it came from).
// A template (data/template.h) then renders a Record into an Example.
//
// Formats and the fields each provides to templates (derived fields marked *):
//   alpaca             instruction, input (optional, "" when absent), output. A .json file holding one
//                      array, or JSONL (one object per line); told apart by the first character.
//   prompt_completion  prompt, completion (JSONL)
//   chat               messages: [{role: system|user|assistant, content}] (JSONL); role templates see
//                      content, role and first* ("1" for the first message of the conversation, else "")
//   gsm8k              question, answer (JSONL)
//   mmlu               question, A, B, C, D, answer (a letter), subject* (from the file name
//                      "<subject>_<split>.csv" with '_' -> ' '). Headerless RFC 4180 CSV; a path may be a
//                      file or a directory of *.csv files (read in name order). Gold = the answer letter.
//   boolq              passage, question, label (JSONL; gold: false=0, true=1)
//   cb                 premise, hypothesis, label (entailment=0, contradiction=1, neutral=2)
//   copa               premise, choice1, choice2, question (cause|effect), connector* ("because" for
//                      cause, "therefore" for effect), label (0 or 1)
//   multirc            paragraph, question, answer, label: one Record per answer option of the nested
//                      SuperGLUE layout (passage.questions[].answers[]), or one per line of the flat
//                      Hugging Face export; gold = the answer's label (0 or 1)
//   rte                premise, hypothesis, label (entailment=0, not_entailment=1)
//   wic                word, sentence1, sentence2, start1, end1, start2, end2, sentence1_word* and
//                      sentence2_word* (the code point slices sentence1[start1:end1], ...), label (0/1)
//   wsc                text, span1_index, span2_index, span1_text, span2_text (from the "target" object
//                      or top-level), passage* (lm-evaluation-harness's default_doc_to_text passage with
//                      the pronoun marked), label (0/1). Spans are fixed as Hugging Face's "wsc.fixed" does.
//
// Boolean labels are a JSON boolean, the strings "true"/"false" (any case; the SuperGLUE files in
// shared/data store them so) or 0/1. Class labels are the class name or its index. A row without a
// label (a test split) is an error: it cannot be trained on.
//
// Bad input (broken JSON, missing field, wrong type, bad answer letter, non-UTF-8) is an mlr::Error
// "data: <file>:<line>: <what>"; with skip_bad such rows are skipped and counted.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mlr::data {

enum class Format { alpaca, prompt_completion, chat, gsm8k, mmlu, boolq, cb, copa, multirc, rte, wic, wsc };

Format parse_format(std::string_view name);  // throws, listing the known names
std::string_view format_name(Format format);
// The fields a Record of this format has (for checking templates when they are loaded).
const std::vector<std::string>& format_fields(Format format);

struct Message {
  std::string role;  // system | user | assistant
  std::string content;
};

struct Record {
  std::vector<std::pair<std::string, std::string>> fields;  // in the reader's order
  int label = -1;                                           // gold choice index; -1 for generative formats
  std::vector<Message> messages;                            // chat format only
  int32_t file = 0;                                         // index into ReadResult::files
  int64_t line = 0;                                         // 1-based line where the row starts

  // The field's text, or nullptr when the record has no such field.
  const std::string* field(std::string_view name) const;
  void set(std::string name, std::string value) { fields.emplace_back(std::move(name), std::move(value)); }
};

struct ReadOptions {
  bool skip_bad = false;  // skip malformed rows (counted) instead of failing on the first
};

struct ReadResult {
  std::vector<std::string> files;  // the source files, in reading order (as given, for messages)
  std::vector<Record> records;
  int64_t n_bad = 0;                      // rows skipped by skip_bad
  std::vector<std::string> bad_messages;  // the errors of the first few skipped rows
};

// The files a path names for a format: the file itself, or a directory's matching files sorted by
// name (*.csv for mmlu, *.jsonl and *.json otherwise). Throws when there are none.
std::vector<std::filesystem::path> source_files(Format format, const std::filesystem::path& path);

ReadResult read_records(Format format, const std::filesystem::path& path, const ReadOptions& options = {});

// Helpers shared with the templates (exposed for tests).
// lm-evaluation-harness's general_detokenize (lm_eval/utils.py).
std::string general_detokenize(std::string_view s);
// The WSC passage of lm-evaluation-harness's super_glue/wsc default_doc_to_text: the pronoun at
// word index span2_index marked as *pronoun*, then detokenized.
std::string wsc_passage(std::string_view text, int64_t span2_index, std::string_view span2_text);

}  // namespace mlr::data
