// Templates: how a Record becomes an Example (a prompt and the target continuation). Templates are
// data: every format has a default (below), and a dataset in the YAML config may override any key.
//
// Template text is literal except for:
//   {{field}}               the record's field (data/readers.h lists each format's fields)
//   {{field|f1|f2}}         the field through filters, left to right: strip (Python str.strip),
//                           rstrip, drop_last (s[:-1]), lower_first, upper_first
//   {{#field}}...{{/field}} the inside only when the field is not empty
//   {{^field}}...{{/field}} the inside only when the field is empty
//
// The continuation is target_delimiter + (choices.empty() ? target : choices[label]); choice texts
// are templates too. For the NLU and knowledge formats the defaults are lm-evaluation-harness's
// zero-shot prompts (shared/EVAL_FORMATS.md), so what is trained on is what is scored:
//   boolq   "{{passage}}\nQuestion: {{question}}?\nAnswer:"  choices no | yes
//   cb      "{{premise}}\nQuestion: {{hypothesis}}. True, False, or Neither?\nAnswer:"
//                                                            choices True | False | Neither
//   copa    "{{premise|strip|drop_last}} {{connector}}"      choices " {{choice1|lower_first}}" | " {{choice2|lower_first}}"
//   multirc "{{paragraph}}\nQuestion: {{question}}\nAnswer:" choices "{{answer}}\nIs the answer correct? yes" |
//                                                                    "{{answer}}\nIs the answer correct? no"
//           (gold index = label, so a correct answer (label 1) continues with "...? no": the harness's
//            inverted mapping, kept so that training agrees with its scoring)
//   rte     "{{premise}}\nQuestion: {{hypothesis}} True or False?\nAnswer:"  choices True | False
//   wic     "Sentence 1: {{sentence1}}\nSentence 2: {{sentence2}}\nQuestion: Is the word
//            '{{sentence1_word}}' used in the same way in the two sentences above?\nAnswer:"  choices no | yes
//   wsc     "Passage: {{passage}}\nQuestion: In the passage above, does the pronoun \"*{{span2_text}}*\"
//            refer to \"*{{span1_text}}*\"?\nAnswer:"          choices no | yes
//   mmlu    "The following are multiple choice questions (with answers) about {{subject}}.\n\n
//            {{question|strip}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\nAnswer:"  choices A | B | C | D
//   gsm8k   "Question: {{question}}\nAnswer:"                target "{{answer}}"
// all with target_delimiter " ". Instruction data uses the Stanford Alpaca prompt (target "{{output}}",
// delimiter ""); prompt_completion is "{{prompt}}" + "{{completion}}"; chat renders each message
// with the template of its role (system, user, assistant), and every assistant message is a target.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data/readers.h"

namespace mlr::data {

struct Template {
  std::string prompt;
  std::string target;                // generative continuation (used when choices is empty)
  std::vector<std::string> choices;  // classification: one per class, in label order
  std::string target_delimiter;
  std::string system, user, assistant;  // chat format: one template per role

  // A stable text of every key, for cache keys.
  std::string canonical() const;
};

Template default_template(Format format);

// One exchange of a conversation: a prompt and the target that answers it.
struct Turn {
  std::string prompt;
  std::string target;
};

struct Example {
  std::string task;                  // the dataset's name
  std::string prompt;                // the context: not trained on (unless train_on_prompt)
  std::string target;                // the continuation, target delimiter included: trained on
  std::vector<Turn> history;         // chat: earlier exchanges, before prompt/target, also trained on
  std::vector<std::string> choices;  // classification: every continuation (delimiter included)
  int gold = -1;                     // index of target in choices, -1 for generative formats
};

// A template parsed once and checked against the format's fields; render() is thread-safe.
class CompiledTemplate {
 public:
  // Throws mlr::Error naming the dataset and the template key for a syntax error, an unknown
  // filter or a field the format does not provide.
  CompiledTemplate(const Template& tmpl, Format format, std::string dataset);
  ~CompiledTemplate();
  CompiledTemplate(CompiledTemplate&&) noexcept;
  CompiledTemplate& operator=(CompiledTemplate&&) noexcept;

  // Throws mlr::Error "data: <where>: ..." when the record's label has no choice.
  Example render(const Record& record, std::string_view where) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mlr::data
