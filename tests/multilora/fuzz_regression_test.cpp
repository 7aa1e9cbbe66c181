// adapter_config.json inputs the fuzz target (fuzz/adapter_config_fuzz.cpp) found to reach undefined
// behaviour, kept as tests: each is now an error naming the field.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "llama/safetensors.h"
#include "multilora/adapter_file.h"
#include "multilora/lora.h"
#include "multilora/multilora.h"
#include "tests/test_support.h"

using namespace mlr;
using nlohmann::json;

TEST_CASE("adapter config: MultiLoRA ranks whose sum overflows are an error") {
  // Summing the ranks overflowed int64 (signed overflow).
  const json config = json::parse(R"({"peft_type":"MULTILORA","ranks":[9223372036854775807,1],"r":2,"lora_alpha":8})");
  CHECK_ERROR_CONTAINS(multilora_config_from_json(config), "ranks [9223372036854775807,1] must be positive");
  CHECK_ERROR_CONTAINS(multilora_config_from_json(json::parse(R"({"peft_type":"MULTILORA","ranks":[2,-1],"r":1,"lora_alpha":8})")),
                       "must be positive");
}

TEST_CASE("adapter config: an integer field given as a float is an error, not a cast") {
  // 1e300 cast to int64 is undefined behaviour; 2.5 used to become r = 2 silently.
  CHECK_ERROR_CONTAINS(lora_config_from_json(json::parse(R"({"peft_type":"LORA","r":1e300,"lora_alpha":8})")),
                       "field \"r\" is 1e+300, expected a positive integer");
  CHECK_ERROR_CONTAINS(lora_config_from_json(json::parse(R"({"peft_type":"LORA","r":2.5,"lora_alpha":8})")),
                       "field \"r\" is 2.5");
  CHECK_ERROR_CONTAINS(
      multilora_config_from_json(json::parse(R"({"peft_type":"MULTILORA","ranks":[1,1e300],"r":2,"lora_alpha":8})")),
      "field \"ranks\" is [1,1e+300], expected an array of module ranks");
  // Integers written as floats elsewhere stay accepted where a float is expected.
  CHECK(lora_config_from_json(json::parse(R"({"peft_type":"LORA","r":4,"lora_alpha":8.0})")).r == 4);
}

TEST_CASE("adapter file: a number too large for a double is an error naming the file") {
  // nlohmann::json throws out_of_range, not parse_error, for it; read_adapter_file let it escape.
  TempDir tmp;
  save_safetensors((tmp.path / kAdapterWeightsFile).string(), {{"x", zeros({1})}});
  tmp.write(kAdapterConfigFile, R"({"peft_type": "LORA", "r": 8, "lora_alpha": 1e99999})");
  CHECK_ERROR_CONTAINS(read_adapter_file(tmp.path.string()),
                       "adapter_config.json: invalid JSON: [json.exception.out_of_range.406] number overflow");
}
