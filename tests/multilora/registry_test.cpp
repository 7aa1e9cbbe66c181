// The adapter registry: names and files map to exactly one type, and every type's adapter writes
// a config its own registration reads back (the file round trip through the model is in
// inject_test.cpp, the YAML one in tests/train/config_test.cpp).
#include <doctest/doctest.h>

#include <set>

#include "multilora/dora.h"
#include "multilora/multilora.h"
#include "multilora/registry.h"
#include "multilora/smora.h"
#include "tests/multilora/test_helpers.h"

using namespace mlr;
using namespace mlr::test;

TEST_CASE("registry: every type has a unique name; lookups by name and by adapter_config.json") {
  std::set<std::string> names;
  for (const AdapterType* t : adapter_types()) {
    CAPTURE(t->name);
    CHECK(names.insert(t->name).second);
    CHECK(&adapter_type(t->name) == t);
    CHECK(t->from_json);
    CHECK(t->from_yaml);
    CHECK(!t->structural_fields.empty());
  }
  CHECK(names == std::set<std::string>{"lora", "multilora", "smora", "dora"});
  CHECK(error_of([] { adapter_type("ia3"); }).find("adapter type \"ia3\" is not one of lora, multilora, smora, dora") !=
        std::string::npos);
  // LoRA and DoRA share PEFT's peft_type; use_dora tells them apart (absent: false).
  CHECK(&adapter_type_of_file({{"peft_type", "LORA"}}) == &lora_adapter_type());
  CHECK(&adapter_type_of_file({{"peft_type", "LORA"}, {"use_dora", false}}) == &lora_adapter_type());
  CHECK(&adapter_type_of_file({{"peft_type", "LORA"}, {"use_dora", true}}) == &dora_adapter_type());
  CHECK(&adapter_type_of_file({{"peft_type", "MULTILORA"}}) == &multilora_adapter_type());
  CHECK(&adapter_type_of_file({{"peft_type", "SMORA"}}) == &smora_adapter_type());
  CHECK(error_of([] { adapter_type_of_file({{"peft_type", "LORA"}, {"use_dora", "yes"}}); })
            .find("field \"use_dora\" is \"yes\", expected a boolean") != std::string::npos);
  CHECK(error_of([] { adapter_type_of_file({{"r", 8}}); }).find("missing field \"peft_type\"") != std::string::npos);
}

TEST_CASE("registry: each type's adapter config reads back through its registration to the same adapter") {
  MultiLoraConfig multilora;
  multilora.r = 6;
  multilora.n_modules = 4;  // uneven: 2, 2, 1, 1
  multilora.scale_mode = MultiLoraScale::per_channel;
  SmoraConfig smora;
  smora.r = 4;
  smora.top_k = 3;
  DoraConfig dora;
  dora.use_rslora = true;
  const std::vector<std::shared_ptr<const AdapterConfig>> configs = {
      std::make_shared<LoraConfig>(), std::make_shared<MultiLoraConfig>(multilora), std::make_shared<SmoraConfig>(smora),
      std::make_shared<DoraConfig>(dora)};
  for (const auto& config : configs) {
    CAPTURE(config->type().name);
    Generator gen(1);
    auto adapter = config->make_adapter(random_tensor({5, 7}, 2, DType::f32), Tensor(), gen, 3);
    CHECK(&adapter->type() == &config->type());
    const nlohmann::json file = adapter->config_json();
    CHECK(&adapter_type_of_file(file) == &config->type());
    Generator gen2(1);
    auto again = adapter->type().from_json(file)->make_adapter(random_tensor({5, 7}, 2, DType::f32), Tensor(), gen2, 3);
    CHECK(again->config_json() == file);
    const auto a = adapter->named_tensors(), b = again->named_tensors();
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      CHECK(a[i].first == b[i].first);
      CHECK(max_abs_diff(a[i].second.data(), b[i].second.data()) == 0.0);  // same draws from the same seed
    }
  }
}

TEST_CASE("registry: register_adapter_type refuses a taken name and a type without readers") {
  // A successful registration is permanent (it would change the other suites' list of types); the
  // installed-package example (examples/custom_adapter, ctest install_package_example) registers one.
  AdapterType lora_again = lora_adapter_type();
  CHECK(error_of([&] { register_adapter_type(lora_again); }).find("a type named \"lora\" is already registered") !=
        std::string::npos);
  AdapterType unnamed;
  CHECK(error_of([&] { register_adapter_type(unnamed); }).find("the name must be non-empty") != std::string::npos);
  AdapterType no_readers;
  no_readers.name = "mine";
  no_readers.peft_type = "MINE";
  CHECK(error_of([&] { register_adapter_type(no_readers); }).find("type \"mine\" needs from_json and from_yaml") !=
        std::string::npos);
  register_adapter_type(lora_adapter_type());  // the same object again: nothing changes
  CHECK(adapter_types().size() == 4);
}
