// Chat templates: the renderings of transformers' apply_chat_template for the templates of several
// model families and a template covering the rest of the Jinja subset
// (tests/fixtures/llama/generate/reference.json, scripts/fixtures/make_generate_fixtures.py), the
// checkpoint's own template, and errors that name the construct and the line.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "llama/chat_template.h"
#include "tensor/error.h"

namespace fs = std::filesystem;
using namespace mlr;

namespace {

const fs::path kFixture = fs::path(MLR_SOURCE_DIR) / "tests" / "fixtures" / "llama" / "generate";

nlohmann::ordered_json reference() {
  std::ifstream in(kFixture / "reference.json");
  REQUIRE(in);
  return nlohmann::ordered_json::parse(in);
}

std::string error_of_template(const std::string& source, const nlohmann::ordered_json& vars = {{"messages", nlohmann::ordered_json::array()}}) {
  try {
    ChatTemplate t(source, "t.jinja");
    t.render(vars);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("chat template: renderings equal apply_chat_template for every template and conversation") {
  const nlohmann::ordered_json ref = reference();
  REQUIRE(ref["templates"].size() >= 7);
  for (const auto& [name, entry] : ref["templates"].items()) {
    CAPTURE(name);
    const ChatTemplate t(entry["template"].get<std::string>(), name);
    for (const auto& render : entry["renders"]) {
      std::vector<ChatMessage> messages;
      for (const auto& m : render["messages"]) messages.push_back({m["role"], m["content"]});
      CAPTURE(render["messages"].dump());
      const bool add = render["add_generation_prompt"];
      CAPTURE(add);
      // apply() renders what apply_chat_template passes; with extra variables (its keyword
      // arguments), render() gets the same set plus those, in the file's key order.
      auto rendered = [&] {
        if (!render.contains("variables")) return t.apply(messages, add, "<s>", "</s>");
        nlohmann::ordered_json vars = {{"messages", render["messages"]},
                                       {"add_generation_prompt", add}, {"bos_token", "<s>"}, {"eos_token", "</s>"},
                                       {"tools", nullptr}, {"documents", nullptr}};
        for (const auto& [key, value] : render["variables"].items()) vars[key] = value;
        return t.render(vars);
      };
      if (render.contains("error")) {
        std::string error;
        try {
          rendered();
        } catch (const Error& e) {
          error = e.what();
        }
        CHECK(error.find("the template raised an exception: " + render["error"].get<std::string>()) != std::string::npos);
      } else {
        CHECK(rendered() == render["text"].get<std::string>());
      }
    }
  }
}

TEST_CASE("chat template: a checkpoint's template from tokenizer_config.json, with its special tokens") {
  const nlohmann::ordered_json ref = reference();
  auto loaded = load_chat_template((kFixture / "model").string());
  REQUIRE(loaded);
  CHECK(loaded->eos_token == "<|im_end|>");
  CHECK(loaded->bos_token.empty());
  const std::vector<ChatMessage> messages = {{"system", ref["chat"]["system"]}, {"user", ref["chat"]["prompt"]}};
  CHECK(loaded->chat_template.apply(messages, true, loaded->bos_token, loaded->eos_token) ==
        ref["chat"]["rendered"].get<std::string>());
  // A checkpoint without one (tokenizer_config.json without chat_template, or no config at all).
  CHECK(!load_chat_template((fs::path(MLR_SOURCE_DIR) / "tests" / "fixtures" / "tokenizer" / "qwen2").string()));
  CHECK(!load_chat_template((fs::path(MLR_SOURCE_DIR) / "tests" / "fixtures" / "llama" / "models" / "llama2_mha").string()));
}

TEST_CASE("chat template: whitespace control, trim_blocks and lstrip_blocks as transformers sets them") {
  const nlohmann::ordered_json vars = {{"xs", {1, 2}}};
  CHECK(ChatTemplate("{% for x in xs %}\n  {{ x }}\n{% endfor %}", "t").render(vars) == "  1\n  2\n");
  CHECK(ChatTemplate("  {% for x in xs %}[{{ x }}]   {%- endfor %}", "t").render(vars) == "[1][2]");
  CHECK(ChatTemplate("a  {{- 'b' -}}  c", "t").render(vars) == "abc");
  CHECK(ChatTemplate("a {# note #}\nb", "t").render(vars) == "a b");
  CHECK(ChatTemplate("{{ '}}' }}{{ \"%}\" }}", "t").render(vars) == "}}%}");
}

TEST_CASE("chat template: constructs outside the subset are errors naming them and the line") {
  CHECK(error_of_template("a\n{% macro m() %}x{% endmacro %}").find("t.jinja: line 2: the tag 'macro' is not supported") !=
        std::string::npos);
  CHECK(error_of_template("{% if true %}x").find("'{% if %}' is never closed by '{% endif %}'") != std::string::npos);
  CHECK(error_of_template("x\n\n{{ 'a' | shuffle }}").find("line 3: the filter 'shuffle' is not supported") != std::string::npos);
  CHECK(error_of_template("{{ messages[0].content.strip() }}").find("'[0]' is undefined") != std::string::npos);
  CHECK(error_of_template("{% for m in messages if m %}{% endfor %}").find("loop filters") != std::string::npos);
  CHECK(error_of_template("{{ 'abc' ").find("'{{' is never closed by '}}'") != std::string::npos);
  CHECK(error_of_template("{% endfor %}").find("'{% endfor %}' without its opening tag") != std::string::npos);
  CHECK(error_of_template("{{ raise_exception('no system role') }}").find("the template raised an exception: no system role") !=
        std::string::npos);
  CHECK(error_of_template("{{ 1 + 'a' }}").find("operator + is not defined for 1 and 'a'") != std::string::npos);
  // Limits (found by fuzz/chat_template_fuzz.cpp's kind of input): no hang, no overflow.
  CHECK(error_of_template("{{ 9223372036854775807 + 1 }}").find("integer overflow") != std::string::npos);
  CHECK(error_of_template("{{ 99999999999999999999 }}").find("the integer 99999999999999999999 is too large") !=
        std::string::npos);
  CHECK(error_of_template("{% for i in range(5000000) %}{% endfor %}").find("range() of more than") != std::string::npos);
  CHECK(error_of_template("{% for i in range(2000) %}{% for j in range(2000) %}{% endfor %}{% endfor %}")
            .find("rendering takes more than 1000000 steps") != std::string::npos);
  CHECK(ChatTemplate("{{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }}", "t").render({}) == "-4 2 -2 1024");
  // Nesting parsed by recursion (the fuzzer's stack overflow: thousands of '['): an error past 256
  // levels; 200 still render.
  auto repeat = [](const std::string& s, int n) {
    std::string out;
    for (int i = 0; i < n; ++i) out += s;
    return out;
  };
  CHECK(error_of_template("{{ " + repeat("[", 5000) + " }}").find("an expression nested more than 256 levels deep") !=
        std::string::npos);
  CHECK(error_of_template("{{ " + repeat("not ", 5000) + "1 }}").find("nested more than 256") != std::string::npos);
  CHECK(error_of_template("{{ " + repeat("-", 5000) + "1 }}").find("nested more than 256") != std::string::npos);
  CHECK(error_of_template("{{ 1" + repeat(" if 1 else 1", 5000) + " }}").find("nested more than 256") !=
        std::string::npos);
  CHECK(error_of_template(repeat("{% if 1 %}", 5000)).find("line 1: statements nested more than 256 levels deep") !=
        std::string::npos);
  CHECK(ChatTemplate("{{ " + repeat("(", 60) + "7" + repeat(")", 60) + " }}", "t").render({}) == "7");
  CHECK(ChatTemplate(repeat("{% if 1 %}", 200) + "x" + repeat("{% endif %}", 200), "t").render({}) == "x");
}
