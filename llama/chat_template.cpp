#include "llama/chat_template.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <map>

#include <fmt/format.h>

#include "llama/tokenizer_detail.h"
#include "tensor/error.h"

namespace mlr {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace {

// ---------------------------------------------------------------------------------------------
// Values: JSON values plus "undefined" (a missing variable, key or attribute), which prints as
// nothing, is false, and is an error to look into.
struct Value {
  Json json;
  bool undefined = false;
  std::string what;  // for an undefined value: the expression that had none

  Value() = default;
  Value(Json j) : json(std::move(j)) {}  // NOLINT: implicit, as Value{json} reads best
  static Value undef(std::string what) {
    Value v;
    v.undefined = true;
    v.what = std::move(what);
    return v;
  }
};

bool truthy(const Value& v) {
  if (v.undefined) return false;
  const Json& j = v.json;
  if (j.is_null()) return false;
  if (j.is_boolean()) return j.get<bool>();
  if (j.is_number_integer()) return j.get<int64_t>() != 0;
  if (j.is_number()) return j.get<double>() != 0;
  if (j.is_string()) return !j.get_ref<const std::string&>().empty();
  return !j.empty();
}

std::string python_float(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  std::string s = fmt::format("{}", d);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

std::string python_repr(const Json& j);

// str(x) as Python prints it (what {{ x }} outputs).
std::string to_str(const Value& v) {
  if (v.undefined) return "";
  const Json& j = v.json;
  if (j.is_string()) return j.get<std::string>();
  return python_repr(j);
}

std::string python_repr(const Json& j) {
  if (j.is_null()) return "None";
  if (j.is_boolean()) return j.get<bool>() ? "True" : "False";
  if (j.is_number_integer()) return std::to_string(j.get<int64_t>());
  if (j.is_number()) return python_float(j.get<double>());
  if (j.is_string()) {
    std::string out = "'";
    for (char c : j.get_ref<const std::string&>()) {
      if (c == '\'' || c == '\\') out += '\\';
      if (c == '\n') {
        out += "\\n";
        continue;
      }
      out += c;
    }
    return out + "'";
  }
  std::string out = j.is_array() ? "[" : "{";
  bool first = true;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!first) out += ", ";
    first = false;
    if (j.is_object()) out += python_repr(Json(it.key())) + ": ";
    out += python_repr(*it);
  }
  return out + (j.is_array() ? "]" : "}");
}

// json.dumps(x, ensure_ascii=False, indent=indent) as transformers' tojson filter calls it.
void dump_python_json(const Json& j, int indent, int depth, std::string& out) {
  auto newline = [&](int d) {
    out += '\n';
    out.append(static_cast<size_t>(indent * d), ' ');
  };
  if (j.is_array() || j.is_object()) {
    if (j.empty()) {
      out += j.is_array() ? "[]" : "{}";
      return;
    }
    out += j.is_array() ? '[' : '{';
    bool first = true;
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (!first) out += indent >= 0 ? "," : ", ";
      first = false;
      if (indent >= 0) newline(depth + 1);
      if (j.is_object()) out += Json(it.key()).dump(-1, ' ', false, Json::error_handler_t::replace) + ": ";
      dump_python_json(*it, indent, depth + 1, out);
    }
    if (indent >= 0) newline(depth);
    out += j.is_array() ? ']' : '}';
    return;
  }
  if (j.is_number_float()) {
    out += python_float(j.get<double>());
    return;
  }
  out += j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// ---------------------------------------------------------------------------------------------
// Expressions.
struct Expr {
  enum class Kind { literal, name, attr, index, slice, call, filter, test, unary, binary, conditional, list, dict };
  Kind kind;
  std::string text;  // name / attribute / operator / filter / test
  Json literal;
  std::vector<std::unique_ptr<Expr>> args;               // operands, call arguments
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> kwargs;
  bool negated = false;                                  // "is not"
  int line = 0;
};
using ExprPtr = std::unique_ptr<Expr>;

struct Token {
  enum class Kind { name, string, integer, number, op, end };
  Kind kind;
  std::string text;
};

// ---------------------------------------------------------------------------------------------
// Statements.
struct Node {
  enum class Kind { text, output, if_, for_, set, block };
  Kind kind;
  std::string text;                      // text; for `set`: the name; for `for`: the loop variable(s)
  std::string attr;                      // set ns.attr
  std::vector<std::string> loop_vars;
  ExprPtr expr;                          // output, set, for's iterable
  std::vector<std::pair<ExprPtr, std::vector<Node>>> branches;  // if: (condition, body) pairs
  std::vector<Node> body, else_body;
  int line = 0;
};

Node make_node(Node::Kind kind, std::string text = {}) {
  Node n;
  n.kind = kind;
  n.text = std::move(text);
  return n;
}

}  // namespace

struct ChatTemplate::Program {
  std::vector<Node> nodes;
};

namespace {

// ---------------------------------------------------------------------------------------------
// Template source -> pieces (text, {{ }}, {% %}) with Jinja's whitespace rules applied as
// transformers configures them (trim_blocks, lstrip_blocks).
struct Piece {
  enum class Kind { text, expr, stmt };
  Kind kind;
  std::string content;
  int line;
};

std::vector<Piece> split_source(const std::string& src, const std::string& origin) {
  std::vector<Piece> pieces;
  size_t pos = 0;
  int line = 1;
  bool strip_next_all = false, trim_next_newline = false;
  auto count_lines = [&](size_t from, size_t to) {
    line += static_cast<int>(std::count(src.begin() + static_cast<long>(from), src.begin() + static_cast<long>(to), '\n'));
  };
  while (pos <= src.size()) {
    size_t open = src.find('{', pos);
    while (open != std::string::npos && open + 1 < src.size() && src[open + 1] != '{' && src[open + 1] != '%' &&
           src[open + 1] != '#')
      open = src.find('{', open + 1);
    if (open != std::string::npos && open + 1 >= src.size()) open = std::string::npos;
    std::string text = src.substr(pos, open == std::string::npos ? std::string::npos : open - pos);
    const int text_line = line;
    count_lines(pos, open == std::string::npos ? src.size() : open);
    if (strip_next_all) {
      size_t k = 0;
      while (k < text.size() && std::isspace(static_cast<unsigned char>(text[k]))) ++k;
      text.erase(0, k);
    } else if (trim_next_newline) {
      if (text.rfind("\r\n", 0) == 0) text.erase(0, 2);
      else if (!text.empty() && text[0] == '\n') text.erase(0, 1);
    }
    strip_next_all = trim_next_newline = false;
    if (open == std::string::npos) {
      if (!text.empty()) pieces.push_back({Piece::Kind::text, text, text_line});
      break;
    }
    const char type = src[open + 1];
    const std::string close = type == '{' ? "}}" : type == '%' ? "%}" : "#}";
    size_t inner = open + 2;
    const bool strip_before = inner < src.size() && src[inner] == '-';
    const bool plus_before = inner < src.size() && src[inner] == '+';
    if (strip_before || plus_before) ++inner;
    // The closing delimiter, outside string literals.
    size_t end = inner;
    char quote = 0;
    for (; end + 1 < src.size(); ++end) {
      const char c = src[end];
      if (quote) {
        if (c == '\\') ++end;
        else if (c == quote) quote = 0;
      } else if (type != '#' && (c == '\'' || c == '"')) {
        quote = c;
      } else if (src.compare(end, 2, close) == 0) {
        break;
      }
    }
    MLR_CHECK(end + 1 < src.size(), "chat template: {}: line {}: '{}{}' is never closed by '{}'", origin, line, '{',
              type, close);
    size_t content_end = end;
    const bool strip_after = content_end > inner && src[content_end - 1] == '-';
    const bool plus_after = content_end > inner && src[content_end - 1] == '+';
    if (strip_after || plus_after) --content_end;
    // Whitespace before the tag.
    if (strip_before) {
      while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    } else if (type != '{' && !plus_before) {
      // lstrip_blocks: spaces and tabs between the line's start and a block or comment tag.
      size_t k = text.size();
      while (k > 0 && (text[k - 1] == ' ' || text[k - 1] == '\t')) --k;
      // Only blanks since the line's start in the source (a newline that trim_blocks removed still
      // counts, as in Jinja's lexer).
      const size_t blanks_start = open - (text.size() - k);
      const bool starts_line = blanks_start == 0 || src[blanks_start - 1] == '\n';
      if (starts_line) text.erase(k);
    }
    if (!text.empty()) pieces.push_back({Piece::Kind::text, text, text_line});
    const std::string content = src.substr(inner, content_end - inner);
    if (type != '#') pieces.push_back({type == '{' ? Piece::Kind::expr : Piece::Kind::stmt, content, line});
    count_lines(open, end + 2);
    strip_next_all = strip_after;
    trim_next_newline = !strip_after && !plus_after && type != '{';
    pos = end + 2;
  }
  return pieces;
}

// ---------------------------------------------------------------------------------------------
// Tokens of one tag's content.
std::vector<Token> lex(const std::string& s, const std::string& origin, int line) {
  std::vector<Token> out;
  size_t i = 0;
  auto fail = [&](const std::string& what) {
    throw Error(fmt::format("chat template: {}: line {}: {} in '{}'", origin, line, what, s));
  };
  while (i < s.size()) {
    const char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      out.push_back({Token::Kind::name, s.substr(i, j - i)});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      bool is_float = false;
      if (j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        is_float = true;
        ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      out.push_back({is_float ? Token::Kind::number : Token::Kind::integer, s.substr(i, j - i)});
      i = j;
    } else if (c == '\'' || c == '"') {
      std::string value;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] == '\\' && j + 1 < s.size()) {
          const char e = s[++j];
          switch (e) {
            case 'n': value += '\n'; break;
            case 't': value += '\t'; break;
            case 'r': value += '\r'; break;
            case '\\': value += '\\'; break;
            case '\'': value += '\''; break;
            case '"': value += '"'; break;
            default: value += '\\'; value += e;
          }
        } else {
          value += s[j];
        }
      }
      if (j >= s.size()) fail("an unterminated string");
      out.push_back({Token::Kind::string, value});
      i = j + 1;
    } else {
      static const char* const ops[] = {"**", "//", "==", "!=", "<=", ">=", "(", ")", "[", "]", "{", "}", ".", ",",
                                        ":", "|", "~", "+", "-", "*", "/", "%", "<", ">", "="};
      bool matched = false;
      for (const char* op : ops) {
        const size_t n = std::char_traits<char>::length(op);
        if (s.compare(i, n, op) == 0) {
          out.push_back({Token::Kind::op, op});
          i += n;
          matched = true;
          break;
        }
      }
      if (!matched) fail(fmt::format("an unexpected character '{}'", c));
    }
  }
  out.push_back({Token::Kind::end, ""});
  return out;
}

// Recursive descent over one tag's tokens, with Jinja's precedence (loosest first):
// x if c else y; or; and; not; comparisons, in, is; + -; ~; * / // %; unary -; ** ;
// postfix (.a [i] (args)) and filters.
class ExprParser {
 public:
  ExprParser(std::vector<Token> tokens, const std::string& origin, int line, const std::string& source)
      : t_(std::move(tokens)), origin_(origin), line_(line), source_(source) {}

  const Token& peek(size_t ahead = 0) const { return t_[std::min(pos_ + ahead, t_.size() - 1)]; }
  bool at_end() const { return peek().kind == Token::Kind::end; }
  bool is_op(const char* op, size_t ahead = 0) const { return peek(ahead).kind == Token::Kind::op && peek(ahead).text == op; }
  bool is_name(const char* name, size_t ahead = 0) const {
    return peek(ahead).kind == Token::Kind::name && peek(ahead).text == name;
  }
  Token next() { return t_[std::min(pos_++, t_.size() - 1)]; }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(fmt::format("chat template: {}: line {}: {} in '{}'", origin_, line_, what, source_));
  }
  void expect_op(const char* op) {
    if (!is_op(op)) fail(fmt::format("expected '{}', found '{}'", op, peek().text));
    ++pos_;
  }
  std::string expect_name() {
    if (peek().kind != Token::Kind::name) fail(fmt::format("expected a name, found '{}'", peek().text));
    return next().text;
  }
  void expect_end() {
    if (!at_end()) fail(fmt::format("unexpected '{}'", peek().text));
  }

  // Brackets, unary operators and conditionals are parsed by recursion, which a hostile template
  // could drive until the stack overflows: nesting deeper than kMaxNesting is an error.
  static constexpr int kMaxNesting = 256;
  struct Nesting {
    ExprParser& parser;
    explicit Nesting(ExprParser& p) : parser(p) {
      if (++parser.nesting_ > kMaxNesting) {
        --parser.nesting_;
        parser.fail(fmt::format("an expression nested more than {} levels deep", kMaxNesting));
      }
    }
    ~Nesting() { --parser.nesting_; }
    Nesting(const Nesting&) = delete;
    Nesting& operator=(const Nesting&) = delete;
  };

  ExprPtr make(Expr::Kind kind, std::string text = {}) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->text = std::move(text);
    e->line = line_;
    return e;
  }
  ExprPtr binary(std::string op, ExprPtr a, ExprPtr b) {
    auto e = make(Expr::Kind::binary, std::move(op));
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }

  ExprPtr expression() {
    const Nesting nesting(*this);
    ExprPtr value = or_expr();
    if (is_name("if")) {
      ++pos_;
      auto e = make(Expr::Kind::conditional);
      ExprPtr condition = or_expr();
      ExprPtr otherwise;
      if (is_name("else")) {
        ++pos_;
        otherwise = expression();
      }
      e->args.push_back(std::move(condition));
      e->args.push_back(std::move(value));
      if (otherwise) e->args.push_back(std::move(otherwise));
      return e;
    }
    return value;
  }
  ExprPtr or_expr() {
    ExprPtr a = and_expr();
    while (is_name("or")) {
      ++pos_;
      a = binary("or", std::move(a), and_expr());
    }
    return a;
  }
  ExprPtr and_expr() {
    ExprPtr a = not_expr();
    while (is_name("and")) {
      ++pos_;
      a = binary("and", std::move(a), not_expr());
    }
    return a;
  }
  ExprPtr not_expr() {
    const Nesting nesting(*this);
    if (is_name("not")) {
      ++pos_;
      auto e = make(Expr::Kind::unary, "not");
      e->args.push_back(not_expr());
      return e;
    }
    return compare();
  }
  ExprPtr compare() {
    ExprPtr a = add();
    for (;;) {
      if (peek().kind == Token::Kind::op &&
          (peek().text == "==" || peek().text == "!=" || peek().text == "<" || peek().text == ">" ||
           peek().text == "<=" || peek().text == ">=")) {
        const std::string op = next().text;
        a = binary(op, std::move(a), add());
      } else if (is_name("in")) {
        ++pos_;
        a = binary("in", std::move(a), add());
      } else if (is_name("not") && is_name("in", 1)) {
        pos_ += 2;
        a = binary("not in", std::move(a), add());
      } else if (is_name("is")) {
        ++pos_;
        auto e = make(Expr::Kind::test);
        if (is_name("not")) {
          ++pos_;
          e->negated = true;
        }
        // "none", "true" and "false" are names here, like any test.
        e->text = expect_name();
        e->args.push_back(std::move(a));
        a = std::move(e);
      } else {
        return a;
      }
    }
  }
  ExprPtr add() {
    ExprPtr a = concat();
    while (is_op("+") || is_op("-")) {
      const std::string op = next().text;
      a = binary(op, std::move(a), concat());
    }
    return a;
  }
  ExprPtr concat() {
    ExprPtr a = multiply();
    while (is_op("~")) {
      ++pos_;
      a = binary("~", std::move(a), multiply());
    }
    return a;
  }
  ExprPtr multiply() {
    ExprPtr a = unary();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string op = next().text;
      a = binary(op, std::move(a), unary());
    }
    return a;
  }
  ExprPtr unary() {
    const Nesting nesting(*this);
    if (is_op("-")) {
      ++pos_;
      auto e = make(Expr::Kind::unary, "-");
      e->args.push_back(unary());
      return e;
    }
    if (is_op("+")) {
      ++pos_;
      return unary();
    }
    ExprPtr a = postfix(primary());
    if (is_op("**")) {
      ++pos_;
      a = binary("**", std::move(a), unary());
    }
    return a;
  }
  void call_arguments(Expr& e) {
    expect_op("(");
    while (!is_op(")")) {
      if (peek().kind == Token::Kind::name && is_op("=", 1)) {
        std::string key = next().text;
        ++pos_;
        e.kwargs.emplace_back(std::move(key), expression());
      } else {
        e.args.push_back(expression());
      }
      if (!is_op(")")) expect_op(",");
    }
    ++pos_;
  }
  ExprPtr postfix(ExprPtr a) {
    for (;;) {
      if (is_op(".")) {
        ++pos_;
        auto e = make(Expr::Kind::attr, expect_name());
        e->args.push_back(std::move(a));
        a = std::move(e);
      } else if (is_op("[")) {
        ++pos_;
        ExprPtr first, second;
        if (!is_op(":")) first = expression();
        if (is_op(":")) {
          ++pos_;
          if (!is_op("]")) second = expression();
          if (is_op(":")) fail("slices with a step are not supported");
          auto e = make(Expr::Kind::slice);
          e->args.push_back(std::move(a));
          e->args.push_back(std::move(first));
          e->args.push_back(std::move(second));
          a = std::move(e);
        } else {
          auto e = make(Expr::Kind::index);
          e->args.push_back(std::move(a));
          e->args.push_back(std::move(first));
          a = std::move(e);
        }
        expect_op("]");
      } else if (is_op("(")) {
        auto e = make(Expr::Kind::call);
        e->args.push_back(std::move(a));
        call_arguments(*e);
        a = std::move(e);
      } else if (is_op("|")) {
        ++pos_;
        auto e = make(Expr::Kind::filter, expect_name());
        e->args.push_back(std::move(a));
        if (is_op("(")) call_arguments(*e);
        a = std::move(e);
      } else {
        return a;
      }
    }
  }
  ExprPtr primary() {
    const Token t = next();
    switch (t.kind) {
      case Token::Kind::string: {
        auto e = make(Expr::Kind::literal);
        e->literal = t.text;
        // Adjacent string literals concatenate, as in Python.
        while (peek().kind == Token::Kind::string) e->literal = e->literal.get<std::string>() + next().text;
        return e;
      }
      case Token::Kind::integer: {
        auto e = make(Expr::Kind::literal);
        try {
          e->literal = std::stoll(t.text);
        } catch (const std::out_of_range&) {
          fail(fmt::format("the integer {} is too large", t.text));
        }
        return e;
      }
      case Token::Kind::number: {
        auto e = make(Expr::Kind::literal);
        try {
          e->literal = std::stod(t.text);
        } catch (const std::out_of_range&) {
          fail(fmt::format("the number {} is out of range", t.text));
        }
        return e;
      }
      case Token::Kind::name: {
        auto e = make(Expr::Kind::literal);
        if (t.text == "true" || t.text == "True") e->literal = true;
        else if (t.text == "false" || t.text == "False") e->literal = false;
        else if (t.text == "none" || t.text == "None") e->literal = nullptr;
        else return make(Expr::Kind::name, t.text);
        return e;
      }
      case Token::Kind::op:
        if (t.text == "(") {
          ExprPtr e = expression();
          if (is_op(",")) fail("tuples are not supported");
          expect_op(")");
          return e;
        }
        if (t.text == "[") {
          auto e = make(Expr::Kind::list);
          while (!is_op("]")) {
            e->args.push_back(expression());
            if (!is_op("]")) expect_op(",");
          }
          ++pos_;
          return e;
        }
        if (t.text == "{") {
          auto e = make(Expr::Kind::dict);
          while (!is_op("}")) {
            e->args.push_back(expression());
            expect_op(":");
            e->args.push_back(expression());
            if (!is_op("}")) expect_op(",");
          }
          ++pos_;
          return e;
        }
        break;
      case Token::Kind::end:
        fail("an expression ends too early");
    }
    fail(fmt::format("unexpected '{}'", t.text));
  }


 private:
  size_t pos_ = 0;
  int nesting_ = 0;  // Nesting levels open
  std::vector<Token> t_;
  std::string origin_;
  int line_;
  std::string source_;
};

// Pieces -> statement tree.
class TemplateParser {
 public:
  TemplateParser(std::vector<Piece> pieces, const std::string& origin) : pieces_(std::move(pieces)), origin_(origin) {}

  std::vector<Node> parse_all() {
    std::vector<Node> nodes = parse_until({});
    if (i_ < pieces_.size()) fail(pieces_[i_].line, fmt::format("'{{% {} %}}' without its opening tag", stop_word_));
    return nodes;
  }

 private:
  [[noreturn]] void fail(int line, const std::string& what) const {
    throw Error(fmt::format("chat template: {}: line {}: {}", origin_, line, what));
  }
  ExprParser parser_for(const Piece& p) { return ExprParser(lex(p.content, origin_, p.line), origin_, p.line, p.content); }

  // Statements up to one whose first word is in `stops` (left unconsumed, its word in stop_word_).
  // Blocks nest by recursion (here and when rendering): deeper than kMaxBlocks is an error.
  static constexpr int kMaxBlocks = 256;
  std::vector<Node> parse_until(const std::vector<std::string>& stops) {
    if (i_ < pieces_.size() && blocks_ >= kMaxBlocks)
      fail(pieces_[i_].line, fmt::format("statements nested more than {} levels deep", kMaxBlocks));
    ++blocks_;
    struct Leave {
      int& blocks;
      ~Leave() { --blocks; }
    } leave{blocks_};
    std::vector<Node> nodes;
    while (i_ < pieces_.size()) {
      const Piece& p = pieces_[i_];
      if (p.kind == Piece::Kind::text) {
        nodes.push_back(make_node(Node::Kind::text, p.content));
        ++i_;
        continue;
      }
      ExprParser ep = parser_for(p);
      if (p.kind == Piece::Kind::expr) {
        Node n = make_node(Node::Kind::output);
        n.expr = ep.expression();
        ep.expect_end();
        n.line = p.line;
        nodes.push_back(std::move(n));
        ++i_;
        continue;
      }
      const std::string word = ep.peek().kind == Token::Kind::name ? ep.peek().text : "";
      if (std::find(stops.begin(), stops.end(), word) != stops.end()) {
        stop_word_ = word;
        return nodes;
      }
      ++i_;
      ep.next();
      if (word == "if") {
        nodes.push_back(parse_if(ep, p.line));
      } else if (word == "for") {
        nodes.push_back(parse_for(ep, p.line));
      } else if (word == "set") {
        Node n = make_node(Node::Kind::set);
        n.line = p.line;
        n.text = ep.expect_name();
        if (ep.is_op(".")) {
          ep.next();
          n.attr = ep.expect_name();
        }
        if (!ep.is_op("=")) fail(p.line, "'{% set name %}...{% endset %}' blocks are not supported");
        ep.next();
        n.expr = ep.expression();
        ep.expect_end();
        nodes.push_back(std::move(n));
      } else if (word == "generation") {
        // transformers' marker of assistant tokens: renders its body.
        ep.expect_end();
        Node n = make_node(Node::Kind::block);
        n.body = parse_until({"endgeneration"});
        close(p.line, "generation", "endgeneration");
        nodes.push_back(std::move(n));
      } else if (word.empty()) {
        fail(p.line, fmt::format("a tag without a statement: '{{% {} %}}'", p.content));
      } else if (word == "endif" || word == "endfor" || word == "elif" || word == "else" || word == "endgeneration") {
        fail(p.line, fmt::format("'{{% {} %}}' without its opening tag", word));
      } else {
        fail(p.line, fmt::format("the tag '{}' is not supported (supported: if, for, set, generation)", word));
      }
    }
    return nodes;
  }
  void close(int open_line, const char* opened, const char* word) {
    if (i_ >= pieces_.size()) fail(open_line, fmt::format("'{{% {} %}}' is never closed by '{{% {} %}}'", opened, word));
    ExprParser ep = parser_for(pieces_[i_]);
    ep.next();
    ep.expect_end();
    ++i_;
  }
  Node parse_if(ExprParser& ep, int line) {
    Node n = make_node(Node::Kind::if_);
    n.line = line;
    ExprPtr condition = ep.expression();
    ep.expect_end();
    for (;;) {
      std::vector<Node> body = parse_until({"elif", "else", "endif"});
      n.branches.emplace_back(std::move(condition), std::move(body));
      if (i_ >= pieces_.size()) fail(line, "'{% if %}' is never closed by '{% endif %}'");
      ExprParser next = parser_for(pieces_[i_]);
      const std::string word = next.next().text;
      ++i_;
      if (word == "elif") {
        condition = next.expression();
        next.expect_end();
        continue;
      }
      next.expect_end();
      if (word == "else") {
        n.else_body = parse_until({"endif"});
        close(line, "if", "endif");
      }
      return n;
    }
  }
  Node parse_for(ExprParser& ep, int line) {
    Node n = make_node(Node::Kind::for_);
    n.line = line;
    n.loop_vars.push_back(ep.expect_name());
    while (ep.is_op(",")) {
      ep.next();
      n.loop_vars.push_back(ep.expect_name());
    }
    if (!ep.is_name("in")) ep.fail("expected 'in'");
    ep.next();
    n.expr = ep.or_expr();
    if (ep.is_name("if")) ep.fail("loop filters ('for x in xs if ...') are not supported");
    if (ep.is_name("recursive")) ep.fail("recursive loops are not supported");
    ep.expect_end();
    n.body = parse_until({"else", "endfor"});
    if (i_ >= pieces_.size()) fail(line, "'{% for %}' is never closed by '{% endfor %}'");
    ExprParser next = parser_for(pieces_[i_]);
    const std::string word = next.next().text;
    next.expect_end();
    ++i_;
    if (word == "else") {
      n.else_body = parse_until({"endfor"});
      close(line, "for", "endfor");
    }
    return n;
  }

  std::vector<Piece> pieces_;
  std::string origin_;
  size_t i_ = 0;
  int blocks_ = 0;  // parse_until calls open
  std::string stop_word_;
};

// ---------------------------------------------------------------------------------------------
// Evaluation.
class Renderer {
 public:
  Renderer(const std::string& origin, const Json& globals) : origin_(origin) {
    scopes_.emplace_back();
    for (auto it = globals.begin(); it != globals.end(); ++it) scopes_.back()[it.key()] = *it;
  }

  void run(const std::vector<Node>& nodes, std::string& out) {
    for (const Node& n : nodes) {
      spend(n.line);
      if (out.size() > kMaxOutput) fail(n.line, fmt::format("the output exceeds {} bytes", kMaxOutput));
      switch (n.kind) {
        case Node::Kind::text: out += n.text; break;
        case Node::Kind::output: out += to_str(eval(*n.expr)); break;
        case Node::Kind::block: run(n.body, out); break;
        case Node::Kind::set: {
          Value v = eval(*n.expr);
          if (n.attr.empty()) {
            scopes_.back()[n.text] = v.json;
          } else {
            Json* target = lookup(n.text);
            if (!target || !target->is_object()) fail(n.line, fmt::format("'{}' is not a namespace", n.text));
            (*target)[n.attr] = v.json;
          }
          break;
        }
        case Node::Kind::if_: {
          bool taken = false;
          for (const auto& [condition, body] : n.branches) {
            if (truthy(eval(*condition))) {
              run(body, out);
              taken = true;
              break;
            }
          }
          if (!taken) run(n.else_body, out);
          break;
        }
        case Node::Kind::for_: run_for(n, out); break;
      }
    }
  }

 private:
  [[noreturn]] void fail(int line, const std::string& what) const {
    throw Error(fmt::format("chat template: {}: line {}: {}", origin_, line, what));
  }

  // A chat prompt takes a few thousand steps (a step: a statement, an expression or a loop
  // iteration); a template that loops over range(10**9) is refused rather than run for hours.
  static constexpr int64_t kMaxSteps = 1'000'000;
  static constexpr size_t kMaxOutput = size_t{1} << 26;
  static constexpr int64_t kMaxRange = int64_t{1} << 20;
  void spend(int line) {
    if (++steps_ > kMaxSteps) fail(line, fmt::format("rendering takes more than {} steps", kMaxSteps));
  }

  Json* lookup(const std::string& name) {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto found = it->find(name);
      if (found != it->end()) return &found->second;
    }
    return nullptr;
  }

  void run_for(const Node& n, std::string& out) {
    Value iterable = eval(*n.expr);
    if (iterable.undefined) fail(n.line, fmt::format("'{}' is undefined", iterable.what));
    Json items = Json::array();
    const Json& j = iterable.json;
    if (j.is_array()) items = j;
    else if (j.is_object()) for (auto it = j.begin(); it != j.end(); ++it) items.push_back(it.key());
    else if (j.is_string()) for (char c : j.get<std::string>()) items.push_back(std::string(1, c));
    else if (!j.is_null()) fail(n.line, fmt::format("cannot loop over {}", python_repr(j)));
    if (items.empty()) {
      run(n.else_body, out);
      return;
    }
    const int64_t length = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < length; ++i) {
      spend(n.line);
      scopes_.emplace_back();
      auto& scope = scopes_.back();
      const Json& item = items[static_cast<size_t>(i)];
      if (n.loop_vars.size() == 1) {
        scope[n.loop_vars[0]] = item;
      } else {
        if (!item.is_array() || item.size() != n.loop_vars.size())
          fail(n.line, fmt::format("cannot unpack {} into {} names", python_repr(item), n.loop_vars.size()));
        for (size_t k = 0; k < n.loop_vars.size(); ++k) scope[n.loop_vars[k]] = item[k];
      }
      Json loop = Json::object();
      loop["index0"] = i;
      loop["index"] = i + 1;
      loop["revindex0"] = length - 1 - i;
      loop["revindex"] = length - i;
      loop["first"] = i == 0;
      loop["last"] = i == length - 1;
      loop["length"] = length;
      if (i > 0) loop["previtem"] = items[static_cast<size_t>(i - 1)];
      if (i + 1 < length) loop["nextitem"] = items[static_cast<size_t>(i + 1)];
      scope["loop"] = std::move(loop);
      run(n.body, out);
      scopes_.pop_back();
    }
  }

  int64_t as_int(const Value& v, int line) const {
    if (v.json.is_number_integer()) return v.json.get<int64_t>();
    if (v.json.is_number() && std::fabs(v.json.get<double>()) < 9.0e18) return static_cast<int64_t>(v.json.get<double>());
    fail(line, fmt::format("expected a number, got {}", v.undefined ? "undefined '" + v.what + "'" : python_repr(v.json)));
  }

  std::string need_string(const Value& v, int line, const char* what) const {
    if (!v.json.is_string()) fail(line, fmt::format("{} needs a string, got {}", what, v.undefined ? "undefined" : python_repr(v.json)));
    return v.json.get<std::string>();
  }

  Value eval(const Expr& e) {
    spend(e.line);
    switch (e.kind) {
      case Expr::Kind::literal: return Value{e.literal};
      case Expr::Kind::name: {
        if (Json* v = lookup(e.text)) return Value{*v};
        return Value::undef(e.text);
      }
      case Expr::Kind::list: {
        Json a = Json::array();
        for (const auto& x : e.args) a.push_back(eval(*x).json);
        return Value{a};
      }
      case Expr::Kind::dict: {
        Json d = Json::object();
        for (size_t k = 0; k + 1 < e.args.size(); k += 2) d[to_str(eval(*e.args[k]))] = eval(*e.args[k + 1]).json;
        return Value{d};
      }
      case Expr::Kind::attr:
      case Expr::Kind::index: {
        Value base = eval(*e.args[0]);
        std::string what = base.what;
        if (base.undefined) fail(e.line, fmt::format("'{}' is undefined", base.what));
        Value key = e.kind == Expr::Kind::attr ? Value{Json(e.text)} : eval(*e.args[1]);
        const std::string label = e.kind == Expr::Kind::attr ? "." + e.text : "[" + python_repr(key.json) + "]";
        const Json& j = base.json;
        if (j.is_object() && key.json.is_string()) {
          auto it = j.find(key.json.get<std::string>());
          if (it != j.end()) return Value{*it};
          return Value::undef(label);
        }
        if ((j.is_array() || j.is_string()) && key.json.is_number_integer()) {
          const int64_t n = j.is_array() ? static_cast<int64_t>(j.size()) : static_cast<int64_t>(j.get_ref<const std::string&>().size());
          int64_t i = key.json.get<int64_t>();
          if (i < 0) i += n;
          if (i < 0 || i >= n) return Value::undef(label);
          if (j.is_array()) return Value{j[static_cast<size_t>(i)]};
          return Value{Json(std::string(1, j.get_ref<const std::string&>()[static_cast<size_t>(i)]))};
        }
        return Value::undef(label);
      }
      case Expr::Kind::slice: {
        Value base = eval(*e.args[0]);
        if (base.undefined) fail(e.line, fmt::format("'{}' is undefined", base.what));
        const Json& j = base.json;
        if (!j.is_array() && !j.is_string()) fail(e.line, fmt::format("cannot slice {}", python_repr(j)));
        const int64_t n = j.is_array() ? static_cast<int64_t>(j.size()) : static_cast<int64_t>(j.get_ref<const std::string&>().size());
        auto bound = [&](const ExprPtr& x, int64_t fallback) {
          if (!x) return fallback;
          int64_t v = as_int(eval(*x), e.line);
          if (v < 0) v += n;
          return std::clamp<int64_t>(v, 0, n);
        };
        const int64_t from = bound(e.args[1], 0), to = std::max(from, bound(e.args[2], n));
        if (j.is_string()) return Value{Json(j.get<std::string>().substr(static_cast<size_t>(from), static_cast<size_t>(to - from)))};
        Json out = Json::array();
        for (int64_t i = from; i < to; ++i) out.push_back(j[static_cast<size_t>(i)]);
        return Value{out};
      }
      case Expr::Kind::call: return call(e);
      case Expr::Kind::filter: return filter(e);
      case Expr::Kind::test: {
        const bool result = test(e);
        return Value{Json(e.negated ? !result : result)};
      }
      case Expr::Kind::unary: {
        Value v = eval(*e.args[0]);
        if (e.text == "not") return Value{Json(!truthy(v))};
        if (v.json.is_number_integer()) {
          int64_t r = 0;
          if (__builtin_sub_overflow(int64_t{0}, v.json.get<int64_t>(), &r)) fail(e.line, "integer overflow in unary -");
          return Value{Json(r)};
        }
        if (v.json.is_number()) return Value{Json(-v.json.get<double>())};
        fail(e.line, fmt::format("cannot negate {}", python_repr(v.json)));
      }
      case Expr::Kind::conditional: {
        if (truthy(eval(*e.args[0]))) return eval(*e.args[1]);
        if (e.args.size() > 2) return eval(*e.args[2]);
        return Value::undef("the else branch");
      }
      case Expr::Kind::binary: return binary(e);
    }
    fail(e.line, "an unknown expression");
  }

  Value binary(const Expr& e) {
    const std::string& op = e.text;
    if (op == "and") {
      Value a = eval(*e.args[0]);
      return truthy(a) ? eval(*e.args[1]) : a;
    }
    if (op == "or") {
      Value a = eval(*e.args[0]);
      return truthy(a) ? a : eval(*e.args[1]);
    }
    Value a = eval(*e.args[0]), b = eval(*e.args[1]);
    const Json &x = a.json, &y = b.json;
    if (op == "~") return Value{Json(to_str(a) + to_str(b))};
    if (op == "==" || op == "!=") {
      bool equal = a.undefined || b.undefined ? (a.undefined && b.undefined) : x == y;
      return Value{Json(op == "==" ? equal : !equal)};
    }
    if (op == "in" || op == "not in") {
      bool found = false;
      if (y.is_string() && x.is_string()) found = y.get<std::string>().find(x.get<std::string>()) != std::string::npos;
      else if (y.is_array()) found = std::find(y.begin(), y.end(), x) != y.end();
      else if (y.is_object() && x.is_string()) found = y.contains(x.get<std::string>());
      else if (!b.undefined && !y.is_null()) fail(e.line, fmt::format("'in' needs a string, list or mapping on the right, got {}", python_repr(y)));
      else fail(e.line, fmt::format("'{}' is undefined", b.what));
      return Value{Json(op == "in" ? found : !found)};
    }
    if (a.undefined || b.undefined)
      fail(e.line, fmt::format("'{}' is undefined (operator {})", a.undefined ? a.what : b.what, op));
    if (op == "+" && x.is_string() && y.is_string()) return Value{Json(x.get<std::string>() + y.get<std::string>())};
    if (op == "+" && x.is_array() && y.is_array()) {
      Json out = x;
      for (const auto& item : y) out.push_back(item);
      return Value{out};
    }
    if (op == "*" && x.is_string() && y.is_number_integer()) {
      if (y.get<int64_t>() > 0 && x.get_ref<const std::string&>().size() * static_cast<size_t>(std::min<int64_t>(y.get<int64_t>(), kMaxRange)) > kMaxOutput)
        fail(e.line, fmt::format("a string repeated to more than {} bytes", kMaxOutput));
      if (y.get<int64_t>() > static_cast<int64_t>(kMaxOutput)) fail(e.line, "a string repeated too many times");
      std::string out;
      for (int64_t i = 0; i < y.get<int64_t>(); ++i) out += x.get<std::string>();
      return Value{Json(out)};
    }
    if (x.is_number() && y.is_number() && !x.is_boolean() && !y.is_boolean()) {
      const bool ints = x.is_number_integer() && y.is_number_integer();
      const double dx = x.get<double>(), dy = y.get<double>();
      if (op == "<") return Value{Json(dx < dy)};
      if (op == ">") return Value{Json(dx > dy)};
      if (op == "<=") return Value{Json(dx <= dy)};
      if (op == ">=") return Value{Json(dx >= dy)};
      if ((op == "/" || op == "//" || op == "%") && dy == 0) fail(e.line, "division by zero");
      if (ints) {
        const int64_t ix = x.get<int64_t>(), iy = y.get<int64_t>();
        int64_t r = 0;
        auto checked = [&](bool overflow) {
          if (overflow) fail(e.line, fmt::format("integer overflow in {} {} {}", ix, op, iy));
          return Value{Json(r)};
        };
        if (op == "+") return checked(__builtin_add_overflow(ix, iy, &r));
        if (op == "-") return checked(__builtin_sub_overflow(ix, iy, &r));
        if (op == "*") return checked(__builtin_mul_overflow(ix, iy, &r));
        // Python's floor division and modulo (the result takes the divisor's sign).
        if (op == "//" || op == "%") {
          if (iy == -1) {
            if (op == "%") return Value{Json(int64_t{0})};
            return checked(__builtin_sub_overflow(int64_t{0}, ix, &r));
          }
          int64_t q = ix / iy, m = ix % iy;
          if (m != 0 && ((m < 0) != (iy < 0))) {
            q -= 1;
            m += iy;
          }
          return Value{Json(op == "//" ? q : m)};
        }
      }
      if (op == "+") return Value{Json(dx + dy)};
      if (op == "-") return Value{Json(dx - dy)};
      if (op == "*") return Value{Json(dx * dy)};
      if (op == "/") return Value{Json(dx / dy)};
      if (op == "//") return Value{Json(std::floor(dx / dy))};
      if (op == "%") return Value{Json(dx - dy * std::floor(dx / dy))};
      if (op == "**") {
        const double p = std::pow(dx, dy);
        if (ints && y.get<int64_t>() >= 0 && std::fabs(p) < 9.0e18) return Value{Json(static_cast<int64_t>(std::llround(p)))};
        return Value{Json(p)};
      }
    }
    if (x.is_string() && y.is_string() && (op == "<" || op == ">" || op == "<=" || op == ">=")) {
      const int c = x.get<std::string>().compare(y.get<std::string>());
      return Value{Json(op == "<" ? c < 0 : op == ">" ? c > 0 : op == "<=" ? c <= 0 : c >= 0)};
    }
    fail(e.line, fmt::format("operator {} is not defined for {} and {}", op, python_repr(x), python_repr(y)));
  }

  bool test(const Expr& e) {
    const Value v = eval(*e.args[0]);
    const Json& j = v.json;
    const std::string& t = e.text;
    if (t == "defined") return !v.undefined || is_function(v);
    if (t == "undefined") return v.undefined && !is_function(v);
    if (t == "none") return !v.undefined && j.is_null();
    if (t == "string") return !v.undefined && j.is_string();
    if (t == "number") return !v.undefined && j.is_number();
    if (t == "integer") return !v.undefined && j.is_number_integer();
    if (t == "float") return !v.undefined && j.is_number_float();
    if (t == "boolean") return !v.undefined && j.is_boolean();
    if (t == "true") return !v.undefined && j.is_boolean() && j.get<bool>();
    if (t == "false") return !v.undefined && j.is_boolean() && !j.get<bool>();
    if (t == "mapping") return !v.undefined && j.is_object();
    if (t == "sequence" || t == "iterable") return !v.undefined && (j.is_array() || j.is_string() || j.is_object());
    if (t == "even" || t == "odd") {
      if (!j.is_number_integer()) fail(e.line, fmt::format("the test '{}' needs an integer", t));
      return (j.get<int64_t>() % 2 == 0) == (t == "even");
    }
    fail(e.line, fmt::format("the test '{}' is not supported", t));
  }

  // The functions a template may call by name are "defined" for `is defined`.
  static bool is_function(const Value& v) {
    return v.undefined && (v.what == "raise_exception" || v.what == "strftime_now" || v.what == "range" ||
                           v.what == "namespace");
  }

  Value call(const Expr& e) {
    const Expr& callee = *e.args[0];
    std::vector<Value> args;
    for (size_t k = 1; k < e.args.size(); ++k) args.push_back(eval(*e.args[k]));
    if (callee.kind == Expr::Kind::name && !lookup(callee.text)) {
      const std::string& f = callee.text;
      if (f == "raise_exception") {
        fail(e.line, fmt::format("the template raised an exception: {}", args.empty() ? "" : to_str(args[0])));
      }
      if (f == "range") {
        if (args.empty() || args.size() > 2) fail(e.line, "range() takes one or two integers");
        int64_t from = 0, to = as_int(args[0], e.line);
        if (args.size() == 2) from = to, to = as_int(args[1], e.line);
        if (to - from > kMaxRange) fail(e.line, fmt::format("range() of more than {} numbers", kMaxRange));
        Json out = Json::array();
        for (int64_t i = from; i < to; ++i) out.push_back(i);
        return Value{out};
      }
      if (f == "namespace") {
        Json ns = Json::object();
        for (const auto& [key, value] : e.kwargs) ns[key] = eval(*value).json;
        return Value{ns};
      }
      if (f == "strftime_now") {
        const std::string format = args.empty() ? "" : need_string(args[0], e.line, "strftime_now");
        const std::time_t now = std::time(nullptr);
        std::tm tm{};
        localtime_r(&now, &tm);
        char buf[256];
        const size_t n = std::strftime(buf, sizeof buf, format.c_str(), &tm);
        return Value{Json(std::string(buf, n))};
      }
      fail(e.line, fmt::format("the function '{}' is not defined", f));
    }
    if (callee.kind != Expr::Kind::attr) fail(e.line, "only functions and string or mapping methods can be called");
    Value self = eval(*callee.args[0]);
    if (self.undefined) fail(e.line, fmt::format("'{}' is undefined", self.what));
    const std::string& m = callee.text;
    const Json& j = self.json;
    if (j.is_string()) {
      const std::string s = j.get<std::string>();
      auto strip_set = [&](size_t k) { return args.size() > k && !args[k].json.is_null() ? to_str(args[k]) : std::string(" \t\n\r\f\v"); };
      if (m == "strip" || m == "lstrip" || m == "rstrip") {
        const std::string chars = strip_set(0);
        size_t b = 0, end = s.size();
        if (m != "rstrip") while (b < end && chars.find(s[b]) != std::string::npos) ++b;
        if (m != "lstrip") while (end > b && chars.find(s[end - 1]) != std::string::npos) --end;
        return Value{Json(s.substr(b, end - b))};
      }
      if (m == "upper" || m == "lower") {
        std::string out = s;
        for (char& c : out) c = static_cast<char>(m == "upper" ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
        return Value{Json(out)};
      }
      if (m == "title") return filter_value("title", self, {}, e.line);
      if (m == "startswith" || m == "endswith") {
        const std::string x = args.empty() ? "" : need_string(args[0], e.line, m.c_str());
        const bool r = m == "startswith" ? s.rfind(x, 0) == 0 : (s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0);
        return Value{Json(r)};
      }
      if (m == "replace") {
        if (args.size() != 2) fail(e.line, "str.replace() takes two strings");
        return filter_value("replace", self, args, e.line);
      }
      if (m == "split") {
        Json out = Json::array();
        if (args.empty() || args[0].json.is_null()) {
          size_t i = 0;
          while (i < s.size()) {
            while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
            size_t k = i;
            while (k < s.size() && !std::isspace(static_cast<unsigned char>(s[k]))) ++k;
            if (k > i) out.push_back(s.substr(i, k - i));
            i = k;
          }
        } else {
          const std::string sep = need_string(args[0], e.line, "str.split");
          if (sep.empty()) fail(e.line, "str.split(): empty separator");
          size_t start = 0, at;
          while ((at = s.find(sep, start)) != std::string::npos) {
            out.push_back(s.substr(start, at - start));
            start = at + sep.size();
          }
          out.push_back(s.substr(start));
        }
        return Value{out};
      }
    }
    if (j.is_object()) {
      if (m == "items" || m == "keys" || m == "values") {
        Json out = Json::array();
        for (auto it = j.begin(); it != j.end(); ++it) {
          if (m == "items") out.push_back(Json::array({it.key(), *it}));
          else if (m == "keys") out.push_back(it.key());
          else out.push_back(*it);
        }
        return Value{out};
      }
      if (m == "get") {
        if (args.empty()) fail(e.line, "dict.get() needs a key");
        auto it = j.find(to_str(args[0]));
        if (it != j.end()) return Value{*it};
        return args.size() > 1 ? args[1] : Value{Json()};
      }
    }
    fail(e.line, fmt::format("the method '{}' is not supported on {}", m, python_repr(j)));
  }

  Value filter(const Expr& e) {
    Value v = eval(*e.args[0]);
    std::vector<Value> args;
    for (size_t k = 1; k < e.args.size(); ++k) args.push_back(eval(*e.args[k]));
    if (e.text == "tojson") {
      int indent = -1;
      for (const auto& [key, value] : e.kwargs) {
        if (key != "indent") fail(e.line, fmt::format("tojson: the argument '{}' is not supported", key));
        const Value x = eval(*value);
        if (!x.json.is_null()) indent = static_cast<int>(as_int(x, e.line));
      }
      if (!args.empty() && !args[0].json.is_null()) indent = static_cast<int>(as_int(args[0], e.line));
      if (v.undefined) fail(e.line, fmt::format("'{}' is undefined", v.what));
      std::string out;
      dump_python_json(v.json, indent, 0, out);
      return Value{Json(out)};
    }
    if (!e.kwargs.empty()) fail(e.line, fmt::format("the filter '{}' takes no keyword arguments", e.text));
    return filter_value(e.text, v, args, e.line);
  }

  Value filter_value(const std::string& f, const Value& v, const std::vector<Value>& args, int line) {
    const Json& j = v.json;
    if (f == "default" || f == "d") {
      const bool use_default = v.undefined || (args.size() > 1 && truthy(args[1]) && !truthy(v));
      return use_default ? (args.empty() ? Value{Json("")} : args[0]) : v;
    }
    if (f == "safe") return v;
    if (v.undefined) fail(line, fmt::format("'{}' is undefined (filter {})", v.what, f));
    if (f == "length" || f == "count") {
      if (j.is_string()) return Value{Json(static_cast<int64_t>(j.get_ref<const std::string&>().size()))};
      if (j.is_array() || j.is_object()) return Value{Json(static_cast<int64_t>(j.size()))};
      fail(line, fmt::format("the filter '{}' needs a string, list or mapping, got {}", f, python_repr(j)));
    }
    if (f == "string") return Value{Json(to_str(v))};
    if (f == "list") {
      if (j.is_array()) return v;
      Json out = Json::array();
      if (j.is_string()) for (char c : j.get<std::string>()) out.push_back(std::string(1, c));
      else if (j.is_object()) for (auto it = j.begin(); it != j.end(); ++it) out.push_back(it.key());
      else fail(line, fmt::format("the filter 'list' cannot convert {}", python_repr(j)));
      return Value{out};
    }
    if (f == "first" || f == "last") {
      if (j.is_array()) return j.empty() ? Value::undef(f) : Value{f == "first" ? j.front() : j.back()};
      if (j.is_string()) {
        const std::string& s = j.get_ref<const std::string&>();
        return s.empty() ? Value::undef(f) : Value{Json(std::string(1, f == "first" ? s.front() : s.back()))};
      }
      fail(line, fmt::format("the filter '{}' needs a list or string", f));
    }
    if (f == "reverse") {
      if (j.is_string()) {
        std::string s = j.get<std::string>();
        std::reverse(s.begin(), s.end());
        return Value{Json(s)};
      }
      if (j.is_array()) {
        Json out = Json::array();
        for (auto it = j.rbegin(); it != j.rend(); ++it) out.push_back(*it);
        return Value{out};
      }
      fail(line, "the filter 'reverse' needs a list or string");
    }
    if (f == "join") {
      if (!j.is_array()) fail(line, "the filter 'join' needs a list");
      const std::string sep = args.empty() ? "" : to_str(args[0]);
      std::string out;
      for (size_t k = 0; k < j.size(); ++k) out += (k ? sep : "") + to_str(Value{j[k]});
      return Value{Json(out)};
    }
    if (f == "items") return call_items(j, line);
    if (f == "int") {
      if (j.is_number_integer()) return v;
      if (j.is_number()) return Value{Json(as_int(v, line))};
      if (j.is_string()) {
        try {
          return Value{Json(static_cast<int64_t>(std::stoll(j.get<std::string>())))};
        } catch (const std::exception&) {
          return Value{Json(int64_t{0})};
        }
      }
      return Value{Json(int64_t{0})};
    }
    if (f == "float") {
      if (j.is_number()) return Value{Json(j.get<double>())};
      try {
        return Value{Json(std::stod(to_str(v)))};
      } catch (const std::exception&) {
        return Value{Json(0.0)};
      }
    }
    // String filters.
    if (!j.is_string() && f != "upper" && f != "lower" && f != "trim" && f != "capitalize" && f != "title" && f != "replace")
      fail(line, fmt::format("the filter '{}' is not supported", f));
    std::string s = to_str(v);
    if (f == "trim") {
      size_t b = 0, end = s.size();
      while (b < end && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
      while (end > b && std::isspace(static_cast<unsigned char>(s[end - 1]))) --end;
      return Value{Json(s.substr(b, end - b))};
    }
    if (f == "upper" || f == "lower") {
      for (char& c : s) c = static_cast<char>(f == "upper" ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
      return Value{Json(s)};
    }
    if (f == "capitalize" || f == "title") {
      bool start = true;
      for (size_t k = 0; k < s.size(); ++k) {
        const unsigned char c = static_cast<unsigned char>(s[k]);
        s[k] = static_cast<char>(start ? std::toupper(c) : std::tolower(c));
        start = f == "title" ? !std::isalnum(c) : false;
      }
      return Value{Json(s)};
    }
    if (f == "replace") {
      if (args.size() < 2) fail(line, "the filter 'replace' needs two strings");
      const std::string from = to_str(args[0]), to = to_str(args[1]);
      if (from.empty()) return Value{Json(s)};
      std::string out;
      size_t start = 0, at;
      while ((at = s.find(from, start)) != std::string::npos) {
        out += s.substr(start, at - start) + to;
        start = at + from.size();
      }
      return Value{Json(out + s.substr(start))};
    }
    fail(line, fmt::format("the filter '{}' is not supported", f));
  }

  Value call_items(const Json& j, int line) {
    if (!j.is_object()) fail(line, "the filter 'items' needs a mapping");
    Json out = Json::array();
    for (auto it = j.begin(); it != j.end(); ++it) out.push_back(Json::array({it.key(), *it}));
    return Value{out};
  }

  std::string origin_;
  std::vector<std::map<std::string, Json>> scopes_;
  int64_t steps_ = 0;
};

}  // namespace

ChatTemplate::ChatTemplate(const std::string& source, const std::string& origin)
    : origin_(origin), program_(std::make_unique<Program>()) {
  program_->nodes = TemplateParser(split_source(source, origin), origin).parse_all();
}
ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

std::string ChatTemplate::render(const nlohmann::ordered_json& variables) const {
  Renderer renderer(origin_, variables);
  std::string out;
  renderer.run(program_->nodes, out);
  return out;
}

std::string ChatTemplate::apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                const std::string& bos_token, const std::string& eos_token) const {
  Json vars = Json::object();
  Json list = Json::array();
  for (const ChatMessage& m : messages) list.push_back(Json{{"role", m.role}, {"content", m.content}});
  vars["messages"] = std::move(list);
  vars["add_generation_prompt"] = add_generation_prompt;
  vars["bos_token"] = bos_token;
  vars["eos_token"] = eos_token;
  // apply_chat_template always passes these (None without tools or documents).
  vars["tools"] = nullptr;
  vars["documents"] = nullptr;
  return render(vars);
}

std::optional<CheckpointChatTemplate> load_chat_template(const std::string& dir) {
  const fs::path jinja = fs::path(dir) / "chat_template.jinja";
  const tokenizer_detail::TokenizerConfig config = tokenizer_detail::read_tokenizer_config(dir);
  std::optional<ChatTemplate> chat_template;
  std::error_code ec;
  if (fs::is_regular_file(jinja, ec)) {
    chat_template.emplace(tokenizer_detail::read_file(jinja), jinja.string());
  } else if (!config.path.empty()) {
    const nlohmann::json j = tokenizer_detail::parse_json(config.path, config.contents);
    auto it = j.find("chat_template");
    if (it != j.end() && !it->is_null()) {
      const std::string origin = config.path.string() + " (chat_template)";
      if (it->is_string()) {
        chat_template.emplace(it->get<std::string>(), origin);
      } else if (it->is_array()) {
        // Named templates: [{"name": "default", "template": "..."}, {"name": "tool_use", ...}].
        for (const auto& entry : *it) {
          if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
              entry["template"].is_string())
            chat_template.emplace(entry["template"].get<std::string>(), origin + "[default]");
        }
        MLR_CHECK(chat_template, "chat template: {}: \"chat_template\" is a list without a \"default\" entry",
                  config.path.string());
      } else {
        throw Error(fmt::format("chat template: {}: \"chat_template\" must be a string or a list of {{name, template}}",
                                config.path.string()));
      }
    }
  }
  if (!chat_template) return std::nullopt;
  return CheckpointChatTemplate{std::move(*chat_template), config.bos_token.value_or(""), config.eos_token.value_or("")};
}

}  // namespace mlr
