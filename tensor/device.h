// Devices and device memory. A Storage is one allocation on one device; CUDA memory comes from a
// stream-ordered pool (tensor/kernels/cuda/runtime.cu), never one cudaMalloc per op.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "tensor/error.h"

namespace mlr {

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static Device cpu() { return {DeviceType::CPU, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::CUDA, index}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& o) const { return type == o.type && (is_cpu() || index == o.index); }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};

// "cpu", "cuda", "cuda:1"; throws mlr::Error on anything else.
Device parse_device(const std::string& name);

// Number of CUDA devices; 0 when built without CUDA or when no GPU (or driver) is present.
int cuda_device_count();
inline bool cuda_available() { return cuda_device_count() > 0; }
// Blocks until all work queued on the device's current stream has finished (no-op on the CPU).
void synchronize(Device device);

// Bytes held by tensors on a device: current and the peak since the last reset; on the CPU also the
// bytes reserved from the system (live blocks and those cached for reuse, tensor/cpu_allocator.h).
struct MemoryStats {
  size_t current_bytes = 0;
  size_t peak_bytes = 0;
  size_t reserved_bytes = 0;
};
MemoryStats memory_stats(Device device);
void reset_peak_memory(Device device);
// Returns the CPU allocator's cached free blocks to the system (no-op on CUDA devices, whose pool
// keeps its own release threshold).
void empty_cache(Device device);

// One allocation. Either owned (allocated here, freed on destruction) or external (memory owned by
// someone else, e.g. a memory-mapped file, released through the given deleter).
class Storage {
 public:
  Storage(size_t nbytes, Device device);
  Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> release);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  std::function<void(void*)> release_;  // empty for owned storage
};

// Raw copies between devices (host<->device, device<->device, host<->host), ordered on the current
// stream; a copy to the host waits for completion.
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);

}  // namespace mlr
