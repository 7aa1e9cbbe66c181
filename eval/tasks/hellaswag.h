// HellaSwag's text preprocessing (lm-evaluation-harness hellaswag/utils.py), exposed for tests.
#pragma once

#include <string>
#include <string_view>

namespace mlr::eval {

// preprocess(): strip; " [title]" -> ". "; delete each "[...]" (regex \[.*?\], no newline inside);
// "  " -> " " in one pass.
std::string hellaswag_preprocess(std::string_view text);
// Python str.capitalize() for ASCII letters (non-ASCII letters are left unchanged).
std::string python_capitalize(std::string_view text);

}  // namespace mlr::eval
