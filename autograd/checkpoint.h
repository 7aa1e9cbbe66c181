// Activation checkpointing: trade compute for memory by recomputing a segment during backward.
//
//   y = checkpoint([&](const std::vector<Variable>& in) { return std::vector<Variable>{block(in[0])}; }, {x})[0];
//
// Forward runs fn without recording a graph and keeps only the inputs. Backward reruns fn with
// grad enabled on detached copies of the inputs and backpropagates through the recomputed
// segment: gradients reach the inputs and, directly, every parameter fn used.
//
// The recompute is the same function as the forward, so the gradient belongs to the loss:
//  - Random numbers: forward records every Generator fn draws from (its state at the first draw,
//    tensor.h GeneratorRecorder), not only the default one: each adapter's dropout stream too.
//    The recompute starts each from that state and puts it back afterwards, so a generator ends
//    where the forward left it. Drawing from a generator the forward did not use, or a different
//    amount from one it did, is an error rather than a silently different gradient.
//  - Side effects: a module that records something in forward (SMoRA's rank load counts, metrics,
//    running statistics) must do it once per real forward: in_checkpoint_recompute() is true
//    while a segment is being rerun, and once_per_forward(effect) skips `effect` then.
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

// True on this thread while a checkpointed segment is being recomputed during backward.
bool in_checkpoint_recompute();
// Runs `effect` unless this is a checkpoint's recompute: for side effects of a forward (counting,
// statistics) that must happen once per forward however often the segment runs.
template <typename Effect>
void once_per_forward(Effect&& effect) {
  if (!in_checkpoint_recompute()) effect();
}

using CheckpointFn = std::function<std::vector<Variable>(const std::vector<Variable>&)>;

std::vector<Variable> checkpoint(const CheckpointFn& fn, const std::vector<Variable>& inputs);
// One input, one output.
Variable checkpoint(const std::function<Variable(const Variable&)>& fn, const Variable& input);

}  // namespace mlr
