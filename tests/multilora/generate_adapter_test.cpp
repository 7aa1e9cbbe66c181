// Generation through adapters: greedy tokens of the generate fixture's PEFT LoRA adapter, unmerged
// and merged, equal transformers' generate on the PeftModel
// (tests/fixtures/llama/generate/reference.json, scripts/fixtures/make_generate_fixtures.py).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "llama/generate.h"
#include "llama/model.h"
#include "llama/tokenizer.h"
#include "multilora/inject.h"

namespace fs = std::filesystem;
using namespace mlr;

TEST_CASE("generate with an adapter: greedy tokens equal transformers' on the PeftModel, unmerged and merged") {
  const fs::path dir = fs::path(MLR_SOURCE_DIR) / "tests" / "fixtures" / "llama" / "generate";
  std::ifstream in(dir / "reference.json");
  REQUIRE(in);
  const nlohmann::json ref = nlohmann::json::parse(in)["adapter"];
  auto tok = load_tokenizer((dir / "model").string());
  std::vector<std::vector<int64_t>> prompts;
  for (const auto& p : ref["prompts"]) {
    auto ids = tok->encode(p.get<std::string>(), true);
    prompts.emplace_back(ids.begin(), ids.end());
  }
  for (bool merge : {false, true}) {
    CAPTURE(merge);
    auto model = LlamaForCausalLM::from_pretrained((dir / "model").string());
    CHECK(inject_adapter_from_file(*model, (dir / "lora").string()).size() == 8);
    if (merge) merge_adapters(*model);
    model->eval();
    const CheckpointGenerationIds ids = checkpoint_generation_ids((dir / "model").string(), tok.get());
    GenerationConfig cfg;
    cfg.max_new_tokens = 8;
    cfg.eos_token_ids = ids.eos_token_ids;
    cfg.pad_token_id = ids.pad_token_id;
    // Batched (left padded) and one prompt at a time.
    const GenerationOutput batched = generate(*model, prompts, cfg);
    for (size_t i = 0; i < prompts.size(); ++i) {
      CAPTURE(i);
      const auto expected = ref["rows"][i]["tokens"].get<std::vector<int64_t>>();
      CHECK(batched.tokens[i] == expected);
      CHECK(generate(*model, std::vector<std::vector<int64_t>>{prompts[i]}, cfg).tokens[0] == expected);
    }
  }
}
