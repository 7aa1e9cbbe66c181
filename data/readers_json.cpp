// Instruction and generative readers: Alpaca, prompt/completion, chat messages, GSM8K.
#include <fmt/format.h>

#include "data/reader_detail.h"

namespace mlr::data::detail {

namespace fs = std::filesystem;

void read_alpaca(const fs::path& path, int32_t file, ReadContext& ctx) {
  for_each_json_row(path, file, ctx, /*allow_array=*/true, [&](const json& row, int64_t) {
    Record r;
    r.set("instruction", get_string(row, "instruction"));
    r.set("input", get_string_or(row, "input", ""));
    r.set("output", get_string(row, "output"));
    ctx.result.records.push_back(std::move(r));
  });
}

void read_prompt_completion(const fs::path& path, int32_t file, ReadContext& ctx) {
  for_each_json_row(path, file, ctx, /*allow_array=*/false, [&](const json& row, int64_t) {
    Record r;
    r.set("prompt", get_string(row, "prompt"));
    r.set("completion", get_string(row, "completion"));
    ctx.result.records.push_back(std::move(r));
  });
}

void read_chat(const fs::path& path, int32_t file, ReadContext& ctx) {
  for_each_json_row(path, file, ctx, /*allow_array=*/false, [&](const json& row, int64_t) {
    const json& messages = get(row, "messages");
    if (!messages.is_array()) throw BadRow(fmt::format("field \"messages\" is {}, expected an array", messages.type_name()));
    Record r;
    bool has_assistant = false;
    for (size_t i = 0; i < messages.size(); ++i) {
      const json& m = messages[i];
      if (!m.is_object()) throw BadRow(fmt::format("messages[{}] is {}, expected an object", i, m.type_name()));
      Message message;
      try {
        message.role = get_string(m, "role");
        message.content = get_string(m, "content");
      } catch (const BadRow& e) {
        throw BadRow(fmt::format("messages[{}]: {}", i, e.what()));
      }
      if (message.role != "system" && message.role != "user" && message.role != "assistant") {
        throw BadRow(fmt::format("messages[{}]: role \"{}\" is not one of system, user, assistant", i, message.role));
      }
      has_assistant |= message.role == "assistant";
      r.messages.push_back(std::move(message));
    }
    if (!has_assistant) throw BadRow("the conversation has no assistant message to train on");
    if (r.messages.back().role != "assistant") {
      throw BadRow(fmt::format("the conversation ends with a \"{}\" message; it must end with an assistant message",
                               r.messages.back().role));
    }
    ctx.result.records.push_back(std::move(r));
  });
}

void read_gsm8k(const fs::path& path, int32_t file, ReadContext& ctx) {
  for_each_json_row(path, file, ctx, /*allow_array=*/false, [&](const json& row, int64_t) {
    Record r;
    r.set("question", get_string(row, "question"));
    r.set("answer", get_string(row, "answer"));
    ctx.result.records.push_back(std::move(r));
  });
}

}  // namespace mlr::data::detail
