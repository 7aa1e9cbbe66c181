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
#include "tests/dist/deferred_communicator.h"
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

// The prefetcher's jobs on a thread (CPU collectives) and queued as NCCL queues them
// (tests/dist/deferred_communicator.h): the same events and bytes.
TEST_CASE("sharded frozen base with prefetch: the next layer's gather starts before the current layer is released") {
  for (int variant = 0; variant < 4; ++variant) {
    const bool queued = variant >= 2, checkpointing = variant % 2 == 1;
    CAPTURE(queued);
    CAPTURE(checkpointing);
    test::check_all_ok(test::run_ranks(2, [checkpointing, queued](ProcessGroup& g, std::ostream& msg) {
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
        std::unique_ptr<Communicator> side = g.new_communicator(Device::cpu(), "prefetch");
        if (queued) side = std::make_unique<test::DeferredCommunicator>(std::move(side));
        ShardedFrozenBase shards(g.cpu(), *sharded.model, {}, std::make_unique<CollectiveWorker>(std::move(side)));
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

namespace {

// `n` no-grad forward passes of `model`, the logits of each: one plain forward for n = 1;
// otherwise incremental decoding through a KV cache (a prompt, then n - 1 single tokens), as
// generation and the evaluation's scorers run it. `salt` varies the tokens.
std::vector<Tensor> forward_passes(LlamaForCausalLM& model, int n, int salt) {
  NoGradGuard no_grad;
  std::vector<Tensor> logits;
  auto ids = [salt](int64_t count, int64_t at) {
    std::vector<int64_t> v(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) v[static_cast<size_t>(i)] = (i * 17 + at * 5 + salt * 11 + 3) % 61;
    return v;
  };
  if (n == 1) {
    LlamaBatch batch;
    batch.input_ids = from_vector(ids(2 * 9, 0), {2, 9});
    logits.push_back(model.forward(batch).logits.data().clone());
  } else if (n > 1) {
    const int64_t prompt = 6;
    KVCache cache(model.config(), 1, prompt + n, DType::f32, Device::cpu());
    std::vector<int64_t> positions(prompt);
    for (int64_t i = 0; i < prompt; ++i) positions[static_cast<size_t>(i)] = i;
    logits.push_back(model.forward_cached(from_vector(ids(prompt, 0), {1, prompt}), from_vector(positions, {1, prompt}),
                                          Tensor(), cache).clone());
    for (int64_t step = 1; step < n; ++step) {
      logits.push_back(model.forward_cached(from_vector(ids(1, step), {1, 1}),
                                            from_vector(std::vector<int64_t>{prompt + step - 1}, {1, 1}), Tensor(),
                                            cache).clone());
    }
  }
  return logits;
}

// The events ShardedFrozenBase::on_event reports on `rank` for one lockstep phase in which rank r
// makes passes[r] passes and then joins the others' (3 layers; `layer_events`: one pass's gathers,
// prefetches and releases).
std::string expected_lockstep_events(const std::vector<int>& passes, int rank, const std::string& layer_events) {
  std::string text;
  for (int round = 0;; ++round) {
    int sum = 0;
    for (int p : passes) sum += round < p ? 1 : 0;
    if (round < passes[static_cast<size_t>(rank)]) {
      text += "pass; " + layer_events;
      continue;
    }
    text += fmt::format("join {}; ", sum);
    if (sum == 0) return text;
    text += "idle pass; " + layer_events;
  }
}

}  // namespace

TEST_CASE("sharded frozen base in lockstep: ranks with 3, 1 and 0 passes finish, same logits as unsharded") {
  for (bool prefetch : {false, true}) {
    CAPTURE(prefetch);
    test::check_all_ok(test::run_ranks(3, [prefetch](ProcessGroup& g, std::ostream& msg) {
      // Checkpointing on: a no-grad forward never recomputes, so its passes fit lockstep.
      test::CheckpointedModel plain = test::make_checkpointing_model("lora", Device::cpu(), true);
      test::CheckpointedModel sharded = test::make_checkpointing_model("lora", Device::cpu(), true);
      plain.model->eval();
      sharded.model->eval();
      // Two phases, as two scorer calls: passes per rank in each.
      const std::vector<std::vector<int>> phases = {{3, 1, 0}, {0, 0, 2}};
      const int rank = g.rank();
      std::vector<std::vector<Tensor>> want;
      for (size_t p = 0; p < phases.size(); ++p)
        want.push_back(forward_passes(*plain.model, phases[p][static_cast<size_t>(rank)], rank + 3 * static_cast<int>(p)));
      std::string events;
      ShardedFrozenBase shards(g.cpu(), *sharded.model, {},
                               prefetch ? std::make_unique<CollectiveWorker>(g.new_communicator(Device::cpu(), "prefetch"))
                                        : nullptr);
      shards.on_event = [&](const std::string& e) { events += e + "; "; };
      shards.begin_lockstep();
      for (size_t p = 0; p < phases.size(); ++p) {
        const std::vector<Tensor> got =
            forward_passes(*sharded.model, phases[p][static_cast<size_t>(rank)], rank + 3 * static_cast<int>(p));
        shards.join_remaining_passes();
        for (size_t i = 0; i < got.size(); ++i) {
          if (!test::bitwise_equal(got[i], want[p][i])) {
            msg << "phase " << p << ", pass " << i << ": the logits differ from the unsharded model's";
            return 1;
          }
        }
      }
      const ShardedFrozenBase::LockstepCounts counts = shards.lockstep_counts();
      shards.end_lockstep();
      // Every rank gathers the same layers in the same order (the collectives match), one layer
      // whole at a time.
      const std::string layer_events = prefetch ? "gather 0; prefetch 1; release 0; gather 1 prefetched; prefetch 2; "
                                                  "release 1; gather 2 prefetched; release 2; "
                                                : "gather 0; release 0; gather 1; release 1; gather 2; release 2; ";
      std::string expected;
      for (const std::vector<int>& passes : phases) expected += expected_lockstep_events(passes, rank, layer_events);
      if (events != expected) {
        msg << "rank " << rank << " events: " << events << "\nexpected: " << expected;
        return 1;
      }
      const int64_t own = phases[0][static_cast<size_t>(rank)] + phases[1][static_cast<size_t>(rank)];
      if (counts.passes != own || counts.idle_passes != 3 + 2 - own || counts.peak_whole_layers != 1) {
        msg << "rank " << rank << ": " << counts.passes << " passes, " << counts.idle_passes << " idle, "
            << counts.peak_whole_layers << " layers whole at once";
        return 1;
      }
      return 0;
    }));
  }
}

TEST_CASE("sharded frozen base in lockstep: a pass that does not start at layer 0 is refused, no deadlock") {
  // Under grad, activation checkpointing recomputes the layers last to first during backward.
  test::check_all_ok(test::run_ranks(2, [](ProcessGroup& g, std::ostream& msg) {
    test::CheckpointedModel sharded = test::make_checkpointing_model("lora", Device::cpu(), true);
    ShardedFrozenBase shards(g.cpu(), *sharded.model);
    shards.begin_lockstep();
    try {
      test::training_outputs(*sharded.model);
      msg << "a backward with recompute ran in lockstep";
      return 1;
    } catch (const Error& e) {
      const std::string what = e.what();
      if (what.find("layer 2 of 3 gathered outside a pass") == std::string::npos ||
          what.find("activation checkpointing") == std::string::npos) {
        msg << "unexpected error: " << what;
        return 1;
      }
    }
    shards.end_lockstep();
    return 0;
  }));
}

TEST_CASE("sharded frozen base in lockstep: a rank that dies makes the others fail naming it, within the timeout") {
  ProcessGroupOptions quick{std::chrono::milliseconds(3000), std::chrono::milliseconds(100)};
  const auto results = test::run_ranks(
      2,
      [](ProcessGroup& g, std::ostream& msg) {
        test::CheckpointedModel sharded = test::make_checkpointing_model("lora", Device::cpu(), false);
        sharded.model->eval();
        ShardedFrozenBase shards(g.cpu(), *sharded.model);
        shards.begin_lockstep();
        // Both ranks past Gloo's mesh first: a loaded rank 0 could otherwise still be connecting it
        // when rank 1 exits (that case has its own test in communicator_test.cpp).
        g.cpu().barrier();
        if (g.rank() == 1) std::_Exit(9);  // dies before its share of the passes
        forward_passes(*sharded.model, 2, 0);
        shards.join_remaining_passes();
        msg << "the passes with a dead peer returned";
        return 0;
      },
      quick, std::chrono::seconds(30));
  INFO(results[0].message);
  CHECK(results[1].status == 9);
  CHECK(results[0].status == 1);
  // Its pass's flag all-reduce fails on the closed connection; on a machine so loaded that rank 0
  // reaches it only after the timeout, the watchdog names rank 1 first.
  CHECK((results[0].message.find("rank 0 of 2: all_reduce") != std::string::npos ||
         results[0].message.find("rank 1 sent no heartbeat") != std::string::npos));
  CHECK(results[0].message.find("rank 1") != std::string::npos);
  CHECK(results[0].seconds < 3.0 + 5.0);
}
