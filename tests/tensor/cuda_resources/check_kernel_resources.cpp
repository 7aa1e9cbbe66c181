// CI check of the compiled CUDA kernels against the hardware limits of every architecture they run
// on (tensor/kernels/cuda/arch_limits.h), with no GPU: reads ptxas's resource report of each kernel
// (the <object>.ptxas files that cmake/ptxas_report.sh keeps from -Xptxas=-v) and fails when a
// kernel's launch configuration cannot fit a device it may be launched on: registers per thread
// (255), registers per block (its threads' registers, allocated per warp in units of 256), static
// plus dynamic shared memory per block (opt-in limit). For the flash attention kernels the dynamic
// shared memory is that of their tile configuration, and a configuration is checked on each device
// where the runtime would choose it (flash::key_tile_for), so a tile choice that does not fit fails
// here before it fails on a user's GPU.
//
//   check_kernel_resources BUILD_DIR
//
// Prints one line per flash kernel and device (registers, shared memory, spills) and every problem
// found; exits 1 when there is one, or when no report is found.
#include <cxxabi.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "tensor/kernels/cuda/arch_limits.h"

namespace {

using mlr::cuda::ArchLimits;
namespace flash = mlr::cuda::flash;

struct KernelUsage {
  std::string report, name;  // name demangled
  int sm = 0, registers = 0;
  long shared = 0, local = 0;
};

std::string demangle(const std::string& mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> d(abi::__cxa_demangle(mangled.c_str(), nullptr, nullptr, &status), std::free);
  return status == 0 && d ? std::string(d.get()) : mangled;
}

// The number just before `suffix` in `line` (" 87040 bytes smem" -> 87040), 0 when absent.
long number_before(const std::string& line, const char* suffix) {
  const size_t at = line.find(suffix);
  if (at == std::string::npos) return 0;
  size_t start = at;
  while (start > 0 && std::isdigit(static_cast<unsigned char>(line[start - 1]))) --start;
  return std::strtol(line.c_str() + start, nullptr, 10);
}

// Parses ptxas -v: "Compiling entry function 'NAME' for 'sm_XX'", then "N bytes spill stores" and
// "Used N registers, ..., N bytes smem".
std::vector<KernelUsage> read_report(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::vector<KernelUsage> kernels;
  KernelUsage current;
  std::string line;
  while (std::getline(in, line)) {
    const size_t entry = line.find("Compiling entry function '");
    if (entry != std::string::npos) {
      const size_t begin = entry + 26, end = line.find('\'', begin);
      const size_t sm = line.find("'sm_", end);
      current = KernelUsage{file.string(), demangle(line.substr(begin, end - begin)),
                            sm == std::string::npos ? 0 : std::atoi(line.c_str() + sm + 4)};
      continue;
    }
    if (current.name.empty()) continue;
    if (line.find("bytes spill stores") != std::string::npos) current.local = number_before(line, " bytes spill stores");
    if (line.find("Used ") != std::string::npos && line.find(" registers") != std::string::npos) {
      current.registers = int(number_before(line, " registers"));
      current.shared = number_before(line, " bytes smem");
      kernels.push_back(current);
      current = KernelUsage{};
    }
  }
  return kernels;
}

// "flash_dq_kernel<__half, 128, 32>" of "void mlr::cuda::(anonymous namespace)::flash_dq_kernel<__half, 128, 32>(...)".
std::string short_name(const std::string& name) {
  std::string s = name.substr(0, name.find('(', name.find('<')));
  const size_t scope = s.rfind("::", s.find('<'));
  if (scope != std::string::npos) s = s.substr(scope + 2);
  return s;
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
  if (argc != 2) {
    std::fprintf(stderr, "usage: check_kernel_resources BUILD_DIR\n");
    return 2;
  }
  std::vector<KernelUsage> kernels;
  size_t reports = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(argv[1])) {
    if (!entry.is_regular_file() || entry.path().extension() != ".ptxas") continue;
    ++reports;
    std::vector<KernelUsage> k = read_report(entry.path());
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
        std::printf("%-38s sm_%-3d code on sm_%-3d: %3d registers, %6zu B shared (of %zu), %ld B spilled\n",
                    short_name(k.name).c_str(), k.sm, device.sm, k.registers, size_t(k.shared) + dynamic,
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
    std::printf("FAIL: no kernel in %zu ptxas reports under %s (is the build configured with MLR_PTXAS_REPORT, "
                "and did ptxas -v change its format?)\n",
                reports, argv[1]);
    return 1;
  }
  std::printf("%zu ptxas reports, %zu kernel images, %d (kernel, device) launch configurations checked, %d problems\n",
              reports, kernels.size(), checked, problems);
  return problems == 0 ? 0 : 1;
}
