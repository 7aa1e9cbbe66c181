// Activation checkpointing: trade compute for memory by recomputing a segment during backward.
//
//   y = checkpoint([&](const std::vector<Variable>& in) { return std::vector<Variable>{block(in[0])}; }, {x})[0];
//
// Forward runs fn without recording a graph and keeps only the inputs (and the default
// generator's state, so random ops such as dropout draw the same numbers again). Backward reruns
// fn with grad enabled on detached copies of the inputs and backpropagates through the
// recomputed segment: gradients reach the inputs and, directly, every parameter fn used.
//
// Parameters that fn captures (rather than receives) are found while it runs: when one requires
// grad, the outputs require grad even if no input does (a frozen block with LoRA adapters).
// fn must compute the same thing when rerun (no dependence on state it changes). Activations from
// outside the segment belong in `inputs`; captured Variables should be leaves (parameters), since
// the nested backward would otherwise run through (and free) part of the enclosing graph.
#pragma once

#include <functional>
#include <vector>

#include "autograd/variable.h"

namespace mlr {

using CheckpointFn = std::function<std::vector<Variable>(const std::vector<Variable>&)>;

std::vector<Variable> checkpoint(const CheckpointFn& fn, const std::vector<Variable>& inputs);
// One input, one output.
Variable checkpoint(const std::function<Variable(const Variable&)>& fn, const Variable& input);

}  // namespace mlr
