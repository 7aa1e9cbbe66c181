// Custom differentiable functions: a forward/backward pair over plain Tensors.
//
//   struct ScaledSquare : Function<ScaledSquare> {
//     static constexpr const char* name = "scaled_square";
//     // Variables passed to apply() arrive here as their Tensors; other arguments as they are.
//     static Tensor forward(FunctionCtx& ctx, const Tensor& x, double k) {
//       if (ctx.needs_input_grad(0)) ctx.save_for_backward({x});
//       ctx.save("k", k);
//       return mul(square(x), k);
//     }
//     // One gradient per forward output in, one per Variable input out (undefined = none).
//     static std::vector<Tensor> backward(FunctionCtx& ctx, const std::vector<Tensor>& g) {
//       return {mul(mul(g[0], ctx.saved_tensors()[0]), 2 * ctx.get<double>("k"))};
//     }
//   };
//   Variable y = ScaledSquare::apply(x, 3.0);
//
// forward may return a Tensor (apply returns a Variable) or std::vector<Tensor> (apply returns
// std::vector<Variable>; gradients of outputs that backward does not reach arrive as zeros).
// forward runs without recording; when no Variable input needs grad (or grad mode is off) no
// node is kept and whatever forward saved is freed with the context. Integer outputs are not
// differentiable. Backward is not itself differentiable (no higher-order gradients).
#pragma once

#include <any>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "autograd/variable.h"

namespace mlr {

class FunctionCtx {
 public:
  FunctionCtx(std::string name, std::vector<bool> needs_input_grad)
      : name_(std::move(name)), needs_(std::move(needs_input_grad)) {}

  void save_for_backward(std::vector<Tensor> tensors) { saved_ = std::move(tensors); }
  // Throws once the graph has been freed by an earlier backward (see retain_graph).
  const std::vector<Tensor>& saved_tensors() const;
  // Whether the i-th Variable argument of apply() needs a gradient.
  bool needs_input_grad(size_t i) const { return i < needs_.size() && needs_[i]; }
  size_t num_inputs() const { return needs_.size(); }

  // Non-tensor state for backward: sizes, flags, scalars.
  template <typename T> void save(const std::string& key, T value) { data_[key] = std::move(value); }
  template <typename T> const T& get(const std::string& key) const {
    auto it = data_.find(key);
    MLR_CHECK(it != data_.end(), "{}: backward asked for '{}', which forward did not save", name_, key);
    const T* v = std::any_cast<T>(&it->second);
    MLR_CHECK(v != nullptr, "{}: saved value '{}' has a different type than backward asked for", name_, key);
    return *v;
  }

  const std::string& name() const { return name_; }
  void release();

 private:
  std::string name_;
  std::vector<bool> needs_;
  std::vector<Tensor> saved_;
  std::map<std::string, std::any> data_;
  bool released_ = false;
};

namespace detail {

using BackwardFn = std::vector<Tensor> (*)(FunctionCtx&, const std::vector<Tensor>&);

template <typename T> inline constexpr bool is_variable_v = std::is_same_v<std::decay_t<T>, Variable>;

template <typename T> decltype(auto) unwrap_variable(const T& arg) {
  if constexpr (is_variable_v<T>) {
    return arg.data();
  } else {
    return (arg);
  }
}

// Records the node of a custom function (when some input needs grad) and wraps the outputs.
std::vector<Variable> wrap_function_outputs(FunctionCtx&& ctx, BackwardFn backward,
                                            const std::vector<Variable>& inputs, std::vector<Tensor> outputs);

}  // namespace detail

template <typename Derived>
struct Function {
  template <typename... Args>
  static auto apply(const Args&... args) {
    std::vector<Variable> inputs;
    (
        [&] {
          if constexpr (detail::is_variable_v<Args>) inputs.push_back(args);
        }(),
        ...);
    FunctionCtx ctx(Derived::name, detail::input_needs_grad(inputs));
    auto out = [&] {
      NoGradGuard no_grad;
      return Derived::forward(ctx, detail::unwrap_variable(args)...);
    }();
    if constexpr (std::is_same_v<decltype(out), Tensor>) {
      return detail::wrap_function_outputs(std::move(ctx), &Derived::backward, inputs, {std::move(out)})[0];
    } else {
      static_assert(std::is_same_v<decltype(out), std::vector<Tensor>>,
                    "Function::forward must return Tensor or std::vector<Tensor>");
      return detail::wrap_function_outputs(std::move(ctx), &Derived::backward, inputs, std::move(out));
    }
  }
};

}  // namespace mlr
