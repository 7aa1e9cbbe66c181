// Chat templates (tokenizer_config.json's chat_template, chat_template.jinja): the input is the
// template's source, parsed and rendered for two conversations with and without the generation
// prompt, as mlr-generate --chat renders them.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_support.h"
#include "llama/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mlr;
  const std::string source(fuzz::as_text(data, size));
  fuzz::expect_clean_rejection([&] {
    const ChatTemplate chat_template(source, "fuzz.jinja");
    for (bool add_generation_prompt : {false, true}) {
      chat_template.apply({{"user", "Hello?"}}, add_generation_prompt, "<s>", "</s>");
      chat_template.apply({{"system", " Be brief. "}, {"user", "2 + 2?"}, {"assistant", "4"}, {"user", "\xC3\xA9"}},
                          add_generation_prompt, "", "<|im_end|>");
    }
  });
  return 0;
}
