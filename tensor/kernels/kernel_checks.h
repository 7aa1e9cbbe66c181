// Checks shared by the kernels of both devices. The front-ends (tensor/nn_ops.cpp) make the
// tensors of the fused LLaMA ops contiguous; kernels that index them densely check it, so a
// front-end that forgets fails loudly instead of reading the wrong elements.
#pragma once

#include <initializer_list>

#include "tensor/error.h"
#include "tensor/tensor.h"

namespace mlr {

// `device` names the kernel family in the message ("cpu" or "cuda").
inline void check_kernel_contiguous(const char* op, const char* device, std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors)
    MLR_CHECK(t->is_contiguous(), "{} ({} kernel): expects contiguous tensors, got shape {} strides {}", op, device,
              shape_str(t->shape()), shape_str(t->strides()));
}

}  // namespace mlr
