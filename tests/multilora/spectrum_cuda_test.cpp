// The cuSOLVER SVD against LAPACK's: singular values equal, and the factors rebuild the matrix, for
// tall and wide matrices in f32 and f64.
#include <doctest/doctest.h>

#include <cmath>

#include "multilora/spectrum.h"
#include "tensor/ops.h"

using namespace mlr;

TEST_CASE("svd on CUDA (cuSOLVER) equals the LAPACK path") {
  Generator gen(11);
  for (const Shape& shape : {Shape{37, 20}, Shape{20, 37}, Shape{16, 16}}) {
    for (DType dtype : {DType::f64, DType::f32}) {
      CAPTURE(shape_str(shape));
      const Tensor a = randn(shape, gen, {DType::f64}).to(dtype);
      const Svd cpu = svd(a);
      const Svd gpu = svd(a.cuda());
      REQUIRE(gpu.S.device().is_cpu());
      const auto s_cpu = cpu.S.to_vector<double>(), s_gpu = gpu.S.to_vector<double>();
      REQUIRE(s_cpu.size() == s_gpu.size());
      for (size_t i = 0; i < s_cpu.size(); ++i) CHECK(s_gpu[i] == doctest::Approx(s_cpu[i]).epsilon(1e-9));
      // U diag(S) Vt rebuilds the matrix (signs of singular vectors may differ between libraries).
      const Tensor rebuilt = matmul(mul(gpu.U, gpu.S.unsqueeze(0)), gpu.Vt);
      const auto want = a.to(DType::f64).to_vector<double>(), got = rebuilt.to_vector<double>();
      double worst = 0;
      for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(want[i] - got[i]));
      CHECK(worst < 1e-9);
      CHECK(singular_values(a.cuda()).to_vector<double>().front() == doctest::Approx(s_cpu.front()).epsilon(1e-9));
    }
  }
}
