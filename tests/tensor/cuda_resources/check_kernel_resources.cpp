// CI check of the compiled CUDA kernels against the hardware limits of every architecture they run
// on (tensor/kernels/cuda/arch_limits.h), with no GPU: reads ptxas's resource usage of each kernel
// from the libraries' fatbinaries (cuobjdump --dump-resource-usage) and fails when a kernel's launch
// configuration cannot fit a device it may be launched on: registers per thread (255), registers
// per block (its threads' registers, allocated per warp in units of 256), static plus dynamic shared
// memory per block (opt-in limit). For the flash attention kernels the dynamic shared memory is that
// of their tile configuration, and a configuration is checked on each device where the runtime
// would choose it (flash::key_tile_for), so a tile choice that does not fit fails here before it
// fails on a user's GPU.
//
//   check_kernel_resources CUOBJDUMP LIBRARY...
//
// Prints one line per flash kernel and architecture (registers, shared memory, spills) and every
// problem found; exits 1 when there is one.
#include <cxxabi.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "tensor/kernels/cuda/arch_limits.h"

namespace {

using mlr::cuda::ArchLimits;
namespace flash = mlr::cuda::flash;

struct KernelUsage {
  std::string library, name;  // name demangled
  int sm = 0, registers = 0;
  long shared = 0, local = 0;
};

std::string demangle(const std::string& mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> d(abi::__cxa_demangle(mangled.c_str(), nullptr, nullptr, &status), std::free);
  return status == 0 && d ? std::string(d.get()) : mangled;
}

long field(const std::string& line, const char* key) {
  const size_t at = line.find(key);
  return at == std::string::npos ? 0 : std::strtol(line.c_str() + at + std::strlen(key), nullptr, 10);
}

// Parses cuobjdump's "arch = sm_XX" headers and "Function NAME:" / "REG:n STACK:n SHARED:n LOCAL:n" pairs.
std::vector<KernelUsage> read_usage(const std::string& cuobjdump, const std::string& library) {
  const std::string command = "'" + cuobjdump + "' --dump-resource-usage '" + library + "' 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    std::fprintf(stderr, "check_kernel_resources: cannot run %s\n", command.c_str());
    std::exit(2);
  }
  std::vector<KernelUsage> kernels;
  int sm = 0;
  std::string function;
  char buffer[8192];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) {
    const std::string line(buffer);
    if (const size_t at = line.find("arch = sm_"); at != std::string::npos) sm = std::atoi(line.c_str() + at + 10);
    if (const size_t at = line.find("Function "); at != std::string::npos) {
      const size_t end = line.find(':', at);
      function = line.substr(at + 9, end == std::string::npos ? std::string::npos : end - at - 9);
      continue;
    }
    if (!function.empty() && line.find("REG:") != std::string::npos) {
      kernels.push_back({library, demangle(function), sm, int(field(line, "REG:")), field(line, "SHARED:"),
                         field(line, "LOCAL:")});
      function.clear();
    }
  }
  const int status = pclose(pipe);
  if (status != 0) {
    std::fprintf(stderr, "check_kernel_resources: %s failed (status %d)\n", command.c_str(), status);
    std::exit(2);
  }
  return kernels;
}

// Threads per block the kernel is launched with (arch_limits.h's table; flash kernels: flash::kThreads).
int threads_of(const std::string& name) {
  for (const auto& b : mlr::cuda::kBlockSizes)
    if (name.find(b.kernel) != std::string::npos) return b.threads;
  return mlr::cuda::kTypicalBlock;
}

// A flash kernel's family and template arguments (head dim, key tile), from its demangled name.
bool flash_kernel(const std::string& name, flash::Kernel& kernel, int& dim, int& key_tile) {
  static const std::regex pattern(R"(flash_(forward|dq|dkv)_kernel<[^,]+, (\d+)(?:, (\d+))?>)");
  std::smatch m;
  if (!std::regex_search(name, m, pattern)) return false;
  kernel = m[1] == "forward" ? flash::Kernel::forward : m[1] == "dq" ? flash::Kernel::dq : flash::Kernel::dkv;
  dim = std::stoi(m[2]);
  key_tile = m[3].matched ? std::stoi(m[3]) : flash::kQueryTile;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: check_kernel_resources CUOBJDUMP LIBRARY...\n");
    return 2;
  }
  std::vector<KernelUsage> kernels;
  for (int i = 2; i < argc; ++i) {
    std::vector<KernelUsage> k = read_usage(argv[1], argv[i]);
    kernels.insert(kernels.end(), k.begin(), k.end());
  }
  int problems = 0, checked = 0;
  auto problem = [&](const KernelUsage& k, const ArchLimits& device, const std::string& what) {
    ++problems;
    std::printf("FAIL %s (sm_%d code) on sm_%d (%s): %s\n", k.name.c_str(), k.sm, device.sm, device.examples,
                what.c_str());
  };
  for (const KernelUsage& k : kernels) {
    if (!mlr::cuda::arch_limits(k.sm)) {
      std::printf("note: %s built for sm_%d, an architecture outside arch_limits.h: not checked\n", k.name.c_str(),
                  k.sm);
      continue;
    }
    flash::Kernel family{};
    int dim = 0, key_tile = 0;
    const bool is_flash = flash_kernel(k.name, family, dim, key_tile);
    const int threads = is_flash ? flash::kThreads : threads_of(k.name);
    for (const ArchLimits& device : mlr::cuda::kArchLimits) {
      if (!mlr::cuda::cubin_runs_on(k.sm, device.sm)) continue;
      size_t dynamic = 0;
      if (is_flash) {
        // Only the configuration the runtime picks on this device is launched there.
        if (flash::key_tile_for(family, dim, device.smem_per_block_optin) != key_tile) continue;
        dynamic = flash::smem_of(family, dim, key_tile);
        std::printf("flash %-58s sm_%-3d on sm_%-3d: %3d registers, %6zu B shared (of %zu), %ld B spilled\n",
                    k.name.c_str(), k.sm, device.sm, k.registers, size_t(k.shared) + dynamic,
                    device.smem_per_block_optin, k.local);
      }
      ++checked;
      if (k.registers > device.registers_per_thread)
        problem(k, device, std::to_string(k.registers) + " registers per thread > " +
                               std::to_string(device.registers_per_thread));
      const int warps = (threads + 31) / 32;
      const int per_warp = (k.registers * 32 + 255) / 256 * 256;
      if (warps * per_warp > device.registers_per_block)
        problem(k, device, std::to_string(threads) + " threads x " + std::to_string(k.registers) +
                               " registers need " + std::to_string(warps * per_warp) + " > " +
                               std::to_string(device.registers_per_block) + " per block");
      if (size_t(k.shared) > mlr::cuda::kDefaultDynamicSmem)
        problem(k, device, std::to_string(k.shared) + " B of static shared memory > 48 KiB");
      if (size_t(k.shared) + dynamic > device.smem_per_block_optin)
        problem(k, device, std::to_string(k.shared) + " B static + " + std::to_string(dynamic) +
                               " B dynamic shared memory > " + std::to_string(device.smem_per_block_optin));
    }
  }
  if (kernels.empty()) {
    std::printf("FAIL: no kernel found in the libraries (was the fatbinary format of cuobjdump changed?)\n");
    return 1;
  }
  std::printf("%zu kernel images, %d (kernel, device) launch configurations checked, %d problems\n", kernels.size(),
              checked, problems);
  return problems == 0 ? 0 : 1;
}
