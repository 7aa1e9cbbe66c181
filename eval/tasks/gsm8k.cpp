#include "eval/tasks/gsm8k.h"

#include "data/text.h"
#include "eval/task_docs.h"
#include "eval/task_registry.h"

namespace mlr::eval {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_number_char(char c) { return is_digit(c) || c == '.' || c == ','; }   // [0-9\.\,]
bool is_money_char(char c) { return is_number_char(c) || c == '$'; }          // [$0-9.,]

size_t run_length(std::string_view s, size_t from, bool (*in_set)(char)) {
  size_t n = 0;
  while (from + n < s.size() && in_set(s[from + n])) ++n;
  return n;
}

}  // namespace

std::string gsm8k_strict_match(std::string_view s) {
  // re.findall(r"#### (\-?[0-9\.\,]+)", s)[0]: the leftmost "#### " that a number follows.
  for (size_t at = s.find("#### "); at != std::string_view::npos; at = s.find("#### ", at + 1)) {
    const size_t start = at + 5;
    size_t sign = start < s.size() && s[start] == '-' ? 1 : 0;
    size_t run = run_length(s, start + sign, is_number_char);
    if (sign && run == 0) {  // "-?" backtracks to empty; then the run must start at the '-'
      sign = 0;
      run = 0;
    }
    if (run > 0) return std::string(data::strip(s.substr(start, sign + run)));
  }
  return "[invalid]";
}

std::string gsm8k_flexible_extract(std::string_view s) {
  // re.findall(r"(-?[$0-9.,]{2,})|(-?[0-9]+)", s)[-1]: scan left to right, non-overlapping.
  std::string_view last;
  size_t p = 0;
  while (p < s.size()) {
    size_t length = 0;
    const bool minus = s[p] == '-';
    // Alternative 1: "-" then 2+ of [$0-9.,] (without the "-", the class must start at p).
    const size_t money = run_length(s, p + (minus ? 1 : 0), is_money_char);
    if (money >= 2) {
      length = (minus ? 1 : 0) + money;
    } else {
      // Alternative 2: "-"? then 1+ digits.
      const size_t digits = run_length(s, p + (minus ? 1 : 0), [](char c) { return is_digit(c); });
      if (digits >= 1) length = (minus ? 1 : 0) + digits;
    }
    if (length > 0) {
      last = s.substr(p, length);
      p += length;
    } else {
      ++p;
    }
  }
  if (last.empty()) return "[invalid]";
  return std::string(data::strip(last));
}

std::string gsm8k_normalize(std::string_view text) {
  std::string s;
  for (char c : text) {
    if (c != ',' && c != '$') s += c;  // re.sub(",", "") then re.sub("\$", "")
  }
  const size_t hashes = s.rfind("#### ");  // re.sub("(?s).*#### ", ""): greedy, through the last one
  if (hashes != std::string::npos) s.erase(0, hashes + 5);
  if (!s.empty() && s.back() == '.') {  // re.sub("\.$", ""): "$" is the end or before a final "\n"
    s.pop_back();
  } else if (s.size() >= 2 && s[s.size() - 1] == '\n' && s[s.size() - 2] == '.') {
    s.erase(s.size() - 2, 1);
  }
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

bool gsm8k_exact_match(std::string_view prediction, std::string_view reference) {
  return gsm8k_normalize(prediction) == gsm8k_normalize(reference);
}

namespace {

TaskDefinition gsm8k() {
  TaskConfig c;
  c.name = "gsm8k";
  c.tag = "math_word_problems";
  c.version = 3.0;
  c.dataset_path = "openai/gsm8k";
  c.dataset_name = "main";
  c.training_split = "train";
  c.fewshot_split = "train";
  c.test_split = "test";
  c.doc_to_text = "Question: {{question}}\nAnswer:";
  c.doc_to_target = "{{answer}}";
  c.output_type = OutputType::generate_until;
  c.until = {"Question:", "</s>", "<|im_end|>"};
  c.max_gen_toks = 256;
  c.filters = {{"strict-match", gsm8k_strict_match}, {"flexible-extract", gsm8k_flexible_extract}};
  Metric exact_match{.name = "exact_match"};
  exact_match.options = {{"ignore_case", true},
                         {"ignore_punctuation", false},
                         {"regexes_to_ignore", {",", "\\$", "(?s).*#### ", "\\.$"}}};
  exact_match.score_answer = [](std::string_view answer, const Doc& doc) {
    return gsm8k_exact_match(answer, doc.target) ? 1.0 : 0.0;
  };
  c.metrics = {exact_match};
  c.default_num_fewshot = 5;
  return record_task(std::move(c), data::Format::gsm8k, "gsm8k/test.jsonl");
}

const TaskRegistration registration{gsm8k()};

}  // namespace
}  // namespace mlr::eval
