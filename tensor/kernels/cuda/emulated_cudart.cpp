// The part of the CUDA runtime this project calls, for the emulated CUDA build (emulator.h): one
// device whose memory is host memory, streams that are already synchronous (every emulated launch
// finishes before it returns), and device attributes of a small GPU. Compiled to nothing in other
// builds, which link the real libcudart.
#ifdef MLR_CUDA_EMULATION

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace {

constexpr int kSms = 2;                 // few SMs: grids capped by SM count stay small on the CPU
constexpr size_t kMemory = size_t(8) << 30;
std::atomic<size_t> allocated{0};

cudaError_t allocate(void** ptr, size_t size) {
  // 256-byte alignment, as cudaMalloc guarantees; the size rounded up for aligned_alloc.
  *ptr = std::aligned_alloc(256, (size + 255) / 256 * 256);
  if (*ptr == nullptr) return cudaErrorMemoryAllocation;
  allocated += size;
  return cudaSuccess;
}

}  // namespace

extern "C" {

cudaError_t CUDARTAPI cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t CUDARTAPI cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGetLastError(void) { return cudaSuccess; }
const char* CUDARTAPI cudaGetErrorString(cudaError_t error) {
  return error == cudaSuccess ? "no error (emulated device)" : "error (emulated device)";
}
cudaError_t CUDARTAPI cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  *stream = nullptr;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t CUDARTAPI cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int) {
  *pool = nullptr;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMemPoolSetAttribute(cudaMemPool_t, enum cudaMemPoolAttr, void*) { return cudaSuccess; }
cudaError_t CUDARTAPI cudaMalloc(void** ptr, size_t size) { return allocate(ptr, size); }
cudaError_t CUDARTAPI cudaMallocAsync(void** ptr, size_t size, cudaStream_t) { return allocate(ptr, size); }
cudaError_t CUDARTAPI cudaFreeAsync(void* ptr, cudaStream_t) {
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  *total = kMemory;
  *free_bytes = kMemory > allocated ? kMemory - allocated : 0;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t) {
  std::memset(ptr, value, count);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind, cudaStream_t) {
  std::memmove(dst, src, count);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int) {
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = kSms; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    default: return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaFuncSetAttribute(const void*, enum cudaFuncAttribute, int) { return cudaSuccess; }

}  // extern "C"

#endif  // MLR_CUDA_EMULATION
