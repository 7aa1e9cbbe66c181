// Exact activation checkpointing with every adapter on the CUDA device (the emulated one in CI):
// the same checks as checkpoint_exact_test.cpp, checkpointed against plain, both on the device.
#include "tests/multilora/checkpoint_exact.h"

using namespace mlr;

TEST_CASE("checkpointing on CUDA is exact with adapters: LoRA, MultiLoRA and SMoRA with dropout") {
  for (const char* kind : {"lora", "dora", "multilora", "smora"}) test::check_checkpointing_exact(kind, Device::cuda(0));
}

TEST_CASE("checkpointing on CUDA is exact in full fine-tuning") {
  test::check_checkpointing_exact("full", Device::cuda(0));
}
