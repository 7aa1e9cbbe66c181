// dist/sharded_base.h: a tiny LLaMA with adapters whose frozen decoder weights are sharded over 2
// and 3 processes gives bit-identical losses, logits and adapter gradients to the same model
// unsharded, with and without activation checkpointing; each rank keeps about 1/world of them.
// Loaded sharded from the files, each rank reads about 1/world of the decoder weights' bytes and
// the model is the same as one loaded whole and then sharded.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>

#include "dist/collective_worker.h"
#include "dist/sharded_base.h"
#include "tests/dist/model_outputs.h"
#include "tests/dist/run_ranks.h"
#include "tests/multilora/checkpoint_exact.h"

using namespace mlr;
using namespace mlr::dist;

TEST_CASE("sharded frozen base: same loss, logits and gradients as unsharded, over 2 and 3 processes") {
  for (int world : {2, 3}) {
    for (bool checkpointing : {false, true}) {
      CAPTURE(world);
      CAPTURE(checkpointing);
      test::check_all_ok(test::run_ranks(world, [checkpointing](ProcessGroup& g, std::ostream& msg) {
        test::CheckpointedModel plain = test::make_checkpointing_model("lora", Device::cpu(), checkpointing);
        test::CheckpointedModel sharded = test::make_checkpointing_model("lora", Device::cpu(), checkpointing);
        const std::vector<Tensor> want = test::training_outputs(*plain.model);
        ShardedFrozenBase shards(g.cpu(), *sharded.model);
        if (shards.shard_bytes() * g.world_size() > shards.full_bytes() + 64 * g.world_size() * 8) {
          msg << "rank keeps " << shards.shard_bytes() << " of " << shards.full_bytes() << " bytes";
          return 1;
        }
        const std::vector<Tensor> got = test::training_outputs(*sharded.model);
        // Released between layers: a frozen layer weight holds a broadcast zero, no memory.
        for (const auto& [name, p] : sharded.model->named_parameters()) {
          if (name.rfind("model.layers.", 0) == 0 && !p.requires_grad() && p.data().is_contiguous()) {
            msg << name << " was not released after the layer ran";
            return 1;
          }
        }
        for (size_t i = 0; i < want.size(); ++i) {
          if (!test::bitwise_equal(got[i], want[i])) {
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
        want.push_back(test::training_outputs(*plain.model));
      }
      std::vector<std::string> events;
      {
        ShardedFrozenBase shards(g.cpu(), *sharded.model, {},
                                 std::make_unique<CollectiveWorker>(g.new_communicator(Device::cpu(), "prefetch")));
        shards.on_event = [&](const std::string& e) { events.push_back(e); };
        for (int pass = 0; pass < 2; ++pass) {
          for (auto [name, p] : sharded.model->named_parameters(true)) p.zero_grad(/*set_to_none=*/true);
          const std::vector<Tensor> got = test::training_outputs(*sharded.model);
          for (size_t i = 0; i < got.size(); ++i) {
            if (!test::bitwise_equal(got[i], want[pass][i])) {
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

TEST_CASE("sharded frozen base loaded from the files: each rank reads 1/world of the decoder weights, same model") {
  for (int world : {2, 3}) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      CAPTURE(world);
      CAPTURE(dtype_name(dtype));
      // Rank 0 writes a random checkpoint here; every rank then loads it whole and sharded.
      const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                        ("mlr_sharded_load_" + std::to_string(::getpid()) + "_" + std::to_string(world));
      test::check_all_ok(test::run_ranks(world, [dtype, dir](ProcessGroup& g, std::ostream& msg) {
        if (g.rank() == 0) {
          LlamaConfig config = tiny_config();
          config.num_hidden_layers = 3;
          config.vocab_size = 61;
          config.qkv_bias = true;  // 1-d decoder weights besides the norms
          config.o_proj_bias = true;
          Generator init(2026);
          LlamaForCausalLM(config, &init).save_pretrained(dir.string());
        }
        g.cpu().barrier();
        auto whole = LlamaForCausalLM::from_pretrained(dir.string(), dtype);
        ShardedLoad part = load_with_sharded_base(dir.string(), g.rank(), g.world_size(), dtype, Device::cpu());
        // 13 decoder tensors per layer in the f32 file; world x a rank's chunk is within
        // (world - 1)^2 elements of the tensor (padding), far from the whole tensor.
        const int64_t tensors = 3 * 13, w = g.world_size();
        if (part.stored_bytes <= 0 || std::abs(part.bytes_read * w - part.stored_bytes) > 4 * (w - 1) * (w - 1) * tensors) {
          msg << "rank " << g.rank() << " read " << part.bytes_read << " of " << part.stored_bytes << " bytes";
          return 1;
        }
        for (const auto& [name, p] : part.model->named_parameters()) {
          const bool decoder = name.rfind("model.layers.", 0) == 0;
          if (decoder == p.data().is_contiguous()) {
            msg << name << (decoder ? " holds memory before the shards are installed" : " was not loaded whole");
            return 1;
          }
        }
        // The same adapters on both; the frozen base of `part` sharded from what was read.
        InjectionSpec spec;
        spec.adapter = std::make_shared<LoraConfig>();
        spec.target_modules = {"q_proj", "v_proj", "down_proj"};
        spec.seed = 17;
        inject_adapters(*whole, spec);
        inject_adapters(*part.model, spec);
        ShardedFrozenBase shards(g.cpu(), *part.model, {}, nullptr, std::move(part.shards));
        if (dtype == DType::f32) {
          const std::vector<Tensor> want = test::training_outputs(*whole), got = test::training_outputs(*part.model);
          for (size_t i = 0; i < want.size(); ++i) {
            if (!test::bitwise_equal(got[i], want[i])) {
              msg << "output " << i << " (0: loss, 1: logits, then gradients) differs";
              return 1;
            }
          }
        }
        // Gathered, every weight equals the whole load's (converted alike from the f32 file).
        const auto want_params = whole->named_parameters();
        for (int64_t l = 0; l < 3; ++l) {
          shards.gather(l);
          const auto got_params = part.model->named_parameters();
          for (size_t i = 0; i < want_params.size(); ++i) {
            if (got_params[i].first.rfind("model.layers." + std::to_string(l) + ".", 0) != 0) continue;
            if (!test::bitwise_equal(got_params[i].second.data(), want_params[i].second.data())) {
              msg << got_params[i].first << " differs from the whole load's";
              return 1;
            }
          }
          shards.release(l);
        }
        return 0;
      }));
      std::filesystem::remove_all(dir);
    }
  }
}
