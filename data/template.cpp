#include "data/template.h"

#include <algorithm>
#include <functional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "data/text.h"
#include "tensor/error.h"

namespace mlr::data {

namespace {

const char* const kAlpacaPrompt =
    "Below is an instruction that describes a task{{#input}}, paired with an input that provides further "
    "context{{/input}}. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{{instruction}}\n\n{{#input}}### Input:\n{{input}}\n\n{{/input}}### Response:\n";

}  // namespace

Template default_template(Format format) {
  Template t;
  t.target_delimiter = " ";
  switch (format) {
    case Format::alpaca:
      t.prompt = kAlpacaPrompt;
      t.target = "{{output}}";
      t.target_delimiter = "";
      break;
    case Format::prompt_completion:
      t.prompt = "{{prompt}}";
      t.target = "{{completion}}";
      t.target_delimiter = "";
      break;
    case Format::chat:
      // Alpaca-style turns; a blank line separates a message from the one before it.
      t.system = "{{content}}";
      t.user = "{{^first}}\n\n{{/first}}### Instruction:\n{{content}}\n\n### Response:\n";
      t.assistant = "{{content}}";
      t.target_delimiter = "";
      break;
    case Format::gsm8k:
      t.prompt = "Question: {{question}}\nAnswer:";
      t.target = "{{answer}}";
      break;
    case Format::mmlu:
      t.prompt =
          "The following are multiple choice questions (with answers) about {{subject}}.\n\n"
          "{{question|strip}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\nAnswer:";
      t.choices = {"A", "B", "C", "D"};
      break;
    case Format::boolq:
      t.prompt = "{{passage}}\nQuestion: {{question}}?\nAnswer:";
      t.choices = {"no", "yes"};
      break;
    case Format::cb:
      t.prompt = "{{premise}}\nQuestion: {{hypothesis}}. True, False, or Neither?\nAnswer:";
      t.choices = {"True", "False", "Neither"};
      break;
    case Format::copa:
      t.prompt = "{{premise|strip|drop_last}} {{connector}}";
      t.choices = {" {{choice1|lower_first}}", " {{choice2|lower_first}}"};
      break;
    case Format::multirc:
      t.prompt = "{{paragraph}}\nQuestion: {{question}}\nAnswer:";
      t.choices = {"{{answer}}\nIs the answer correct? yes", "{{answer}}\nIs the answer correct? no"};
      break;
    case Format::rte:
      t.prompt = "{{premise}}\nQuestion: {{hypothesis}} True or False?\nAnswer:";
      t.choices = {"True", "False"};
      break;
    case Format::wic:
      t.prompt =
          "Sentence 1: {{sentence1}}\nSentence 2: {{sentence2}}\nQuestion: Is the word '{{sentence1_word}}' used in "
          "the same way in the two sentences above?\nAnswer:";
      t.choices = {"no", "yes"};
      break;
    case Format::wsc:
      t.prompt =
          "Passage: {{passage}}\nQuestion: In the passage above, does the pronoun \"*{{span2_text}}*\" refer to "
          "\"*{{span1_text}}*\"?\nAnswer:";
      t.choices = {"no", "yes"};
      break;
  }
  return t;
}

std::string Template::canonical() const {
  const nlohmann::json j = {{"prompt", prompt},
                            {"target", target},
                            {"choices", choices},
                            {"target_delimiter", target_delimiter},
                            {"system", system},
                            {"user", user},
                            {"assistant", assistant}};
  return j.dump();
}

namespace {

using Filter = std::string (*)(std::string_view);

const std::vector<std::pair<std::string_view, Filter>>& filters() {
  static const std::vector<std::pair<std::string_view, Filter>> table = {
      {"strip", [](std::string_view s) { return std::string(strip(s)); }},
      {"rstrip", [](std::string_view s) { return std::string(rstrip(s)); }},
      {"drop_last", [](std::string_view s) { return drop_last(s); }},
      {"lower_first", [](std::string_view s) { return lower_first(s); }},
      {"upper_first", [](std::string_view s) { return upper_first(s); }},
  };
  return table;
}

// A parsed template: a tree of literal text, field references and conditional sections.
struct Node {
  enum Kind { kText, kField, kSection } kind = kText;
  std::string text;              // kText: the literal; kField/kSection: the field name
  std::vector<Filter> filters;   // kField
  bool inverted = false;         // kSection: {{^field}}
  std::vector<Node> children;    // kSection
};

using Nodes = std::vector<Node>;

// Field lookup for one render: the record's fields plus extras (chat: content, role, first).
using Lookup = std::function<const std::string*(std::string_view)>;

void render_nodes(const Nodes& nodes, const Lookup& lookup, std::string& out) {
  for (const Node& n : nodes) {
    switch (n.kind) {
      case Node::kText: out += n.text; break;
      case Node::kField: {
        const std::string* value = lookup(n.text);
        MLR_CHECK(value != nullptr, "field \"{}\" is missing", n.text);
        if (n.filters.empty()) {
          out += *value;
        } else {
          std::string v = *value;
          for (Filter f : n.filters) v = f(v);
          out += v;
        }
        break;
      }
      case Node::kSection: {
        const std::string* value = lookup(n.text);
        const bool present = value != nullptr && !value->empty();
        if (present != n.inverted) render_nodes(n.children, lookup, out);
        break;
      }
    }
  }
}

class Parser {
 public:
  Parser(std::string_view text, const std::vector<std::string>& fields, std::string context)
      : text_(text), fields_(fields), context_(std::move(context)) {}

  Nodes parse() {
    Nodes nodes = parse_until("");
    return nodes;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(fmt::format("data: {}: {} (template \"{}\")", context_, what, preview(text_, 60)));
  }

  void check_field(const std::string& name) const {
    if (std::find(fields_.begin(), fields_.end(), name) != fields_.end()) return;
    fail(fmt::format("unknown field {{{{{}}}}}; this format provides {}", name, fmt::join(fields_, ", ")));
  }

  // Parses nodes until "{{/close}}" (or the end of the text when close is empty).
  Nodes parse_until(const std::string& close) {
    Nodes nodes;
    while (pos_ < text_.size()) {
      const size_t open = text_.find("{{", pos_);
      if (open == std::string_view::npos) {
        nodes.push_back({Node::kText, std::string(text_.substr(pos_)), {}, false, {}});
        pos_ = text_.size();
        break;
      }
      if (open > pos_) nodes.push_back({Node::kText, std::string(text_.substr(pos_, open - pos_)), {}, false, {}});
      const size_t end = text_.find("}}", open + 2);
      if (end == std::string_view::npos) fail("'{{' without a closing '}}'");
      std::string tag(strip(text_.substr(open + 2, end - open - 2)));
      pos_ = end + 2;
      if (tag.empty()) fail("empty {{}}");
      if (tag[0] == '/') {
        const std::string name(strip(std::string_view(tag).substr(1)));
        if (name != close) fail(close.empty() ? fmt::format("{{{{/{}}}}} closes no section", name)
                                              : fmt::format("{{{{/{}}}}} where {{{{/{}}}}} was expected", name, close));
        return nodes;
      }
      if (tag[0] == '#' || tag[0] == '^') {
        Node section{Node::kSection, std::string(strip(std::string_view(tag).substr(1))), {}, tag[0] == '^', {}};
        check_field(section.text);
        section.children = parse_until(section.text);
        nodes.push_back(std::move(section));
        continue;
      }
      Node field{Node::kField, "", {}, false, {}};
      size_t bar = tag.find('|');
      field.text = std::string(strip(std::string_view(tag).substr(0, bar)));
      check_field(field.text);
      while (bar != std::string::npos) {
        const size_t next = tag.find('|', bar + 1);
        const std::string name(strip(std::string_view(tag).substr(bar + 1, next == std::string::npos ? std::string::npos : next - bar - 1)));
        const auto& table = filters();
        const auto it = std::find_if(table.begin(), table.end(), [&](const auto& f) { return f.first == name; });
        if (it == table.end()) {
          std::vector<std::string_view> names;
          for (const auto& f : table) names.push_back(f.first);
          fail(fmt::format("unknown filter '{}' (known: {})", name, fmt::join(names, ", ")));
        }
        field.filters.push_back(it->second);
        bar = next;
      }
      nodes.push_back(std::move(field));
    }
    if (!close.empty()) fail(fmt::format("{{{{#{}}}}} is not closed by {{{{/{}}}}}", close, close));
    return nodes;
  }

  std::string_view text_;
  const std::vector<std::string>& fields_;
  std::string context_;
  size_t pos_ = 0;
};

}  // namespace

struct CompiledTemplate::Impl {
  Format format;
  std::string dataset;
  Nodes prompt, target;
  std::vector<Nodes> choices;
  std::string delimiter;
  Nodes system, user, assistant;
};

CompiledTemplate::CompiledTemplate(const Template& t, Format format, std::string dataset) : impl_(std::make_unique<Impl>()) {
  impl_->format = format;
  impl_->dataset = dataset;
  impl_->delimiter = t.target_delimiter;
  const auto& fields = format_fields(format);
  const auto parse = [&](const std::string& text, const std::string& key) {
    return Parser(text, fields, fmt::format("dataset '{}': template {}", dataset, key)).parse();
  };
  if (format == Format::chat) {
    MLR_CHECK(!t.assistant.empty(), "data: dataset '{}': the chat template needs an 'assistant' entry", dataset);
    impl_->system = parse(t.system, "system");
    impl_->user = parse(t.user, "user");
    impl_->assistant = parse(t.assistant, "assistant");
    return;
  }
  impl_->prompt = parse(t.prompt, "prompt");
  for (size_t i = 0; i < t.choices.size(); ++i) impl_->choices.push_back(parse(t.choices[i], fmt::format("choices[{}]", i)));
  if (t.choices.empty()) {
    MLR_CHECK(!t.target.empty(), "data: dataset '{}': the template has neither 'target' nor 'choices'", dataset);
    impl_->target = parse(t.target, "target");
  }
}

CompiledTemplate::~CompiledTemplate() = default;
CompiledTemplate::CompiledTemplate(CompiledTemplate&&) noexcept = default;
CompiledTemplate& CompiledTemplate::operator=(CompiledTemplate&&) noexcept = default;

Example CompiledTemplate::render(const Record& record, std::string_view where) const {
  const Impl& m = *impl_;
  Example ex;
  ex.task = m.dataset;
  try {
    if (m.format == Format::chat) {
      // Messages accumulate into the prompt until an assistant message closes a turn.
      std::string pending;
      std::vector<Turn> turns;
      for (size_t i = 0; i < record.messages.size(); ++i) {
        const Message& msg = record.messages[i];
        const std::string first = i == 0 ? "1" : "";
        const Lookup lookup = [&](std::string_view name) -> const std::string* {
          if (name == "content") return &msg.content;
          if (name == "role") return &msg.role;
          if (name == "first") return &first;
          return record.field(name);
        };
        if (msg.role == "assistant") {
          Turn turn{std::move(pending), m.delimiter};
          render_nodes(m.assistant, lookup, turn.target);
          turns.push_back(std::move(turn));
          pending.clear();
        } else {
          render_nodes(msg.role == "system" ? m.system : m.user, lookup, pending);
        }
      }
      MLR_CHECK(!turns.empty(), "the conversation has no assistant message");
      ex.prompt = std::move(turns.back().prompt);
      ex.target = std::move(turns.back().target);
      turns.pop_back();
      ex.history = std::move(turns);
      return ex;
    }
    const Lookup lookup = [&](std::string_view name) { return record.field(name); };
    render_nodes(m.prompt, lookup, ex.prompt);
    if (m.choices.empty()) {
      ex.target = m.delimiter;
      render_nodes(m.target, lookup, ex.target);
      return ex;
    }
    MLR_CHECK(record.label >= 0 && record.label < static_cast<int>(m.choices.size()),
              "label {} has no choice in the template ({} choices)", record.label, m.choices.size());
    for (const Nodes& choice : m.choices) {
      std::string c = m.delimiter;
      render_nodes(choice, lookup, c);
      ex.choices.push_back(std::move(c));
    }
    ex.gold = record.label;
    ex.target = ex.choices[static_cast<size_t>(record.label)];
  } catch (const Error& e) {
    // Add where the record came from.
    throw Error(fmt::format("data: {}: {}", where, e.message()));
  }
  return ex;
}

}  // namespace mlr::data
