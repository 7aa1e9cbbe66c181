// dist/sharded_base.h: a tiny LLaMA with adapters whose frozen decoder weights are sharded over 2
// and 3 processes gives bit-identical losses, logits and adapter gradients to the same model
// unsharded, with and without activation checkpointing; each rank keeps about 1/world of them.
#include <doctest/doctest.h>

#include "dist/collective_worker.h"
#include "dist/sharded_base.h"
#include "tests/dist/run_ranks.h"
#include "tests/multilora/checkpoint_exact.h"

using namespace mlr;
using namespace mlr::dist;

namespace {

// Loss, logits and every trainable gradient of one forward and backward on a fixed batch.
std::vector<Tensor> outputs(LlamaForCausalLM& model) {
  LlamaBatch batch;
  std::vector<int64_t> ids(2 * 20);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 29 + 7) % 61);
  batch.input_ids = from_vector(ids, {2, 20});
  batch.labels = batch.input_ids;
  CausalLMOutput out = model.forward(batch);
  out.loss.backward();
  std::vector<Tensor> result = {out.loss.data().clone(), out.logits.data().clone()};
  for (const auto& [name, p] : model.named_parameters(true)) result.push_back(p.grad().clone());
  return result;
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.to_vector<double>() == b.to_vector<double>();
}

}  // namespace

TEST_CASE("sharded frozen base: same loss, logits and gradients as unsharded, over 2 and 3 processes") {
  for (int world : {2, 3}) {
    for (bool checkpointing : {false, true}) {
      CAPTURE(world);
      CAPTURE(checkpointing);
      test::check_all_ok(test::run_ranks(world, [checkpointing](ProcessGroup& g, std::ostream& msg) {
        test::CheckpointedModel plain = test::make_checkpointing_model("lora", Device::cpu(), checkpointing);
        test::CheckpointedModel sharded = test::make_checkpointing_model("lora", Device::cpu(), checkpointing);
        const std::vector<Tensor> want = outputs(*plain.model);
        ShardedFrozenBase shards(g.cpu(), *sharded.model);
        if (shards.shard_bytes() * g.world_size() > shards.full_bytes() + 64 * g.world_size() * 8) {
          msg << "rank keeps " << shards.shard_bytes() << " of " << shards.full_bytes() << " bytes";
          return 1;
        }
        const std::vector<Tensor> got = outputs(*sharded.model);
        // Released between layers: a frozen layer weight holds a broadcast zero, no memory.
        for (const auto& [name, p] : sharded.model->named_parameters()) {
          if (name.rfind("model.layers.", 0) == 0 && !p.requires_grad() && p.data().is_contiguous()) {
            msg << name << " was not released after the layer ran";
            return 1;
          }
        }
        for (size_t i = 0; i < want.size(); ++i) {
          if (!bitwise_equal(got[i], want[i])) {
            msg << "output " << i << " (0: loss, 1: logits, then gradients) differs";
            return 1;
          }
        }
        return 0;
      }));
    }
  }
}

TEST_CASE("sharded frozen base with prefetch: the next layer's gather starts before the current layer is released") {
  for (bool checkpointing : {false, true}) {
    CAPTURE(checkpointing);
    test::check_all_ok(test::run_ranks(2, [checkpointing](ProcessGroup& g, std::ostream& msg) {
      test::CheckpointedModel plain = test::make_checkpointing_model("lora", Device::cpu(), checkpointing);
      test::CheckpointedModel sharded = test::make_checkpointing_model("lora", Device::cpu(), checkpointing);
      // Two steps each (the second starts from where the first left the prefetch); the adapters'
      // dropout draws anew in the second, so each is compared with the plain model's same step.
      std::vector<std::vector<Tensor>> want;
      for (int pass = 0; pass < 2; ++pass) {
        for (auto [name, p] : plain.model->named_parameters(true)) p.zero_grad(/*set_to_none=*/true);
        want.push_back(outputs(*plain.model));
      }
      std::vector<std::string> events;
      {
        ShardedFrozenBase shards(g.cpu(), *sharded.model, {},
                                 std::make_unique<CollectiveWorker>(g.new_communicator(Device::cpu(), "prefetch")));
        shards.on_event = [&](const std::string& e) { events.push_back(e); };
        for (int pass = 0; pass < 2; ++pass) {
          for (auto [name, p] : sharded.model->named_parameters(true)) p.zero_grad(/*set_to_none=*/true);
          const std::vector<Tensor> got = outputs(*sharded.model);
          for (size_t i = 0; i < got.size(); ++i) {
            if (!bitwise_equal(got[i], want[pass][i])) {
              msg << "pass " << pass << ": output " << i << " (0: loss, 1: logits, then gradients) differs";
              return 1;
            }
          }
        }
      }
      std::string text;
      for (const std::string& e : events) text += e + "; ";
      // 3 layers. Forward: 0 gathered, 1 prefetched while 0 computes, 2 while 1 computes. With
      // checkpointing the backward recomputes 2 (gathered again), then 1 and 0 prefetched.
      std::string expected = "gather 0; prefetch 1; release 0; gather 1 prefetched; prefetch 2; release 1; gather 2 "
                             "prefetched; release 2; ";
      if (checkpointing)
        expected += "gather 2; prefetch 1; release 2; gather 1 prefetched; prefetch 0; release 1; gather 0 prefetched; "
                    "release 0; ";
      if (text.rfind(expected + "gather 0; prefetch 1; ", 0) != 0) {
        msg << "events: " << text << "\nexpected to start with: " << expected;
        return 1;
      }
      return 0;
    }));
  }
}
