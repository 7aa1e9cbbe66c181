// Variable: a Tensor that autograd tracks. A cheap handle (copies share one impl) holding the
// values (data), the accumulated gradient (grad, undefined until the first backward reaches it),
// whether it requires grad, and for a non-leaf the node that produced it (grad_fn, output_nr).
//
//   Variable w = Variable::leaf(randn({3, 4}, gen));      // a parameter: requires grad
//   Variable y = sum(square(matmul(x, w)));               // x may be a plain Tensor (a constant)
//   y.backward();                                         // w.grad() now holds dy/dw
//
// A Tensor converts implicitly to a constant Variable (requires_grad false). Ops on Variables
// (autograd/functions.h) record a graph when grad mode is on and some input requires grad.
#pragma once

#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "tensor/tensor.h"

namespace mlr {

struct VariableImpl {
  Tensor data;
  Tensor grad;
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;  // null for leaves and constants
  uint32_t output_nr = 0;         // which output of grad_fn this is
  std::string name;
  std::weak_ptr<Node> grad_accumulator;  // a leaf's AccumulateGrad node while some graph uses it
  // Called right after backward has accumulated into this leaf's grad (see set_grad_ready_hook).
  std::function<void()> grad_ready_hook;
};

class Variable {
 public:
  Variable() = default;  // undefined
  Variable(Tensor data);  // NOLINT: implicit on purpose: a Tensor used as a Variable is a constant
  // A leaf: the values of `data` (shared, not copied), requiring grad unless told otherwise.
  static Variable leaf(Tensor data, bool requires_grad = true, std::string name = {});

  bool defined() const { return impl_ != nullptr && impl_->data.defined(); }
  const Tensor& data() const;
  // Replaces the values (a leaf's, typically: loading weights). The graph is not affected.
  void set_data(Tensor data);
  // The accumulated gradient: undefined until backward reaches this variable (leaves only).
  const Tensor& grad() const;
  void set_grad(Tensor grad);
  // Zeros the gradient in place (keeps its memory); set_to_none drops it instead.
  void zero_grad(bool set_to_none = false);
  // Leaves only: `hook` runs on the backward thread each time a backward pass has accumulated into
  // this leaf's grad. The engine sums every gradient flowing to a leaf before it accumulates once,
  // so within one backward the leaf's gradient is final when the hook runs (data parallel starts
  // reducing it then: dist/data_parallel.h). One hook per leaf; an empty function removes it, and
  // setting one over another throws.
  void set_grad_ready_hook(std::function<void()> hook);

  bool requires_grad() const { return impl_ != nullptr && impl_->requires_grad; }
  // Leaves only; only floating-point tensors can require grad.
  Variable& set_requires_grad(bool requires_grad);
  bool is_leaf() const { return impl_ == nullptr || impl_->grad_fn == nullptr; }
  const std::shared_ptr<Node>& grad_fn() const;
  uint32_t output_nr() const { return impl_ ? impl_->output_nr : 0; }
  const std::string& name() const;
  Variable& set_name(std::string name);
  // Same impl (the same variable), not equal values.
  bool is_same(const Variable& other) const { return impl_ == other.impl_; }

  // A new constant sharing this variable's values: gradients do not flow through it.
  Variable detach() const;
  // Backpropagates from this variable. `seed` is dL/d(this); it may be left out only when this
  // variable has one element (it is then 1). The graph's saved tensors are freed afterwards
  // unless retain_graph.
  void backward(const Tensor& seed = Tensor(), bool retain_graph = false) const;

  // ---- tensor metadata ----
  const Shape& shape() const { return data().shape(); }
  int64_t dim() const { return data().dim(); }
  int64_t size(int64_t d) const { return data().size(d); }
  int64_t numel() const { return data().numel(); }
  DType dtype() const { return data().dtype(); }
  Device device() const { return data().device(); }
  template <typename T> T item() const { return data().template item<T>(); }
  std::string to_string() const;

  // ---- differentiable views and shape ops (the free functions of autograd/functions.h) ----
  Variable reshape(Shape shape) const;
  Variable view(Shape shape) const;
  Variable flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Variable permute(const std::vector<int64_t>& order) const;
  Variable transpose(int64_t dim0, int64_t dim1) const;
  Variable t() const;
  Variable narrow(int64_t dim, int64_t start, int64_t length) const;
  Variable slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Variable select(int64_t dim, int64_t index) const;
  Variable expand(Shape shape) const;
  Variable squeeze(int64_t dim) const;
  Variable unsqueeze(int64_t dim) const;
  Variable contiguous() const;
  Variable to(DType dtype) const;

  const std::shared_ptr<VariableImpl>& impl() const { return impl_; }

 private:
  std::shared_ptr<VariableImpl> impl_;
};

// Backpropagates from several outputs at once: seeds[i] is dL/d(outputs[i]) (an undefined seed
// follows Variable::backward's rule; an empty list means all undefined).
void backward(const std::vector<Variable>& outputs, const std::vector<Tensor>& seeds = {},
              bool retain_graph = false);

std::ostream& operator<<(std::ostream& os, const Variable& v);

namespace detail {

// Where gradients for `v` go: its grad_fn's slot, a leaf's AccumulateGrad node, or nowhere.
Edge gradient_edge(const Variable& v);

// For an op about to run on `inputs`: needs[i] = grad mode on and inputs[i] requires grad.
// Under no-grad with a RequiresGradObserver installed (checkpoint's forward), notes whether any
// input requires grad, so checkpoint can tell that fn used parameters it was not handed.
std::vector<bool> input_needs_grad(const std::vector<Variable>& inputs);

// Records a node: edges and metadata for each input (edges only where needs[i]).
void connect_inputs(Node& node, const std::vector<Variable>& inputs, const std::vector<bool>& needs);
// The next output of a recorded node: a Variable that requires grad with grad_fn = node.
Variable make_output(const std::shared_ptr<Node>& node, Tensor data);

// Installed by checkpoint while it runs fn without recording (see input_needs_grad).
class RequiresGradObserver {
 public:
  RequiresGradObserver();
  ~RequiresGradObserver();
  RequiresGradObserver(const RequiresGradObserver&) = delete;
  RequiresGradObserver& operator=(const RequiresGradObserver&) = delete;
  bool seen() const { return seen_; }
  static RequiresGradObserver* current();
  void note() { seen_ = true; }

 private:
  RequiresGradObserver* prev_;
  bool seen_ = false;
};

}  // namespace detail
}  // namespace mlr
