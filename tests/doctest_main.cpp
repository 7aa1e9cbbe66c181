// Shared main for every doctest binary. A CUDA test binary (built with MLR_CUDA_TEST_BINARY)
// exits with 77, which ctest reports as "skipped", when the machine has no GPU.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#ifdef MLR_CUDA_TEST_BINARY
#include "tensor/device.h"
#endif

int main(int argc, char** argv) {
#ifdef MLR_CUDA_TEST_BINARY
  if (mlr::cuda_device_count() == 0) {
    std::printf("no CUDA device on this machine: the CUDA suite is skipped\n");
    return 77;
  }
#endif
  doctest::Context context(argc, argv);
  return context.run();
}
