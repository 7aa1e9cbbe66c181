// Variable handles, graph nodes, leaf accumulation and grad mode.
#include "autograd/variable.h"

#include <atomic>
#include <ostream>

#include "autograd/functions.h"
#include "tensor/ops.h"

namespace mlr {

// ---------------------------------------------------------------- grad mode

namespace {
thread_local bool grad_mode_enabled = true;
thread_local detail::RequiresGradObserver* current_observer = nullptr;
std::atomic<uint64_t> next_sequence_nr{0};
}  // namespace

bool GradMode::is_enabled() { return grad_mode_enabled; }
void GradMode::set_enabled(bool enabled) { grad_mode_enabled = enabled; }

// ---------------------------------------------------------------- nodes

Node::Node(std::string name) : name_(std::move(name)), sequence_nr_(next_sequence_nr++) {}

Node::~Node() {
  // Freeing a long chain recursively (each node's destructor freeing the next) would overflow
  // the stack for deep graphs, so the outermost destructor drains the chain in a loop.
  thread_local std::vector<std::shared_ptr<Node>> pending;
  thread_local bool draining = false;
  for (Edge& e : next_edges_)
    if (e.node) pending.push_back(std::move(e.node));
  if (draining) return;
  draining = true;
  while (!pending.empty()) {
    std::shared_ptr<Node> n = std::move(pending.back());
    pending.pop_back();
    n.reset();  // may run ~Node, which appends to `pending`
  }
  draining = false;
}

void Node::add_input(Edge edge, TensorMeta meta) {
  next_edges_.push_back(std::move(edge));
  input_meta_.push_back(std::move(meta));
}

uint32_t Node::add_output(TensorMeta meta) {
  output_meta_.push_back(std::move(meta));
  return static_cast<uint32_t>(output_meta_.size() - 1);
}

void Node::check_not_released() const {
  MLR_CHECK(!released_,
            "backward: the graph through '{}' was already freed by an earlier backward(); pass "
            "retain_graph=true to the first backward() to run backward through it again",
            name_);
}

namespace {

// The node behind every leaf that requires grad: adds the incoming gradient into leaf.grad,
// in the leaf's dtype. The first gradient is adopted without a copy when nothing else holds it.
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(std::shared_ptr<VariableImpl> leaf) : Node("AccumulateGrad"), leaf_(std::move(leaf)) {
    add_output(TensorMeta::of(leaf_->data));
  }

  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    Tensor& g = grads[0];
    Tensor& acc = leaf_->grad;
    if (acc.defined()) {
      add_(acc, g);
    } else {
      take_or_copy(g, acc);
    }
    if (leaf_->grad_ready_hook) leaf_->grad_ready_hook();
    return {};
  }
  // Nothing is saved: a leaf accumulates on every backward that reaches it.
  void release_saved() override {}

 private:
  // The first gradient of a leaf: kept as is when nothing else holds its storage, else copied.
  void take_or_copy(Tensor& g, Tensor& acc) const {
    const bool sole_owner = g.storage().use_count() == 1 && g.is_contiguous() && g.offset() == 0 &&
                            g.nbytes() == g.storage()->nbytes();
    if (sole_owner && g.dtype() == leaf_->data.dtype() && g.device() == leaf_->data.device()) {
      acc = std::move(g);
    } else {
      acc = empty(g.shape(), leaf_->data.options());
      acc.copy_(g);
    }
  }
  std::shared_ptr<VariableImpl> leaf_;
};

const Tensor& undefined_tensor() {
  static const Tensor t;
  return t;
}

}  // namespace

// ---------------------------------------------------------------- Variable

Variable::Variable(Tensor data) {
  if (!data.defined()) return;
  impl_ = std::make_shared<VariableImpl>();
  impl_->data = std::move(data);
}

Variable Variable::leaf(Tensor data, bool requires_grad, std::string name) {
  MLR_CHECK(data.defined(), "Variable::leaf: the tensor is undefined");
  Variable v(std::move(data));
  v.impl_->name = std::move(name);
  v.set_requires_grad(requires_grad);
  return v;
}

const Tensor& Variable::data() const { return impl_ ? impl_->data : undefined_tensor(); }

void Variable::set_data(Tensor data) {
  MLR_CHECK(impl_ != nullptr, "Variable::set_data: the variable is undefined");
  MLR_CHECK(data.defined(), "Variable::set_data: the tensor is undefined");
  MLR_CHECK(!impl_->requires_grad || data.is_floating_point(),
            "Variable::set_data: '{}' requires grad, so its values must be floating point (got {})", impl_->name,
            data.dtype());
  impl_->data = std::move(data);
}

const Tensor& Variable::grad() const { return impl_ ? impl_->grad : undefined_tensor(); }

void Variable::set_grad(Tensor grad) {
  MLR_CHECK(impl_ != nullptr, "Variable::set_grad: the variable is undefined");
  MLR_CHECK(!grad.defined() || grad.shape() == impl_->data.shape(),
            "Variable::set_grad: gradient of shape {} for a variable of shape {}", shape_str(grad.shape()),
            shape_str(impl_->data.shape()));
  impl_->grad = std::move(grad);
}

void Variable::zero_grad(bool set_to_none) {
  if (!impl_ || !impl_->grad.defined()) return;
  if (set_to_none) {
    impl_->grad = Tensor();
  } else {
    impl_->grad.zero_();
  }
}

void Variable::set_grad_ready_hook(std::function<void()> hook) {
  MLR_CHECK(impl_ != nullptr, "set_grad_ready_hook: the variable is undefined");
  MLR_CHECK(is_leaf(), "set_grad_ready_hook: '{}' (shape {}) is not a leaf: only leaves accumulate a gradient",
            impl_->name, shape_str(shape()));
  MLR_CHECK(!hook || !impl_->grad_ready_hook,
            "set_grad_ready_hook: '{}' (shape {}) already has a gradient-ready hook; remove it first", impl_->name,
            shape_str(shape()));
  impl_->grad_ready_hook = std::move(hook);
}

Variable& Variable::set_requires_grad(bool requires_grad) {
  MLR_CHECK(impl_ != nullptr, "set_requires_grad: the variable is undefined");
  MLR_CHECK(is_leaf(), "set_requires_grad: '{}' (shape {}) is the output of '{}', not a leaf; use detach()",
            impl_->name, shape_str(shape()), impl_->grad_fn->name());
  MLR_CHECK(!requires_grad || impl_->data.is_floating_point(),
            "set_requires_grad: only floating-point tensors can require gradients (got a {} tensor of shape {})",
            impl_->data.dtype(), shape_str(shape()));
  impl_->requires_grad = requires_grad;
  return *this;
}

const std::shared_ptr<Node>& Variable::grad_fn() const {
  static const std::shared_ptr<Node> none;
  return impl_ ? impl_->grad_fn : none;
}

const std::string& Variable::name() const {
  static const std::string none;
  return impl_ ? impl_->name : none;
}

Variable& Variable::set_name(std::string name) {
  MLR_CHECK(impl_ != nullptr, "set_name: the variable is undefined");
  impl_->name = std::move(name);
  return *this;
}

Variable Variable::detach() const { return Variable(data()); }

void Variable::backward(const Tensor& seed, bool retain_graph) const {
  mlr::backward({*this}, {seed}, retain_graph);
}

std::string Variable::to_string() const {
  if (!defined()) return "Variable(undefined)";
  std::string s = data().to_string();
  if (requires_grad()) s += is_leaf() ? ", requires_grad" : fmt::format(", grad_fn={}", grad_fn()->name());
  return s;
}

std::ostream& operator<<(std::ostream& os, const Variable& v) { return os << v.to_string(); }

Variable Variable::reshape(Shape shape) const { return mlr::reshape(*this, std::move(shape)); }
Variable Variable::view(Shape shape) const { return mlr::view(*this, std::move(shape)); }
Variable Variable::flatten(int64_t start_dim, int64_t end_dim) const {
  return mlr::flatten(*this, start_dim, end_dim);
}
Variable Variable::permute(const std::vector<int64_t>& order) const { return mlr::permute(*this, order); }
Variable Variable::transpose(int64_t d0, int64_t d1) const { return mlr::transpose(*this, d0, d1); }
Variable Variable::t() const {
  MLR_CHECK(dim() == 2, "t(): expected a 2-d variable, got shape {}", shape_str(shape()));
  return mlr::transpose(*this, 0, 1);
}
Variable Variable::narrow(int64_t d, int64_t start, int64_t length) const {
  return mlr::narrow(*this, d, start, length);
}
Variable Variable::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  return mlr::slice(*this, d, start, end, step);
}
Variable Variable::select(int64_t d, int64_t index) const { return mlr::select(*this, d, index); }
Variable Variable::expand(Shape shape) const { return mlr::expand(*this, std::move(shape)); }
Variable Variable::squeeze(int64_t d) const { return mlr::squeeze(*this, d); }
Variable Variable::unsqueeze(int64_t d) const { return mlr::unsqueeze(*this, d); }
Variable Variable::contiguous() const { return mlr::contiguous(*this); }
Variable Variable::to(DType dtype) const { return mlr::cast(*this, dtype); }

// ---------------------------------------------------------------- graph recording helpers

namespace detail {

Edge gradient_edge(const Variable& v) {
  if (!v.requires_grad()) return {};
  const auto& impl = v.impl();
  if (impl->grad_fn) return {impl->grad_fn, impl->output_nr};
  std::shared_ptr<Node> acc = impl->grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(impl);
    impl->grad_accumulator = acc;
  }
  return {acc, 0};
}

std::vector<bool> input_needs_grad(const std::vector<Variable>& inputs) {
  std::vector<bool> needs(inputs.size(), false);
  if (!GradMode::is_enabled()) {
    if (RequiresGradObserver* obs = RequiresGradObserver::current())
      for (const Variable& v : inputs)
        if (v.requires_grad()) obs->note();
    return needs;
  }
  for (size_t i = 0; i < inputs.size(); ++i) needs[i] = inputs[i].requires_grad();
  return needs;
}

void connect_inputs(Node& node, const std::vector<Variable>& inputs, const std::vector<bool>& needs) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Variable& v = inputs[i];
    node.add_input(needs[i] ? gradient_edge(v) : Edge{},
                   v.defined() ? TensorMeta::of(v.data()) : TensorMeta{});
  }
}

Variable make_output(const std::shared_ptr<Node>& node, Tensor data) {
  Variable out(std::move(data));
  MLR_CHECK(out.defined(), "{}: an output tensor is undefined", node->name());
  if (!out.data().is_floating_point()) {  // integer outputs (indices, counts) are not differentiable
    node->add_output(TensorMeta::of(out.data()));
    return out;
  }
  out.impl()->requires_grad = true;
  out.impl()->grad_fn = node;
  out.impl()->output_nr = node->add_output(TensorMeta::of(out.data()));
  return out;
}

RequiresGradObserver::RequiresGradObserver() : prev_(current_observer) { current_observer = this; }
RequiresGradObserver::~RequiresGradObserver() { current_observer = prev_; }
RequiresGradObserver* RequiresGradObserver::current() { return current_observer; }

}  // namespace detail
}  // namespace mlr
