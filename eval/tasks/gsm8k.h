// GSM8K as lm-evaluation-harness's gsm8k.yaml defines it (../shared/EVAL_FORMATS.md, gsm8k):
// generate_until, test split, 5 shots drawn from train with Random(1234) (no n + 1 rule: the
// few-shot split "train" is not the test split), shots "Question: q\nAnswer: <full solution>\n\n",
// stop strings "Question:", "</s>", "<|im_end|>" (+ the model's EOS), max_gen_toks 256.
// Two filters, each a separate result key, then exact_match:
//   strict-match      the first match of  #### (\-?[0-9\.\,]+)  (its group), stripped
//   flexible-extract  the last match of   (-?[$0-9.,]{2,})|(-?[0-9]+)  (its first non-empty group), stripped
//   no match -> "[invalid]"
//   exact_match: on prediction and reference, remove every ",", every "$", everything through the
//   last "#### ", and a final "." (Python "\.$": at the end or before a final newline); lowercase;
//   compare.
// Files: JSONL rows {question, answer} (the openai/gsm8k layout), read with data/'s gsm8k reader;
// the default is gsm8k/test.jsonl, its few-shot pool train.jsonl beside it.
#pragma once

#include <string>
#include <string_view>

namespace mlr::eval {

std::string gsm8k_strict_match(std::string_view response);
std::string gsm8k_flexible_extract(std::string_view response);
// The harness's exact_match normalisation for gsm8k (regexes_to_ignore + ignore_case).
std::string gsm8k_normalize(std::string_view text);
bool gsm8k_exact_match(std::string_view prediction, std::string_view reference);

}  // namespace mlr::eval
