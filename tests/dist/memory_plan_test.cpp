// dist/memory_plan.h: the bytes of each row on a small hand-computed case.
#include <doctest/doctest.h>

#include "dist/memory_plan.h"

using namespace mlr::dist;

TEST_CASE("memory plan: rows of a LoRA and a full fine-tuning run, replicated and sharded") {
  PlanInputs in;
  in.world_size = 4;
  in.parameters = 1000;
  in.layer_parameters = 100;
  in.layers = 8;
  in.hidden = 2;
  in.kv_hidden = 1;
  in.intermediate = 4;
  in.vocab = 10;
  in.compute_bytes = 2;
  in.adapter_parameters = 50;
  in.adapter_bytes = 4;
  in.tokens_per_micro_batch = 3;
  in.bucket_bytes = 64;
  auto rows = plan_memory(in);
  REQUIRE(rows.size() == 7);
  CHECK(rows[0].what == "weights");
  CHECK(rows[0].replicated == 2000);
  CHECK(rows[0].sharded == 2000.0 / 4 + 2 * 100 * 2);  // a quarter, plus two gathered layers
  CHECK(rows[1].replicated == 200);                     // adapters: 50 x 4 bytes
  CHECK(rows[2].replicated == 200);                     // gradients
  CHECK(rows[2].sharded == 200 / 4.0);                  // ZeRO-2: a quarter of the gradients
  CHECK(rows[3].replicated == 50 * 8);                  // two f32 moments, no master (f32 adapters)
  CHECK(rows[3].sharded == 50 * 8 / 4.0);               // ZeRO-1
  // (6h + 2h_kv + 3I) = 26 values x 2 bytes per layer and token, 8 layers, + logits 10 x (2 + 8).
  CHECK(rows[4].replicated == 3 * (8 * 26 * 2 + 10 * 10));
  CHECK(rows[5].replicated == 64);  // one bucket
  CHECK(rows[6].replicated == 2000 + 200 + 200 + 400 + 3 * (8 * 52 + 100) + 64);

  in.activation_checkpointing = true;
  CHECK(plan_memory(in)[4].replicated == 3 * (8 * 2 * 2 + 26 * 2 + 10 * 10));

  in.full_finetuning = true;
  rows = plan_memory(in);
  CHECK(rows[0].sharded == 2000);            // trained weights stay whole
  CHECK(rows[1].replicated == 0);            // no adapters
  CHECK(rows[2].replicated == 2000);         // bf16 gradients
  CHECK(rows[2].sharded == 500);             // ZeRO-2
  CHECK(rows[3].replicated == 1000 * 12.0);  // moments + f32 master of bf16 weights
  CHECK(rows[3].sharded == 3000);
}
