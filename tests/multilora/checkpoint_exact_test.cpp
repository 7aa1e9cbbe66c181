// Exact activation checkpointing with every adapter on the CPU (tests/multilora/checkpoint_exact.h):
// LoRA, DoRA, MultiLoRA and SMoRA with dropout 0.1, and full fine-tuning.
#include "tests/multilora/checkpoint_exact.h"

using namespace mlr;

TEST_CASE("checkpointing is exact with adapters: LoRA with dropout") { test::check_checkpointing_exact("lora", Device::cpu()); }

TEST_CASE("checkpointing is exact with adapters: DoRA with dropout") { test::check_checkpointing_exact("dora", Device::cpu()); }

TEST_CASE("checkpointing is exact with adapters: MultiLoRA with dropout") {
  test::check_checkpointing_exact("multilora", Device::cpu());
}

TEST_CASE("checkpointing is exact with adapters: SMoRA with dropout counts each load once") {
  test::check_checkpointing_exact("smora", Device::cpu());
}

TEST_CASE("checkpointing is exact in full fine-tuning") { test::check_checkpointing_exact("full", Device::cpu()); }
