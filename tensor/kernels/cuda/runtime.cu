// The CUDA runtime layer: one stream per device (the "current stream" every kernel is queued on),
// a stream-ordered memory pool, and checked calls. See runtime.h.
#include "tensor/kernels/cuda/runtime.h"
#include "tensor/kernels/cuda/cuda_utils.cuh"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <vector>

namespace mlr::cuda {

namespace {

constexpr int kMaxDevices = 64;

struct DeviceState {
  std::once_flag init;
  cudaStream_t stream = nullptr;
  std::atomic<size_t> current{0};
  std::atomic<size_t> peak{0};
};

DeviceState& state(int device) {
  static DeviceState states[kMaxDevices];
  MLR_CHECK(device >= 0 && device < kMaxDevices, "cuda: device index {} out of range", device);
  DeviceState& s = states[device];
  std::call_once(s.init, [&] {
    const int available = device_count();
    MLR_CHECK(device < available, "cuda:{}: no such CUDA device (this machine has {}{})", device, available,
              available == 0 ? "; no GPU or no driver was found" : "");
    MLR_CUDA_CHECK(cudaSetDevice(device));
    MLR_CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
    // Keep freed memory in the pool instead of returning it to the driver at each sync.
    cudaMemPool_t pool;
    MLR_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t threshold = UINT64_MAX;
    MLR_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  });
  return s;
}

std::atomic<bool>& poison_flag() {
  static std::atomic<bool> flag{[] {
    const char* v = std::getenv("MLR_CUDA_POISON");
    return v != nullptr && v[0] == '1';
  }()};
  return flag;
}

}  // namespace

void set_poison_allocations(bool on) { poison_flag().store(on); }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device / no driver" error
    return 0;
  }
  return n;
}

cudaStream_t current_stream(int device) { return state(device).stream; }

void* allocate(size_t nbytes, int device) {
  DeviceState& s = state(device);
  MLR_CUDA_CHECK(cudaSetDevice(device));
  void* ptr = nullptr;
  cudaError_t err = cudaMallocAsync(&ptr, nbytes == 0 ? 1 : nbytes, s.stream);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    throw Error(fmt::format(
        "cuda:{}: out of memory allocating {} bytes ({:.2f} GiB); tensors hold {:.2f} GiB, device has "
        "{:.2f} GiB free of {:.2f} GiB",
        device, nbytes, nbytes / 1073741824.0, s.current.load() / 1073741824.0, free_bytes / 1073741824.0,
        total_bytes / 1073741824.0));
  }
  MLR_CUDA_CHECK(err);
  if (poison_flag().load(std::memory_order_relaxed)) MLR_CUDA_CHECK(cudaMemsetAsync(ptr, 0xFF, nbytes, s.stream));
  size_t now = s.current.fetch_add(nbytes) + nbytes;
  size_t peak = s.peak.load();
  while (now > peak && !s.peak.compare_exchange_weak(peak, now)) {
  }
  return ptr;
}

void deallocate(void* ptr, size_t nbytes, int device) {
  DeviceState& s = state(device);
  cudaSetDevice(device);
  cudaFreeAsync(ptr, s.stream);  // no throw from a destructor path
  s.current.fetch_sub(nbytes);
}

namespace {

// A copy between two GPUs runs on the destination's stream, so it must wait for the work the
// source's stream has queued (which may still be writing the source), and the source's stream must
// wait for the copy before its later work (a cudaFreeAsync of the source, then reuse of the block
// by the pool) may touch the buffer: an event each way.
void copy_between_devices(void* dst, int dst_device, const void* src, int src_device, size_t nbytes) {
  cudaStream_t src_stream = state(src_device).stream, dst_stream = state(dst_device).stream;
  cudaEvent_t source_ready, copied;
  MLR_CUDA_CHECK(cudaSetDevice(src_device));
  MLR_CUDA_CHECK(cudaEventCreateWithFlags(&source_ready, cudaEventDisableTiming));
  MLR_CUDA_CHECK(cudaEventRecord(source_ready, src_stream));
  MLR_CUDA_CHECK(cudaSetDevice(dst_device));
  MLR_CUDA_CHECK(cudaEventCreateWithFlags(&copied, cudaEventDisableTiming));
  MLR_CUDA_CHECK(cudaStreamWaitEvent(dst_stream, source_ready, 0));
  MLR_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, dst_stream));
  MLR_CUDA_CHECK(cudaEventRecord(copied, dst_stream));
  MLR_CUDA_CHECK(cudaSetDevice(src_device));
  MLR_CUDA_CHECK(cudaStreamWaitEvent(src_stream, copied, 0));
  // Destroying an event with work pending is allowed: its resources go when that work completes.
  MLR_CUDA_CHECK(cudaEventDestroy(source_ready));
  MLR_CUDA_CHECK(cudaEventDestroy(copied));
  MLR_CUDA_CHECK(cudaSetDevice(dst_device));
}

}  // namespace

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_device.is_cuda() && src_device.is_cuda() && dst_device.index != src_device.index)
    return copy_between_devices(dst, dst_device.index, src, src_device.index, nbytes);
  int device = dst_device.is_cuda() ? dst_device.index : src_device.index;
  cudaStream_t stream = state(device).stream;
  MLR_CUDA_CHECK(cudaSetDevice(device));
  MLR_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, stream));
  if (dst_device.is_cpu() || src_device.is_cpu()) MLR_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void synchronize(int device) { MLR_CUDA_CHECK(cudaStreamSynchronize(state(device).stream)); }

MemoryStats memory_stats(int device) {
  DeviceState& s = state(device);
  return {s.current.load(), s.peak.load()};
}

void reset_peak_memory(int device) {
  DeviceState& s = state(device);
  s.peak.store(s.current.load());
}

}  // namespace mlr::cuda
