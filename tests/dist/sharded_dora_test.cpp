// DoRA on a sharded frozen base (dist/sharded_base.h, multilora/dora.h), over 2 and 3 processes:
// the adapters are made on a model loaded sharded, whose decoder weights have no values, awaiting
// their base weight; a pass over the layers, one gathered at a time, gives each its magnitude
// ||W0||_row, bit-identical to DoRA made on the model loaded whole. Then losses, logits and every
// adapter gradient (magnitudes included) are bit-identical to the whole model's, with and without
// activation checkpointing (whose recompute takes the weight norm again, gathered again). An
// adapter file gives the magnitudes without any gather.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <map>

#include "dist/collective_worker.h"
#include "dist/sharded_base.h"
#include "multilora/dora.h"
#include "multilora/inject.h"
#include "tensor/ops.h"
#include "tests/dist/model_outputs.h"
#include "tests/dist/run_ranks.h"
#include "tests/llama/tiny_config.h"

using namespace mlr;
using namespace mlr::dist;

namespace {

constexpr int64_t kLayers = 3;

std::vector<NamedAdapter> inject_dora(LlamaForCausalLM& model, bool sharded_base) {
  auto dora = std::make_shared<DoraConfig>();
  dora->dropout = 0.1;  // masks drawn again by the recompute of activation checkpointing
  InjectionSpec spec;
  spec.adapter = dora;
  spec.target_modules = {"q_proj", "v_proj", "o_proj", "down_proj"};
  spec.seed = 17;
  spec.defer_base_weight_reads = sharded_base;
  return inject_adapters(model, spec);
}

// The whole decoder weights of layer l hold memory, those of every other layer none.
std::string only_layer_gathered(LlamaForCausalLM& model, int64_t layer) {
  for (const auto& [name, p] : model.named_parameters()) {
    if (name.rfind("model.layers.", 0) != 0 || p.requires_grad()) continue;
    const bool in_layer = name.rfind("model.layers." + std::to_string(layer) + ".", 0) == 0;
    if (in_layer != p.data().is_contiguous())
      return fmt::format("{} is {} while layer {} is visited", name, in_layer ? "released" : "gathered", layer);
  }
  return {};
}

}  // namespace

TEST_CASE("DoRA on a sharded base: magnitudes from one gathered layer at a time, then the same loss, logits and "
          "gradients as on the whole base") {
  for (int world : {2, 3}) {
    for (bool checkpointing : {false, true}) {
      CAPTURE(world);
      CAPTURE(checkpointing);
      const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                        ("mlr_sharded_dora_" + std::to_string(::getpid()) + "_" + std::to_string(world));
      test::check_all_ok(test::run_ranks(world, [dir, checkpointing](ProcessGroup& g, std::ostream& msg) {
        if (g.rank() == 0) {
          LlamaConfig config = tiny_config();
          config.num_hidden_layers = kLayers;
          config.vocab_size = 61;
          Generator init(2026);
          LlamaForCausalLM(config, &init).save_pretrained(dir.string());
        }
        g.cpu().barrier();
        auto whole = LlamaForCausalLM::from_pretrained(dir.string(), DType::f32);
        ShardedLoad part = load_with_sharded_base(dir.string(), g.rank(), g.world_size(), DType::f32, Device::cpu());
        const std::vector<NamedAdapter> want_adapters = inject_dora(*whole, false);
        const std::vector<NamedAdapter> adapters = inject_dora(*part.model, true);
        for (const NamedAdapter& a : adapters) {
          if (!a.adapter->awaits_base_weight()) {
            msg << a.module_path << " does not await its base weight";
            return 1;
          }
        }
        // With checkpointing, the gathers also go through the prefetching worker.
        std::unique_ptr<CollectiveWorker> prefetcher;
        if (checkpointing) prefetcher = std::make_unique<CollectiveWorker>(g.new_communicator(Device::cpu(), "prefetch"));
        ShardedFrozenBase shards(g.cpu(), *part.model, {}, std::move(prefetcher), std::move(part.shards));
        std::map<int64_t, std::vector<AdaptedLinear*>> by_layer;
        for (const NamedAdapter& a : adapters) by_layer[layer_index_of(a.module_path)].push_back(a.adapter);
        std::vector<int64_t> layers;
        for (const auto& entry : by_layer) layers.push_back(entry.first);
        std::string problem;
        shards.for_each_layer_gathered(layers, [&](int64_t l) {
          if (problem.empty()) problem = only_layer_gathered(*part.model, l);
          for (AdaptedLinear* a : by_layer.at(l)) a->init_from_base_weight();
        });
        if (!problem.empty()) {
          msg << problem;
          return 1;
        }
        if (std::string released = only_layer_gathered(*part.model, -1); !released.empty()) {
          msg << "after the pass: " << released;
          return 1;
        }
        for (size_t i = 0; i < adapters.size(); ++i) {
          const auto& got = dynamic_cast<const DoraLinear&>(*adapters[i].adapter);
          const auto& want = dynamic_cast<const DoraLinear&>(*want_adapters[i].adapter);
          if (!test::bitwise_equal(got.magnitude().data(), want.magnitude().data())) {
            msg << adapters[i].module_path << ": magnitude differs from the one made on the whole base";
            return 1;
          }
        }
        // B != 0 (the same on both), so that the weight norm of the forward is not ||W0||_row.
        for (auto* model : {whole.get(), part.model.get()}) {
          model->set_gradient_checkpointing(checkpointing);
          Generator values(99);
          for (const auto& [name, p] : model->named_parameters(true)) {
            Tensor t = p.data();
            t.copy_(add(t, mul(randn(t.shape(), values, t.dtype()), 0.2)));
          }
        }
        // Two steps: the second starts from where the first left the prefetch and the dropout streams.
        for (int pass = 0; pass < 2; ++pass) {
          const std::vector<Tensor> want = test::training_outputs(*whole, pass), got = test::training_outputs(*part.model, pass);
          for (size_t i = 0; i < want.size(); ++i) {
            if (!test::bitwise_equal(got[i], want[i])) {
              msg << "pass " << pass << ": output " << i << " (0: loss, 1: logits, then gradients) differs";
              return 1;
            }
          }
        }
        // An adapter file gives the magnitudes: a third model loaded sharded loads it without a gather.
        const std::string adapter_dir = (dir / "adapter").string();
        if (g.rank() == 0) save_adapter(adapter_dir, want_adapters);
        g.cpu().barrier();
        ShardedLoad third = load_with_sharded_base(dir.string(), g.rank(), g.world_size(), DType::f32, Device::cpu());
        const std::vector<NamedAdapter> loaded = inject_dora(*third.model, true);
        load_adapter(adapter_dir, loaded);
        ShardedFrozenBase third_shards(g.cpu(), *third.model, {}, nullptr, std::move(third.shards));
        for (size_t i = 0; i < loaded.size(); ++i) {
          const auto& got = dynamic_cast<const DoraLinear&>(*loaded[i].adapter);
          const auto& want = dynamic_cast<const DoraLinear&>(*want_adapters[i].adapter);
          if (got.awaits_base_weight() || !test::bitwise_equal(got.magnitude().data(), want.magnitude().data())) {
            msg << loaded[i].module_path << ": the magnitude loaded from the file differs";
            return 1;
          }
        }
        third.model->set_gradient_checkpointing(checkpointing);
        whole->eval();
        third.model->eval();  // no dropout: its streams are fresh here
        const std::vector<Tensor> want = test::training_outputs(*whole, 2), got = test::training_outputs(*third.model, 2);
        for (size_t i = 0; i < want.size(); ++i) {
          if (!test::bitwise_equal(got[i], want[i])) {
            msg << "loaded from the file: output " << i << " (0: loss, 1: logits, then gradients) differs";
            return 1;
          }
        }
        return 0;
      }));
      std::filesystem::remove_all(dir);
    }
  }
}
