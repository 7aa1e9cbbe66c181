// The part of Jinja that lm-evaluation-harness task configs use in doc_to_text, doc_to_choice and
// doc_to_target, evaluated over a document (the harness's `doc`: named values). A task writes its
// prompt once, in the harness's own syntax; that one text renders our prompts and is what the
// results JSON reports under configs.
//
//   template    literal text with {{ expression }} substitutions (strings as they are, integers in
//               decimal; a list or an object is an error)
//   expression  name                  a value of the doc
//               integer               e.g. 0, -1
//               [expr, expr, ...]     a list
//               expr.name             a member of an object (e.g. choices.text)
//               expr[integer]         a list element, negative from the end
//               expr[expr:expr]       a slice of a string in code points, Python's clamping (bounds optional)
//               expr.strip()          Python str.strip()
//               expr.index(expr)      the position of a value in a list (an error when absent)
//   choices     (doc_to_choice) a name of the doc giving a list; a Python list of quoted templates
//               ('...', "...", '''...''', """...""" with Python's escapes), each rendered; or a
//               template that is one {{expression}} giving a list
//   target      (doc_to_target) a name of the doc, or a template (its value when it is one
//               {{expression}}, else the rendered text)
// The harness renders a doc_to_choice list as a whole and then reads it back with
// ast.literal_eval; rendering each element instead differs only when a doc's own text contains a
// quote or a backslash that would end or escape the literal, which the harness would garble.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace mlr::eval {

// A value of a document: text, integer, list or object (the shapes of a dataset row).
class Value {
 public:
  using List = std::vector<Value>;
  using Object = std::map<std::string, Value, std::less<>>;

  Value() : data_(std::string()) {}
  Value(std::string text) : data_(std::move(text)) {}
  Value(const char* text) : data_(std::string(text)) {}
  Value(int64_t number) : data_(number) {}
  Value(int number) : data_(static_cast<int64_t>(number)) {}
  Value(List list) : data_(std::move(list)) {}
  Value(Object object) : data_(std::move(object)) {}

  bool is_string() const { return std::holds_alternative<std::string>(data_); }
  bool is_integer() const { return std::holds_alternative<int64_t>(data_); }
  bool is_list() const { return std::holds_alternative<List>(data_); }
  bool is_object() const { return std::holds_alternative<Object>(data_); }
  // Each throws mlr::Error naming the type found.
  const std::string& string() const;
  int64_t integer() const;
  const List& list() const;
  const Object& object() const;
  // A list of strings (doc_to_choice), or an error naming the element that is not one.
  std::vector<std::string> strings() const;
  const char* type_name() const;

  bool operator==(const Value&) const = default;

 private:
  std::variant<std::string, int64_t, List, Object> data_;
};

// The harness's `doc`: a dataset row after the task's preprocessing.
using DocValues = Value::Object;

// Text with {{ expression }} substitutions, parsed once. Copies share the parse.
class PromptTemplate {
 public:
  // Throws mlr::Error "eval: template "...": <what> at offset N" for a syntax error.
  explicit PromptTemplate(std::string text);
  const std::string& text() const { return text_; }
  std::string render(const DocValues& doc) const;
  // One {{expression}} alone: its value (a list stays a list); otherwise the rendered text.
  Value evaluate(const DocValues& doc) const;

  struct Parsed;

 private:
  std::string text_;
  std::shared_ptr<const Parsed> parsed_;
};

// doc_to_choice.
class ChoiceTemplate {
 public:
  explicit ChoiceTemplate(std::string text);
  const std::string& text() const { return text_; }
  std::vector<std::string> render(const DocValues& doc) const;

 private:
  std::string text_;
  bool is_name_ = false;                 // a name of the doc
  std::vector<PromptTemplate> elements_;  // a Python list of templates
  std::optional<PromptTemplate> whole_;   // one {{expression}} giving a list
};

// doc_to_target.
class TargetTemplate {
 public:
  explicit TargetTemplate(std::string text);
  const std::string& text() const { return text_; }
  Value evaluate(const DocValues& doc) const;

 private:
  std::string text_;
  bool is_name_ = false;
  std::optional<PromptTemplate> template_;
};

// True for a Python identifier (a doc_to_* text that names a field of the doc).
bool is_identifier(std::string_view text);

}  // namespace mlr::eval
