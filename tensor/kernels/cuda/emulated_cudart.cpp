// The part of the CUDA runtime this project calls, for the emulated CUDA build (emulator.h): devices
// whose memory is host memory (one by default; tests ask for more), streams that are already
// synchronous (every emulated launch finishes before it returns) but keep count of their work and
// of the events they wait for, so that unordered work between devices is reported, device
// attributes of the architecture each device emulates (arch_limits.h), and the sticky-until-read
// launch errors of cudaGetLastError. Compiled to nothing in other builds, which link the real
// libcudart.
#ifdef MLR_CUDA_EMULATION

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "tensor/kernels/cuda/emulator.h"

namespace {

namespace emu = mlr::cuda_emulation;

constexpr size_t kMemory = size_t(8) << 30;
std::atomic<size_t> allocated{0};

struct Allocation {
  size_t bytes;
  int device;
  std::vector<std::pair<const emu::Stream*, uint64_t>> readers;  // copies on other devices' streams
};

std::mutex& bookkeeping() {
  static std::mutex m;
  return m;
}
std::map<uintptr_t, Allocation>& allocations() {
  static std::map<uintptr_t, Allocation> a;
  return a;
}
std::vector<emu::Stream*>& streams() {
  static std::vector<emu::Stream*> s;
  return s;
}

// The allocation holding p, or nullptr (host memory).
std::pair<const uintptr_t, Allocation>* allocation_of(const void* p) {
  auto& a = allocations();
  const uintptr_t x = reinterpret_cast<uintptr_t>(p);
  auto it = a.upper_bound(x);
  if (it == a.begin()) return nullptr;
  --it;
  return x < it->first + std::max<size_t>(it->second.bytes, 1) ? &*it : nullptr;
}

void hazard(std::string what) {
  std::fprintf(stderr, "cuda emulator: stream hazard: %s\n", what.c_str());
  emu::stream_hazards().push_back(std::move(what));
}

// Work on stream `s` touching memory of `device` must come after the work queued there.
void check_ordered_after_device(const emu::Stream* s, int device, const char* what) {
  if (device == s->device) return;
  for (const emu::Stream* other : streams()) {
    if (other->device != device || other->work == 0) continue;
    const auto it = s->waited.find(other);
    const uint64_t waited = it == s->waited.end() ? 0 : it->second;
    if (waited < other->work)
      hazard(std::string(what) + " queued on a stream of device " + std::to_string(s->device) + " uses memory of device " +
             std::to_string(device) + " without waiting for the work queued on that device's stream (record an event "
             "there, cudaStreamWaitEvent here)");
  }
}

cudaError_t allocate(void** ptr, size_t size) {
  // 256-byte alignment, as cudaMalloc guarantees; the size rounded up for aligned_alloc.
  *ptr = std::aligned_alloc(256, (size + 255) / 256 * 256);
  if (*ptr == nullptr) return cudaErrorMemoryAllocation;
  allocated += size;
  std::lock_guard<std::mutex> lock(bookkeeping());
  allocations()[reinterpret_cast<uintptr_t>(*ptr)] = {size, emu::current_device(), {}};
  return cudaSuccess;
}

const char* error_name(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    default: return "error";
  }
}

}  // namespace

extern "C" {

cudaError_t CUDARTAPI cudaSetDevice(int device) {
  if (device < 0 || device >= emu::devices().count) return cudaErrorInvalidDevice;
  emu::current_device() = device;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGetDevice(int* device) {
  *device = emu::current_device();
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGetDeviceCount(int* count) {
  *count = emu::devices().count;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGetLastError(void) {
  const cudaError_t e = emu::errors().pending;
  emu::errors().pending = cudaSuccess;
  return e;
}
cudaError_t CUDARTAPI cudaPeekAtLastError(void) { return emu::errors().pending; }
const char* CUDARTAPI cudaGetErrorString(cudaError_t error) {
  // The latest error's message names its cause, as the real runtime's text does not.
  static thread_local std::string text;
  text = std::string(error_name(error)) + " (emulated device";
  if (error != cudaSuccess && error == emu::errors().described) text += ": " + emu::errors().message;
  text += ")";
  return text.c_str();
}
cudaError_t CUDARTAPI cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  auto* s = new emu::Stream{emu::current_device(), 0, {}};
  std::lock_guard<std::mutex> lock(bookkeeping());
  streams().push_back(s);
  *stream = reinterpret_cast<cudaStream_t>(s);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t CUDARTAPI cudaStreamDestroy(cudaStream_t stream) {
  auto* s = reinterpret_cast<emu::Stream*>(stream);
  std::lock_guard<std::mutex> lock(bookkeeping());
  auto& all = streams();
  const auto it = std::find(all.begin(), all.end(), s);
  if (it == all.end()) return cudaErrorInvalidResourceHandle;
  all.erase(it);
  for (emu::Stream* other : all) other->waited.erase(s);
  for (int d = 0; d < emu::kMaxEmulatedDevices; ++d) emu::default_stream(d)->waited.erase(s);
  for (auto& [address, allocation] : allocations())
    std::erase_if(allocation.readers, [s](const auto& reader) { return reader.first == s; });
  delete s;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) {
  *event = reinterpret_cast<cudaEvent_t>(new emu::Event{});
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventDestroy(cudaEvent_t event) {
  delete reinterpret_cast<emu::Event*>(event);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  const emu::Stream* s = emu::stream_of(stream);
  if (s->device != emu::current_device()) return cudaErrorInvalidResourceHandle;  // as the real runtime
  *reinterpret_cast<emu::Event*>(event) = {s, s->work};
  return cudaSuccess;
}
// Emulated work is done when its call returns: a recorded event has always completed.
cudaError_t CUDARTAPI cudaEventQuery(cudaEvent_t) { return cudaSuccess; }
cudaError_t CUDARTAPI cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  const emu::Event& e = *reinterpret_cast<emu::Event*>(event);
  if (e.stream == nullptr) return cudaSuccess;  // never recorded: nothing to wait for
  uint64_t& waited = emu::stream_of(stream)->waited[e.stream];
  waited = std::max(waited, e.work);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int) {
  *pool = nullptr;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMemPoolSetAttribute(cudaMemPool_t, enum cudaMemPoolAttr, void*) { return cudaSuccess; }
cudaError_t CUDARTAPI cudaMalloc(void** ptr, size_t size) { return allocate(ptr, size); }
cudaError_t CUDARTAPI cudaMallocAsync(void** ptr, size_t size, cudaStream_t) { return allocate(ptr, size); }
cudaError_t CUDARTAPI cudaFreeAsync(void* ptr, cudaStream_t stream) {
  {
    std::lock_guard<std::mutex> lock(bookkeeping());
    const emu::Stream* s = emu::stream_of(stream);
    auto it = allocations().find(reinterpret_cast<uintptr_t>(ptr));
    if (it != allocations().end()) {
      for (const auto& [reader, work] : it->second.readers) {
        const auto w = s->waited.find(reader);
        if (reader != s && (w == s->waited.end() || w->second < work))
          hazard("cudaFreeAsync on a stream of device " + std::to_string(s->device) +
                 " frees a buffer that a copy queued on a stream of device " + std::to_string(reader->device) +
                 " may still read (no event orders the free after the copy)");
      }
      allocated -= it->second.bytes;
      allocations().erase(it);
    }
  }
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  *total = kMemory;
  *free_bytes = kMemory > allocated ? kMemory - allocated : 0;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream) {
  ++emu::stream_of(stream)->work;
  std::memset(ptr, value, count);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind,
                                      cudaStream_t stream) {
  emu::Stream* s = emu::stream_of(stream);
  {
    std::lock_guard<std::mutex> lock(bookkeeping());
    auto* from = allocation_of(src);
    auto* to = allocation_of(dst);
    if (from != nullptr) check_ordered_after_device(s, from->second.device, "a copy");
    if (to != nullptr) check_ordered_after_device(s, to->second.device, "a copy");
    ++s->work;
    if (from != nullptr && from->second.device != s->device) from->second.readers.emplace_back(s, s->work);
  }
  std::memmove(dst, src, count);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (device < 0 || device >= emu::devices().count) return cudaErrorInvalidDevice;
  const emu::DeviceProperties& d = emu::devices().properties[device];
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = d.sms; break;
    case cudaDevAttrComputeCapabilityMajor: *value = d.sm / 10; break;
    case cudaDevAttrComputeCapabilityMinor: *value = d.sm % 10; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = int(d.smem_optin); break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = int(mlr::cuda::kDefaultDynamicSmem); break;
    case cudaDevAttrMaxThreadsPerBlock: *value = mlr::cuda::kMaxThreadsPerBlock; break;
    default: return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  const int device = emu::current_device();
  if (value < 0 || size_t(value) > emu::devices().properties[device].smem_optin) {
    emu::set_error(cudaErrorInvalidValue, "cudaFuncSetAttribute: " + std::to_string(value) +
                                              " bytes of dynamic shared memory; sm_" +
                                              std::to_string(emu::devices().properties[device].sm) + " allows " +
                                              std::to_string(emu::devices().properties[device].smem_optin));
    emu::errors().pending = cudaSuccess;  // returned here, not left for cudaGetLastError
    return cudaErrorInvalidValue;
  }
  emu::kernel_smem_limits()[{func, device}] = size_t(value);
  return cudaSuccess;
}

}  // extern "C"

#endif  // MLR_CUDA_EMULATION
