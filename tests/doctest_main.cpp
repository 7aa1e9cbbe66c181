// Shared main for every doctest binary. A CUDA test binary (built with MLR_CUDA_TEST_BINARY)
// exits with 77, which ctest reports as "skipped", when the machine has no GPU. Any binary exits
// with 77 when a test case skipped itself (MLR_SKIP_UNLESS, tests/test_support.h) and none failed.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "tests/test_support.h"
#ifdef MLR_CUDA_TEST_BINARY
#include "tensor/device.h"
#endif

int main(int argc, char** argv) {
#ifdef MLR_CUDA_TEST_BINARY
  if (mlr::cuda_device_count() == 0) {
    std::printf("no CUDA device on this machine: the CUDA suite is skipped\n");
    return mlr_test::kSkipExitCode;
  }
#endif
  doctest::Context context(argc, argv);
  const int failed = context.run();
  if (failed != 0 || context.shouldExit()) return failed;
  if (mlr_test::skipped_cases() > 0) {
    std::printf("%d test case(s) skipped: their inputs are missing (see the \"skipped:\" messages)\n",
                mlr_test::skipped_cases().load());
    return mlr_test::kSkipExitCode;
  }
  return 0;
}
