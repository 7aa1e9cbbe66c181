// CUDA runtime services used by Storage and the kernels: device count, the stream-ordered memory
// pool with byte counters, raw copies, and error checking that names the file and line.
// Compiled only with MLR_CUDA; this header is plain C++ so .cpp files can include it.
#pragma once

#include <cstddef>

#include "tensor/device.h"

namespace mlr::cuda {

int device_count();
// Allocates from the device's stream-ordered pool (cudaMallocAsync, release threshold = max, so
// freed blocks are kept for reuse). Throws mlr::Error with the bytes asked for and in use on OOM.
void* allocate(size_t nbytes, int device);
void deallocate(void* ptr, size_t nbytes, int device);
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);
void synchronize(int device);
MemoryStats memory_stats(int device);
void reset_peak_memory(int device);
// Test aid: when on, every new allocation is filled with 0xFF bytes (NaN in every floating dtype,
// -1 in the integer ones) before it is handed out, so a kernel that leaves part of its output
// unwritten fails the CUDA-vs-CPU comparison. Also switched on by MLR_CUDA_POISON=1.
void set_poison_allocations(bool on);

}  // namespace mlr::cuda
