// Device dispatch for kernels. A kernel is a void function with the same signature in
// mlr::cpu (tensor/kernels/cpu/) and mlr::cuda (tensor/kernels/cuda/); outputs are allocated by
// the caller. MLR_CUDA builds the device runtime (memory pool, copies, memory statistics);
// MLR_CUDA_KERNELS adds the CUDA kernels. Without them an op on a CUDA tensor raises an error
// naming the op rather than failing to link.
#pragma once

#include "tensor/error.h"
#include "tensor/kernels/cpu/kernels.h"
#if defined(MLR_CUDA) && defined(MLR_CUDA_KERNELS)
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
    if ((device).is_cuda()) throw ::mlr::Error(#fn ": this build has no CUDA kernels");      \
    ::mlr::cpu::fn(__VA_ARGS__);                                                            \
  } while (0)
#endif
