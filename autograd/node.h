// The graph autograd records: one Node per differentiable op application, with an Edge to the
// node of each input. A node turns the gradients of its forward outputs into the gradients of its
// forward inputs; backward() (autograd/engine.cpp) walks the nodes in reverse topological order.
// Leaves that require grad are reached through an AccumulateGrad node that adds into .grad.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace mlr {

class Node;

// What backward needs to know about a forward tensor without keeping its values alive.
struct TensorMeta {
  Shape shape;
  DType dtype = DType::f32;
  Device device;
  static TensorMeta of(const Tensor& t) { return {t.shape(), t.dtype(), t.device()}; }
};

// Where the gradient of one forward input goes: gradient slot `input_nr` of `node`
// (input_nr is the output index of the producing op). A null node means "needs no gradient".
struct Edge {
  std::shared_ptr<Node> node;
  uint32_t input_nr = 0;
  bool valid() const { return node != nullptr; }
};

class Node {
 public:
  explicit Node(std::string name);
  virtual ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Gradients of the forward outputs (one per output, all defined: the engine fills outputs that
  // received nothing with zeros) -> gradients of the forward inputs (one per input; undefined for
  // an input that needs none).
  virtual std::vector<Tensor> apply(std::vector<Tensor>&& grad_outputs) = 0;
  // Frees what the node saved for backward; called after the node ran unless retain_graph.
  // A released node that is asked to run again throws (see check_not_released).
  virtual void release_saved() { released_ = true; }

  const std::string& name() const { return name_; }
  uint64_t sequence_nr() const { return sequence_nr_; }
  const std::vector<Edge>& next_edges() const { return next_edges_; }
  const std::vector<TensorMeta>& input_meta() const { return input_meta_; }
  const std::vector<TensorMeta>& output_meta() const { return output_meta_; }
  size_t num_inputs() const { return next_edges_.size(); }
  size_t num_outputs() const { return output_meta_.size(); }
  bool needs_input_grad(size_t i) const { return i < next_edges_.size() && next_edges_[i].valid(); }
  bool released() const { return released_; }

  // Wiring, done once by the code that records the node.
  void add_input(Edge edge, TensorMeta meta);
  uint32_t add_output(TensorMeta meta);

 protected:
  // Throws the "graph already freed" error when backward runs twice through a released node.
  void check_not_released() const;
  bool released_ = false;

 private:
  std::string name_;
  uint64_t sequence_nr_;
  std::vector<Edge> next_edges_;
  std::vector<TensorMeta> input_meta_;
  std::vector<TensorMeta> output_meta_;
};

}  // namespace mlr
