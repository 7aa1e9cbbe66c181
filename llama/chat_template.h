// Chat templates: the Jinja template of a checkpoint's tokenizer_config.json ("chat_template", or
// chat_template.jinja beside it), rendered as transformers' apply_chat_template renders it
// (Jinja with trim_blocks and lstrip_blocks; variables messages, add_generation_prompt, bos_token,
// eos_token and the functions raise_exception and strftime_now).
//
// The renderer implements a subset of Jinja: what the chat templates of LLaMA 2, LLaMA 3, Mistral,
// Zephyr/TinyLlama and ChatML/Qwen2 use, and one in the shape of LLaMA 3.1's (system block, tools
// as JSON, tool results; checked against apply_chat_template in tests/llama/chat_template_test.cpp),
// and a little more, listed here:
//   tags        {{ expr }}, {% if/elif/else/endif %}, {% for x in xs %} / {% for k, v in d.items() %}
//               (with else, and loop.index/index0/first/last/length/revindex/revindex0),
//               {% set x = expr %}, {% set ns.attr = expr %}, {% generation %}, {# comments #},
//               whitespace control with - on either side
//   expressions literals (strings, numbers, true/false/none, lists, dicts), names, a.b, a['b'], a[i],
//               a[i:j], + - * / // % ~, == != < > <= >=, in / not in, and / or / not,
//               x if c else y, is [not] defined/undefined/none/string/number/integer/mapping/
//               iterable/sequence/boolean/true/false/even/odd
//   filters     trim, length/count, upper, lower, capitalize, tojson(indent), string, int, float,
//               first, last, join, default/d, list, reverse, replace, items, safe
//   methods     str.strip/lstrip/rstrip/upper/lower/startswith/endswith/split/replace/title,
//               dict.items/keys/values/get
//   functions   raise_exception(msg), range(n), namespace(k=v, ...), strftime_now(fmt)
// Anything else (macros, call blocks, includes, loop filters, other filters) is an error naming
// the construct and the template's line, never a silently different prompt.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mlr {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

class ChatTemplate {
 public:
  // Parses `source`; `origin` (a file name) prefixes every error. Throws mlr::Error naming the
  // line and the construct for syntax outside the subset above.
  ChatTemplate(const std::string& source, const std::string& origin);
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  // Renders with the given variables (messages, add_generation_prompt, bos_token, ...).
  std::string render(const nlohmann::ordered_json& variables) const;
  // apply_chat_template's rendering of a conversation.
  std::string apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt, const std::string& bos_token,
                    const std::string& eos_token) const;

  const std::string& origin() const { return origin_; }

 private:
  struct Program;
  std::string origin_;
  std::unique_ptr<Program> program_;
};

// The chat template of a checkpoint directory: chat_template.jinja, else tokenizer_config.json's
// "chat_template" (a string, or a list of {name, template} from which "default" is taken), with
// the tokenizer's bos_token and eos_token strings. Nothing when the checkpoint has none.
struct CheckpointChatTemplate {
  ChatTemplate chat_template;
  std::string bos_token, eos_token;
};
std::optional<CheckpointChatTemplate> load_chat_template(const std::string& dir);

}  // namespace mlr
