#include "eval/prompt_template.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "data/text.h"
#include "tensor/error.h"

namespace mlr::eval {

const char* Value::type_name() const {
  if (is_string()) return "a string";
  if (is_integer()) return "an integer";
  if (is_list()) return "a list";
  return "an object";
}

const std::string& Value::string() const {
  MLR_CHECK(is_string(), "expected a string, found {}", type_name());
  return std::get<std::string>(data_);
}

int64_t Value::integer() const {
  MLR_CHECK(is_integer(), "expected an integer, found {}", type_name());
  return std::get<int64_t>(data_);
}

const Value::List& Value::list() const {
  MLR_CHECK(is_list(), "expected a list, found {}", type_name());
  return std::get<List>(data_);
}

const Value::Object& Value::object() const {
  MLR_CHECK(is_object(), "expected an object, found {}", type_name());
  return std::get<Object>(data_);
}

std::vector<std::string> Value::strings() const {
  std::vector<std::string> out;
  for (const Value& element : list()) {
    MLR_CHECK(element.is_string(), "expected a list of strings, found {} in it", element.type_name());
    out.push_back(element.string());
  }
  return out;
}

bool is_identifier(std::string_view text) {
  auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
  if (text.empty() || !letter(text[0])) return false;
  for (char c : text) {
    if (!letter(c) && !(c >= '0' && c <= '9')) return false;
  }
  return true;
}

namespace {

struct Expression {
  enum Kind { name, integer, list, member, strip, index_of, element, slice } kind = name;
  std::string text;                  // the source, for messages; for `name` and `member` also the name
  std::string identifier;            // name, member
  int64_t number = 0;                // integer
  std::vector<Expression> operands;  // list: elements; others: [subject, arguments...]
  bool has_begin = false, has_end = false;  // slice: which of operands[1], operands[2] are given
};

// Recursive descent over the text inside one {{ }}.
class ExpressionParser {
 public:
  ExpressionParser(std::string_view text, const std::string& whole, size_t offset)
      : text_(text), whole_(whole), offset_(offset) {}

  Expression parse() {
    Expression e = postfix();
    skip_space();
    if (pos_ != text_.size()) fail("unexpected text");
    return e;
  }

 private:
  [[noreturn]] void fail(std::string_view what) const {
    throw Error(fmt::format("eval: template \"{}\": {} at offset {}", data::preview(whole_, 80), what, offset_ + pos_));
  }
  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n')) ++pos_;
  }
  bool accept(char c) {
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!accept(c)) fail(fmt::format("expected '{}'", c));
  }
  std::string identifier() {
    skip_space();
    size_t end = pos_;
    auto name_char = [&](char c) { return c == '_' || std::isalnum(static_cast<unsigned char>(c)); };
    while (end < text_.size() && name_char(text_[end])) ++end;
    if (end == pos_ || !is_identifier(text_.substr(pos_, end - pos_))) fail("expected a name");
    std::string out(text_.substr(pos_, end - pos_));
    pos_ = end;
    return out;
  }

  Expression primary() {
    skip_space();
    const size_t start = pos_;
    Expression e;
    if (accept('[')) {
      e.kind = Expression::list;
      if (!accept(']')) {
        do {
          e.operands.push_back(postfix());
        } while (accept(','));
        expect(']');
      }
    } else if (pos_ < text_.size() && (text_[pos_] == '-' || (text_[pos_] >= '0' && text_[pos_] <= '9'))) {
      e.kind = Expression::integer;
      size_t end = pos_ + 1;
      while (end < text_.size() && text_[end] >= '0' && text_[end] <= '9') ++end;
      const std::string digits(text_.substr(pos_, end - pos_));
      if (digits == "-" || digits.size() > 18) fail("expected an integer");
      e.number = std::stoll(digits);
      pos_ = end;
    } else {
      e.kind = Expression::name;
      e.identifier = identifier();
    }
    e.text = std::string(text_.substr(start, pos_ - start));
    return e;
  }

  Expression postfix() {
    skip_space();
    const size_t start = pos_;
    Expression e = primary();
    while (true) {
      Expression outer;
      if (accept('.')) {
        outer.identifier = identifier();
        if (accept('(')) {
          if (outer.identifier == "strip") {
            outer.kind = Expression::strip;
          } else if (outer.identifier == "index") {
            outer.kind = Expression::index_of;
          } else {
            fail(fmt::format("unknown method {}() (known: strip, index)", outer.identifier));
          }
          outer.operands.push_back(std::move(e));
          if (outer.kind == Expression::index_of) outer.operands.push_back(postfix());
          expect(')');
        } else {
          outer.kind = Expression::member;
          outer.operands.push_back(std::move(e));
        }
      } else if (accept('[')) {
        outer.kind = Expression::element;
        outer.operands.push_back(std::move(e));
        if (!accept(':')) {
          outer.operands.push_back(postfix());
          outer.has_begin = true;
          if (!accept(':')) {
            expect(']');
            outer.text = std::string(text_.substr(start, pos_ - start));
            e = std::move(outer);
            continue;
          }
        } else {
          outer.operands.emplace_back();
        }
        outer.kind = Expression::slice;
        skip_space();
        if (pos_ < text_.size() && text_[pos_] != ']') {
          outer.operands.push_back(postfix());
          outer.has_end = true;
        }
        expect(']');
      } else {
        return e;
      }
      outer.text = std::string(text_.substr(start, pos_ - start));
      e = std::move(outer);
    }
  }

  std::string_view text_;
  const std::string& whole_;
  size_t offset_;
  size_t pos_ = 0;
};

// The value of `e`: a reference into `doc` where `e` names a part of it (so a long passage is not
// copied on its way into a prompt), else `scratch` holding the computed value.
const Value& evaluate_expression(const Expression& e, const DocValues& doc, Value& scratch) {
  // A part of `subject`, which may live in `subject_scratch`, a local of the caller: copy it out then.
  auto part_of = [&](const Value& subject, const Value& subject_scratch, const Value& part) -> const Value& {
    if (&subject != &subject_scratch) return part;
    scratch = part;
    return scratch;
  };
  switch (e.kind) {
    case Expression::name: {
      const auto it = doc.find(e.identifier);
      MLR_CHECK(it != doc.end(), "the document has no \"{}\"", e.identifier);
      return it->second;
    }
    case Expression::integer:
      return scratch = Value(e.number);
    case Expression::list: {
      Value argument_scratch;
      Value::List out;
      for (const Expression& element : e.operands) out.push_back(evaluate_expression(element, doc, argument_scratch));
      return scratch = Value(std::move(out));
    }
    case Expression::member: {
      Value subject_scratch;
      const Value& subject = evaluate_expression(e.operands[0], doc, subject_scratch);
      MLR_CHECK(subject.is_object(), "{} is {}, not an object with \"{}\"", e.operands[0].text, subject.type_name(),
                e.identifier);
      const auto it = subject.object().find(e.identifier);
      MLR_CHECK(it != subject.object().end(), "{} has no \"{}\"", e.operands[0].text, e.identifier);
      return part_of(subject, subject_scratch, it->second);
    }
    case Expression::strip: {
      Value subject_scratch;
      const Value& subject = evaluate_expression(e.operands[0], doc, subject_scratch);
      MLR_CHECK(subject.is_string(), "{} is {}; strip() needs a string", e.operands[0].text, subject.type_name());
      return scratch = Value(std::string(data::strip(subject.string())));
    }
    case Expression::index_of: {
      Value subject_scratch, argument_scratch;
      const Value& subject = evaluate_expression(e.operands[0], doc, subject_scratch);
      const Value& wanted = evaluate_expression(e.operands[1], doc, argument_scratch);
      MLR_CHECK(subject.is_list(), "{} is {}; index() needs a list", e.operands[0].text, subject.type_name());
      const Value::List& list = subject.list();
      for (size_t i = 0; i < list.size(); ++i) {
        if (list[i] == wanted) return scratch = Value(static_cast<int64_t>(i));
      }
      throw Error(fmt::format("{} \"{}\" is not among {}", e.operands[1].text,
                              wanted.is_string() ? wanted.string() : std::string(wanted.type_name()), e.operands[0].text));
    }
    case Expression::element: {
      Value subject_scratch, argument_scratch;
      const Value& subject = evaluate_expression(e.operands[0], doc, subject_scratch);
      const int64_t index = evaluate_expression(e.operands[1], doc, argument_scratch).integer();
      MLR_CHECK(subject.is_list(), "{} is {}; [{}] needs a list", e.operands[0].text, subject.type_name(), index);
      const auto size = static_cast<int64_t>(subject.list().size());
      const int64_t at = index < 0 ? index + size : index;
      MLR_CHECK(at >= 0 && at < size, "{}: index {} outside a list of {}", e.text, index, size);
      return part_of(subject, subject_scratch, subject.list()[static_cast<size_t>(at)]);
    }
    case Expression::slice: {
      Value subject_scratch, argument_scratch;
      const Value& subject = evaluate_expression(e.operands[0], doc, subject_scratch);
      MLR_CHECK(subject.is_string(), "{} is {}; [a:b] needs a string", e.operands[0].text, subject.type_name());
      const std::string& s = subject.string();
      const auto length = static_cast<int64_t>(data::utf8_length(s));
      auto bound = [&](bool given, const Expression& b, int64_t otherwise) {
        if (!given) return otherwise;
        const int64_t v = evaluate_expression(b, doc, argument_scratch).integer();
        return v < 0 ? std::max<int64_t>(v + length, 0) : v;
      };
      const int64_t begin = bound(e.has_begin, e.operands[1], 0);
      const int64_t end = bound(e.has_end, e.operands[e.has_end ? 2 : 0], length);
      return scratch = Value(data::utf8_slice(s, begin, end));
    }
  }
  throw Error("eval: unreachable expression kind");
}

void append_value(const Value& v, const std::string& expression, std::string& out) {
  if (v.is_string()) {
    out += v.string();
  } else if (v.is_integer()) {
    out += std::to_string(v.integer());
  } else {
    throw Error(fmt::format("{{{{{}}}}} is {}, which a prompt cannot show", expression, v.type_name()));
  }
}

// Python string literal escapes (the ones a task config uses; others keep their backslash, as
// Python does).
char unescape(char c) {
  switch (c) {
    case 'n': return '\n';
    case 't': return '\t';
    case 'r': return '\r';
    case '\\': return '\\';
    case '\'': return '\'';
    case '"': return '"';
    default: return 0;
  }
}

// ["a", '''b''', ...] -> the element texts.
std::vector<std::string> parse_python_string_list(const std::string& text) {
  auto fail = [&](size_t at, std::string_view what) {
    throw Error(fmt::format("eval: choice list \"{}\": {} at offset {}", data::preview(text, 80), what, at));
  };
  size_t pos = 0;
  auto skip_space = [&] {
    while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\n' || text[pos] == '\t')) ++pos;
  };
  skip_space();
  if (pos >= text.size() || text[pos] != '[') fail(pos, "expected '['");
  ++pos;
  std::vector<std::string> out;
  while (true) {
    skip_space();
    if (pos < text.size() && text[pos] == ']') break;
    if (pos >= text.size() || (text[pos] != '\'' && text[pos] != '"')) fail(pos, "expected a quoted string");
    const char quote = text[pos];
    const bool triple = text.compare(pos, 3, std::string(3, quote)) == 0;
    const std::string close = triple ? std::string(3, quote) : std::string(1, quote);
    pos += close.size();
    std::string element;
    while (true) {
      if (pos >= text.size()) fail(pos, "unterminated string");
      if (text.compare(pos, close.size(), close) == 0) break;
      if (text[pos] == '\\' && pos + 1 < text.size()) {
        const char replaced = unescape(text[pos + 1]);
        if (replaced) {
          element += replaced;
          pos += 2;
          continue;
        }
      }
      element += text[pos++];
    }
    pos += close.size();
    out.push_back(std::move(element));
    skip_space();
    if (pos < text.size() && text[pos] == ',') {
      ++pos;
      continue;
    }
    skip_space();
    if (pos >= text.size() || text[pos] != ']') fail(pos, "expected ',' or ']'");
    break;
  }
  ++pos;
  skip_space();
  if (pos != text.size()) fail(pos, "unexpected text after the list");
  return out;
}

}  // namespace

struct PromptTemplate::Parsed {
  struct Part {
    std::string literal;               // text before the expression
    std::optional<Expression> expression;
  };
  std::vector<Part> parts;
  bool single_expression = false;      // exactly "{{ expression }}"
};

PromptTemplate::PromptTemplate(std::string text) : text_(std::move(text)) {
  auto parsed = std::make_shared<Parsed>();
  size_t pos = 0;
  while (pos < text_.size()) {
    const size_t open = text_.find("{{", pos);
    Parsed::Part part;
    part.literal = text_.substr(pos, open == std::string::npos ? std::string::npos : open - pos);
    if (open == std::string::npos) {
      parsed->parts.push_back(std::move(part));
      break;
    }
    const size_t close = text_.find("}}", open + 2);
    if (close == std::string::npos) {
      throw Error(fmt::format("eval: template \"{}\": '{{{{' without '}}}}' at offset {}", data::preview(text_, 80), open));
    }
    part.expression = ExpressionParser(std::string_view(text_).substr(open + 2, close - open - 2), text_, open + 2).parse();
    parsed->parts.push_back(std::move(part));
    pos = close + 2;
  }
  parsed->single_expression = parsed->parts.size() == 1 && parsed->parts[0].literal.empty() &&
                              parsed->parts[0].expression && text_.ends_with("}}");
  parsed_ = std::move(parsed);
}

std::string PromptTemplate::render(const DocValues& doc) const {
  std::string out;
  for (const auto& part : parsed_->parts) {
    out += part.literal;
    if (part.expression) {
      Value scratch;
      append_value(evaluate_expression(*part.expression, doc, scratch), part.expression->text, out);
    }
  }
  return out;
}

Value PromptTemplate::evaluate(const DocValues& doc) const {
  if (parsed_->single_expression) {
    Value scratch;
    return evaluate_expression(*parsed_->parts[0].expression, doc, scratch);
  }
  return render(doc);
}

ChoiceTemplate::ChoiceTemplate(std::string text) : text_(std::move(text)) {
  const std::string_view stripped = data::strip(text_);
  if (is_identifier(stripped)) {
    is_name_ = true;
  } else if (stripped.starts_with("[")) {
    for (std::string& element : parse_python_string_list(text_)) elements_.emplace_back(std::move(element));
  } else {
    whole_.emplace(text_);
  }
}

std::vector<std::string> ChoiceTemplate::render(const DocValues& doc) const {
  if (is_name_) {
    const auto it = doc.find(data::strip(text_));
    MLR_CHECK(it != doc.end(), "the document has no \"{}\" (doc_to_choice)", text_);
    return it->second.strings();
  }
  if (whole_) return whole_->evaluate(doc).strings();
  std::vector<std::string> out;
  out.reserve(elements_.size());
  for (const PromptTemplate& element : elements_) out.push_back(element.render(doc));
  return out;
}

TargetTemplate::TargetTemplate(std::string text) : text_(std::move(text)) {
  if (is_identifier(text_)) is_name_ = true;
  else template_.emplace(text_);
}

Value TargetTemplate::evaluate(const DocValues& doc) const {
  if (is_name_) {
    const auto it = doc.find(text_);
    MLR_CHECK(it != doc.end(), "the document has no \"{}\" (doc_to_target)", text_);
    return it->second;
  }
  return template_->evaluate(doc);
}

}  // namespace mlr::eval
