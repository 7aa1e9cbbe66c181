#include "tensor/device.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "tensor/cpu_allocator.h"

#ifdef MLR_CUDA
#include "tensor/kernels/cuda/runtime.h"
#endif

namespace mlr {

namespace {

[[noreturn]] void no_cuda(const char* what) {
  throw Error(fmt::format("{}: this build has no CUDA backend (configure with -DMLR_CUDA=ON)", what));
}

}  // namespace

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::cpu();
  if (name == "cuda") return Device::cuda(0);
  if (name.rfind("cuda:", 0) == 0) {
    const std::string idx = name.substr(5);
    MLR_CHECK(!idx.empty() && idx.find_first_not_of("0123456789") == std::string::npos,
              "device '{}': expected cpu, cuda or cuda:N", name);
    return Device::cuda(std::stoi(idx));
  }
  throw Error(fmt::format("device '{}': expected cpu, cuda or cuda:N", name));
}

int cuda_device_count() {
#ifdef MLR_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

void synchronize(Device device) {
  if (device.is_cpu()) return;
#ifdef MLR_CUDA
  cuda::synchronize(device.index);
#else
  no_cuda("synchronize");
#endif
}

MemoryStats memory_stats(Device device) {
  if (device.is_cpu()) {
    const CpuAllocatorStats s = cpu_allocator().stats();
    return {s.current_bytes, s.peak_bytes, s.reserved_bytes};
  }
#ifdef MLR_CUDA
  return cuda::memory_stats(device.index);
#else
  no_cuda("memory_stats");
#endif
}

void reset_peak_memory(Device device) {
  if (device.is_cpu()) {
    cpu_allocator().reset_peak();
    return;
  }
#ifdef MLR_CUDA
  cuda::reset_peak_memory(device.index);
#else
  no_cuda("reset_peak_memory");
#endif
}

void empty_cache(Device device) {
  if (device.is_cpu()) cpu_allocator().release_cached();
}

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  if (device.is_cpu()) {
    data_ = cpu_allocator().allocate(nbytes);
  } else {
#ifdef MLR_CUDA
    data_ = cuda::allocate(nbytes, device.index);
#else
    no_cuda("allocate");
#endif
  }
}

Storage::Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> release)
    : data_(data), nbytes_(nbytes), device_(device), release_(std::move(release)) {}

Storage::~Storage() {
  if (release_) {
    release_(data_);
    return;
  }
  if (device_.is_cpu()) {
    cpu_allocator().deallocate(data_, nbytes_);
  } else {
#ifdef MLR_CUDA
    cuda::deallocate(data_, nbytes_, device_.index);
#endif
  }
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    if (nbytes) std::memcpy(dst, src, nbytes);
    return;
  }
#ifdef MLR_CUDA
  cuda::copy_bytes(dst, dst_device, src, src_device, nbytes);
#else
  no_cuda("copy_bytes");
#endif
}

}  // namespace mlr
