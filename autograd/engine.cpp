// The backward engine.
//
// 1. Seeds: dL/d(output) for each output (ones for a one-element output when none is given).
// 2. Dependencies: a DFS from the outputs' nodes (explicit stack, so graph depth never touches the
//    call stack) counts, for each reachable node, the edges that point at it.
// 3. Execution: a node runs once every node that feeds it gradients has run (its count reached 0),
//    later-recorded nodes first. Gradients arriving at the same node slot are summed; slots that
//    received nothing are filled with zeros; a node's returned gradients are checked against its
//    inputs' shapes and cast to their dtypes. Leaves accumulate through AccumulateGrad.
// 4. A node frees its saved tensors right after it ran, unless retain_graph.
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "autograd/variable.h"
#include "tensor/ops.h"

namespace mlr {

namespace {

struct LaterFirst {
  bool operator()(const std::shared_ptr<Node>& a, const std::shared_ptr<Node>& b) const {
    return a->sequence_nr() < b->sequence_nr();
  }
};

Tensor check_input_grad(Tensor g, const Node& node, size_t i) {
  const TensorMeta& meta = node.input_meta()[i];
  MLR_CHECK(g.shape() == meta.shape, "backward: '{}' returned a gradient of shape {} for its input {} of shape {}",
            node.name(), shape_str(g.shape()), i, shape_str(meta.shape));
  MLR_CHECK(g.device() == meta.device, "backward: '{}' returned a gradient on {} for its input {} on {}",
            node.name(), g.device().str(), i, meta.device.str());
  if (g.dtype() != meta.dtype) g = cast(g, meta.dtype);
  return g;
}

void run_engine(const std::vector<std::pair<Edge, Tensor>>& roots, bool retain_graph) {
  // Dependency counts over the reachable graph.
  std::unordered_map<Node*, int64_t> dependencies;
  std::unordered_set<Node*> seen;
  std::vector<Node*> stack;
  for (const auto& [edge, seed] : roots)
    if (seen.insert(edge.node.get()).second) stack.push_back(edge.node.get());
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next_edges()) {
      if (!e.valid()) continue;
      ++dependencies[e.node.get()];
      if (seen.insert(e.node.get()).second) stack.push_back(e.node.get());
    }
  }

  // Gradient buffers: one slot per forward output of each pending node.
  std::unordered_map<Node*, std::vector<Tensor>> buffers;
  auto accumulate = [&](Node* n, uint32_t slot, Tensor g) {
    std::vector<Tensor>& buf = buffers[n];
    if (buf.empty()) buf.resize(n->num_outputs());
    if (!buf[slot].defined()) {
      buf[slot] = std::move(g);
    } else {
      buf[slot] = add(buf[slot], g);
    }
  };
  std::priority_queue<std::shared_ptr<Node>, std::vector<std::shared_ptr<Node>>, LaterFirst> ready;
  std::unordered_set<Node*> queued;
  for (const auto& [edge, seed] : roots) accumulate(edge.node.get(), edge.input_nr, seed);
  for (const auto& [edge, seed] : roots)
    if (dependencies[edge.node.get()] == 0 && queued.insert(edge.node.get()).second) ready.push(edge.node);

  while (!ready.empty()) {
    std::shared_ptr<Node> node = ready.top();
    ready.pop();
    std::vector<Tensor> grads;
    if (auto it = buffers.find(node.get()); it != buffers.end()) {
      grads = std::move(it->second);
      buffers.erase(it);
    }
    bool any = false;
    for (const Tensor& g : grads) any = any || g.defined();

    std::vector<Tensor> input_grads;
    if (any) {
      for (size_t k = 0; k < grads.size(); ++k) {
        if (grads[k].defined()) continue;
        const TensorMeta& m = node->output_meta()[k];
        grads[k] = zeros(m.shape, {m.dtype, m.device});
      }
      input_grads = node->apply(std::move(grads));
      MLR_CHECK(input_grads.empty() || input_grads.size() == node->num_inputs(),
                "backward: '{}' returned {} gradients for {} inputs", node->name(), input_grads.size(),
                node->num_inputs());
    }
    if (!retain_graph) node->release_saved();

    const auto& edges = node->next_edges();
    for (size_t i = 0; i < edges.size(); ++i) {
      const Edge& e = edges[i];
      if (!e.valid()) continue;
      if (i < input_grads.size() && input_grads[i].defined())
        accumulate(e.node.get(), e.input_nr, check_input_grad(std::move(input_grads[i]), *node, i));
      if (--dependencies[e.node.get()] == 0) ready.push(e.node);
    }
  }
}

}  // namespace

void backward(const std::vector<Variable>& outputs, const std::vector<Tensor>& seeds, bool retain_graph) {
  MLR_CHECK(seeds.empty() || seeds.size() == outputs.size(), "backward: {} seed gradients for {} outputs",
            seeds.size(), outputs.size());
  std::vector<std::pair<Edge, Tensor>> roots;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Variable& out = outputs[i];
    MLR_CHECK(out.defined(), "backward: output {} is undefined", i);
    MLR_CHECK(out.requires_grad(),
              "backward: the output (shape {}) does not require grad: no input of its computation requires "
              "grad, or it was computed under NoGradGuard or from detached values",
              shape_str(out.shape()));
    Tensor seed = seeds.empty() ? Tensor() : seeds[i];
    if (!seed.defined()) {
      MLR_CHECK(out.numel() == 1,
                "backward: a seed gradient is required for an output of shape {} ({} elements); pass "
                "backward(seed) with a tensor of that shape (only one-element outputs default to a seed of 1)",
                shape_str(out.shape()), out.numel());
      seed = ones(out.shape(), out.data().options());
    } else {
      MLR_CHECK(seed.shape() == out.shape(), "backward: seed gradient has shape {} but the output has shape {}",
                shape_str(seed.shape()), shape_str(out.shape()));
      MLR_CHECK(seed.device() == out.device(), "backward: seed gradient is on {} but the output is on {}",
                seed.device().str(), out.device().str());
      if (seed.dtype() != out.dtype()) seed = cast(seed, out.dtype());
    }
    roots.emplace_back(detail::gradient_edge(out), std::move(seed));
  }
  run_engine(roots, retain_graph);
}

}  // namespace mlr
