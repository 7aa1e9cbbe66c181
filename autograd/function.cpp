// The node behind a custom Function: holds the context forward filled and calls backward.
#include "autograd/function.h"

namespace mlr {

const std::vector<Tensor>& FunctionCtx::saved_tensors() const {
  MLR_CHECK(!released_,
            "backward: the graph through '{}' was already freed by an earlier backward(); pass "
            "retain_graph=true to the first backward() to run backward through it again",
            name_);
  return saved_;
}

void FunctionCtx::release() {
  saved_.clear();
  saved_.shrink_to_fit();
  data_.clear();
  released_ = true;
}

namespace {

class FunctionNode final : public Node {
 public:
  FunctionNode(FunctionCtx&& ctx, detail::BackwardFn backward)
      : Node(ctx.name()), ctx_(std::move(ctx)), backward_(backward) {}

  std::vector<Tensor> apply(std::vector<Tensor>&& grad_outputs) override {
    check_not_released();
    std::vector<Tensor> grads = backward_(ctx_, grad_outputs);
    MLR_CHECK(grads.size() == num_inputs(), "{}: backward returned {} gradients for {} Variable inputs", name(),
              grads.size(), num_inputs());
    for (size_t i = 0; i < grads.size(); ++i)
      if (!needs_input_grad(i)) grads[i] = Tensor();
    return grads;
  }
  void release_saved() override {
    ctx_.release();
    released_ = true;
  }

 private:
  FunctionCtx ctx_;
  detail::BackwardFn backward_;
};

}  // namespace

namespace detail {

std::vector<Variable> wrap_function_outputs(FunctionCtx&& ctx, BackwardFn backward,
                                            const std::vector<Variable>& inputs, std::vector<Tensor> outputs) {
  bool record = false;
  std::vector<bool> needs(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    needs[i] = ctx.needs_input_grad(i);
    record = record || needs[i];
  }
  std::vector<Variable> result;
  result.reserve(outputs.size());
  if (!record) {
    for (Tensor& t : outputs) result.emplace_back(std::move(t));
    return result;
  }
  auto node = std::make_shared<FunctionNode>(std::move(ctx), backward);
  connect_inputs(*node, inputs, needs);
  for (Tensor& t : outputs) result.push_back(make_output(node, std::move(t)));
  return result;
}

}  // namespace detail
}  // namespace mlr
