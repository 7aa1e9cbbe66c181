// Activation checkpointing (see checkpoint.h): a node that saves the segment's inputs and, in
// backward, recomputes the segment and runs a nested backward through it.
#include "autograd/checkpoint.h"

namespace mlr {

namespace {

class CheckpointNode final : public Node {
 public:
  CheckpointNode(CheckpointFn fn, std::vector<Tensor> inputs, uint64_t rng_seed, uint64_t rng_offset)
      : Node("checkpoint"), fn_(std::move(fn)), inputs_(std::move(inputs)), rng_seed_(rng_seed),
        rng_offset_(rng_offset) {}

  std::vector<Tensor> apply(std::vector<Tensor>&& grad_outputs) override {
    check_not_released();
    std::vector<Variable> leaves;
    for (size_t i = 0; i < inputs_.size(); ++i)
      leaves.push_back(inputs_[i].defined() ? Variable::leaf(inputs_[i], needs_input_grad(i)) : Variable());

    // Recompute with the generator where forward found it, then put it back.
    Generator& gen = default_generator();
    const uint64_t seed = gen.seed(), offset = gen.offset();
    gen.set_state(rng_seed_, rng_offset_);
    std::vector<Variable> outs;
    try {
      EnableGradGuard grad;
      outs = fn_(leaves);
    } catch (...) {
      gen.set_state(seed, offset);
      throw;
    }
    gen.set_state(seed, offset);
    MLR_CHECK(outs.size() == grad_outputs.size(),
              "checkpoint: fn returned {} outputs when recomputed, {} in forward", outs.size(), grad_outputs.size());

    std::vector<Variable> roots;
    std::vector<Tensor> seeds;
    for (size_t i = 0; i < outs.size(); ++i) {
      if (!outs[i].requires_grad()) continue;
      MLR_CHECK(outs[i].shape() == grad_outputs[i].shape(),
                "checkpoint: output {} has shape {} when recomputed, {} in forward", i, shape_str(outs[i].shape()),
                shape_str(grad_outputs[i].shape()));
      roots.push_back(outs[i]);
      seeds.push_back(std::move(grad_outputs[i]));
    }
    if (!roots.empty()) backward(roots, seeds);

    std::vector<Tensor> grads;
    for (const Variable& leaf : leaves) grads.push_back(leaf.defined() ? leaf.grad() : Tensor());
    return grads;
  }

  void release_saved() override {
    inputs_.clear();
    fn_ = nullptr;
    released_ = true;
  }

 private:
  CheckpointFn fn_;
  std::vector<Tensor> inputs_;
  uint64_t rng_seed_, rng_offset_;
};

}  // namespace

std::vector<Variable> checkpoint(const CheckpointFn& fn, const std::vector<Variable>& inputs) {
  // Without grad mode nothing is recorded anyway (an enclosing checkpoint's observer, if any,
  // sees fn's ops directly).
  if (!GradMode::is_enabled()) return fn(inputs);

  Generator& gen = default_generator();
  const uint64_t rng_seed = gen.seed(), rng_offset = gen.offset();
  std::vector<bool> needs(inputs.size());
  bool any = false;
  for (size_t i = 0; i < inputs.size(); ++i) {
    needs[i] = inputs[i].requires_grad();
    any = any || needs[i];
  }

  std::vector<Variable> outs;
  {
    detail::RequiresGradObserver observer;  // notes parameters fn uses that require grad
    NoGradGuard no_grad;
    std::vector<Variable> detached;
    for (const Variable& v : inputs) detached.push_back(v.defined() ? v.detach() : Variable());
    outs = fn(detached);
    any = any || observer.seen();
  }
  if (!any) return outs;

  std::vector<Tensor> saved;
  for (const Variable& v : inputs) saved.push_back(v.data());
  auto node = std::make_shared<CheckpointNode>(fn, std::move(saved), rng_seed, rng_offset);
  detail::connect_inputs(*node, inputs, needs);
  std::vector<Variable> result;
  for (const Variable& out : outs) {
    MLR_CHECK(out.defined(), "checkpoint: fn returned an undefined output");
    result.push_back(detail::make_output(node, out.data()));
  }
  return result;
}

Variable checkpoint(const std::function<Variable(const Variable&)>& fn, const Variable& input) {
  return checkpoint([fn](const std::vector<Variable>& in) { return std::vector<Variable>{fn(in[0])}; },
                    std::vector<Variable>{input})[0];
}

}  // namespace mlr
