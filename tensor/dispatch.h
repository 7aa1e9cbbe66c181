// Device dispatch for kernels. A kernel is a void function with the same signature in
// mlr::cpu (tensor/kernels/cpu/) and mlr::cuda (tensor/kernels/cuda/); outputs are allocated by
// the caller. Without the CUDA backend, a CUDA tensor cannot exist, but the check stays explicit.
#pragma once

#include "tensor/error.h"
#include "tensor/kernels/cpu/kernels.h"
#ifdef MLR_CUDA
#include "tensor/kernels/cuda/kernels.h"
#define MLR_DISPATCH(device, fn, ...)                 \
  do {                                                \
    if ((device).is_cuda()) {                         \
      ::mlr::cuda::fn(__VA_ARGS__);                   \
    } else {                                          \
      ::mlr::cpu::fn(__VA_ARGS__);                    \
    }                                                 \
  } while (0)
#else
#define MLR_DISPATCH(device, fn, ...)                                                       \
  do {                                                                                      \
    if ((device).is_cuda()) throw ::mlr::Error(#fn ": this build has no CUDA backend");     \
    ::mlr::cpu::fn(__VA_ARGS__);                                                            \
  } while (0)
#endif
