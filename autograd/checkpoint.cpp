// Activation checkpointing (see checkpoint.h): a node that saves the segment's inputs and, in
// backward, recomputes the segment and runs a nested backward through it.
#include "autograd/checkpoint.h"

namespace mlr {

namespace {

thread_local int recompute_depth = 0;

// Marks this thread as recomputing for its lifetime (nested segments rerun inside an outer one).
class RecomputeScope {
 public:
  RecomputeScope() { ++recompute_depth; }
  ~RecomputeScope() { --recompute_depth; }
  RecomputeScope(const RecomputeScope&) = delete;
  RecomputeScope& operator=(const RecomputeScope&) = delete;
};

// What the forward of a segment did with random generators: each one's state at its first draw
// and where the forward left it.
struct RandomDraws {
  std::vector<GeneratorRecorder::Entry> first_draws;
  std::vector<uint64_t> end_offsets;

  RandomDraws() = default;
  explicit RandomDraws(const GeneratorRecorder& recorder) : first_draws(recorder.entries()) {
    for (const GeneratorRecorder::Entry& e : first_draws) {
      const std::shared_ptr<GeneratorState> state = e.state.lock();
      end_offsets.push_back(state ? state->offset : e.at_first_draw.offset);
    }
  }
};

bool same_generator(const std::weak_ptr<GeneratorState>& a, const std::weak_ptr<GeneratorState>& b) {
  return !a.owner_before(b) && !b.owner_before(a);
}

// The recompute drew exactly what the forward drew: the same generators, the same counters.
void check_same_draws(const RandomDraws& forward, const RandomDraws& recompute) {
  for (size_t j = 0; j < recompute.first_draws.size(); ++j) {
    const GeneratorRecorder::Entry& e = recompute.first_draws[j];
    size_t i = 0;
    while (i < forward.first_draws.size() && !same_generator(forward.first_draws[i].state, e.state)) ++i;
    MLR_CHECK(i < forward.first_draws.size(),
              "checkpoint: the recomputed segment drew from a random generator (seed {}) that its forward did not "
              "use; a checkpointed function must draw the same random numbers when rerun (a generator that was "
              "destroyed or copied since the forward is a different stream)",
              e.at_first_draw.seed);
    const uint64_t drawn = recompute.end_offsets[j] - e.at_first_draw.offset;
    const uint64_t expected = forward.end_offsets[i] - forward.first_draws[i].at_first_draw.offset;
    MLR_CHECK(drawn == expected,
              "checkpoint: the recomputed segment drew {} counters from a random generator (seed {}), its forward "
              "drew {}; a checkpointed function must draw the same random numbers when rerun",
              drawn, e.at_first_draw.seed, expected);
  }
  for (size_t i = 0; i < forward.first_draws.size(); ++i) {
    const GeneratorRecorder::Entry& f = forward.first_draws[i];
    if (forward.end_offsets[i] == f.at_first_draw.offset) continue;  // drew nothing that matters
    bool redrawn = false;
    for (const GeneratorRecorder::Entry& e : recompute.first_draws)
      redrawn = redrawn || same_generator(f.state, e.state);
    MLR_CHECK(redrawn,
              "checkpoint: the forward drew {} counters from a random generator (seed {}) that the recomputed "
              "segment did not use; a checkpointed function must draw the same random numbers when rerun",
              forward.end_offsets[i] - f.at_first_draw.offset, f.at_first_draw.seed);
  }
}

class CheckpointNode final : public Node {
 public:
  CheckpointNode(CheckpointFn fn, std::vector<Tensor> inputs, RandomDraws draws)
      : Node("checkpoint"), fn_(std::move(fn)), inputs_(std::move(inputs)), draws_(std::move(draws)) {}

  std::vector<Tensor> apply(std::vector<Tensor>&& grad_outputs) override {
    check_not_released();
    std::vector<Variable> leaves;
    for (size_t i = 0; i < inputs_.size(); ++i)
      leaves.push_back(inputs_[i].defined() ? Variable::leaf(inputs_[i], needs_input_grad(i)) : Variable());

    // Recompute with every generator where the forward found it, then put each back; the
    // checks run after the generators are restored.
    std::vector<Variable> outs;
    RandomDraws recompute_draws;
    {
      GeneratorReplay replay(draws_.first_draws);
      GeneratorRecorder recorder;
      RecomputeScope recomputing;
      EnableGradGuard grad;
      outs = fn_(leaves);
      recompute_draws = RandomDraws(recorder);
    }
    check_same_draws(draws_, recompute_draws);
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
    draws_ = RandomDraws();
    released_ = true;
  }

 private:
  CheckpointFn fn_;
  std::vector<Tensor> inputs_;
  RandomDraws draws_;
};

}  // namespace

bool in_checkpoint_recompute() { return recompute_depth > 0; }

std::vector<Variable> checkpoint(const CheckpointFn& fn, const std::vector<Variable>& inputs) {
  // Without grad mode nothing is recorded anyway (an enclosing checkpoint's observer, if any,
  // sees fn's ops directly).
  if (!GradMode::is_enabled()) return fn(inputs);

  std::vector<bool> needs(inputs.size());
  bool any = false;
  for (size_t i = 0; i < inputs.size(); ++i) {
    needs[i] = inputs[i].requires_grad();
    any = any || needs[i];
  }

  std::vector<Variable> outs;
  RandomDraws draws;
  {
    detail::RequiresGradObserver observer;  // notes parameters fn uses that require grad
    GeneratorRecorder recorder;
    NoGradGuard no_grad;
    std::vector<Variable> detached;
    for (const Variable& v : inputs) detached.push_back(v.defined() ? v.detach() : Variable());
    outs = fn(detached);
    any = any || observer.seen();
    draws = RandomDraws(recorder);
  }
  if (!any) return outs;

  std::vector<Tensor> saved;
  for (const Variable& v : inputs) saved.push_back(v.data());
  auto node = std::make_shared<CheckpointNode>(fn, std::move(saved), std::move(draws));
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
