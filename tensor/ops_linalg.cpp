// Matrix products: matmul (numpy semantics) and linear. The front-end reduces every case to the
// kernel's 3-D form out [B, m, n] = a [B, m, k] @ b [B, k, n] with views, copying an operand only
// when its matrices are neither row- nor column-major or its batch dims do not collapse to one stride.
#include "tensor/dispatch.h"
#include "tensor/ops.h"

namespace mlr {

namespace {

// The kernels' rule (tensor/kernels/cpu/matmul.cpp): a matrix is usable in place when one of its
// strides is 1 and the other at least the opposite size; size-1 dimensions accept any stride.
bool blas_ready(int64_t rows, int64_t cols, int64_t srow, int64_t scol) {
  if ((scol == 1 || cols == 1) && (rows == 1 || srow >= std::max<int64_t>(cols, 1))) return true;
  if ((srow == 1 || rows == 1) && (cols == 1 || scol >= std::max<int64_t>(rows, 1))) return true;
  return false;
}

// The single stride that walks the flattened batch dims [0, nbatch) of t, if there is one.
std::optional<int64_t> batch_stride(const Tensor& t, size_t nbatch) {
  std::optional<int64_t> inner;  // stride of the innermost batch dim of size > 1
  int64_t span = 1;               // number of batch elements inside the current dim
  for (int64_t d = static_cast<int64_t>(nbatch) - 1; d >= 0; --d) {
    if (t.size(d) == 1) continue;
    if (!inner) {
      inner = t.stride(d);
    } else if (t.stride(d) != *inner * span) {
      return std::nullopt;
    }
    span *= t.size(d);
  }
  return inner.value_or(0);
}

// t [..., rows, cols] broadcast to batch + [rows, cols], as a 3-D [B, rows, cols] tensor for the kernel.
Tensor as_batched(const Tensor& t, const Shape& batch, int64_t rows, int64_t cols) {
  Shape full = batch;
  full.push_back(rows);
  full.push_back(cols);
  Tensor e = t.expand(full);
  const size_t nb = batch.size();
  std::optional<int64_t> bs = batch_stride(e, nb);
  if (!bs || !blas_ready(rows, cols, e.stride(nb), e.stride(nb + 1))) {
    e = e.clone();
    bs = rows * cols;
  }
  return Tensor(e.storage(), {shape_numel(batch), rows, cols}, {*bs, e.stride(nb), e.stride(nb + 1)}, e.offset(),
                e.dtype());
}

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  MLR_CHECK(a_in.defined() && b_in.defined(), "matmul: undefined operand");
  MLR_CHECK(a_in.device() == b_in.device(), "matmul: operands on different devices ({} and {})", a_in.device().str(),
            b_in.device().str());
  MLR_CHECK(a_in.dim() >= 1 && b_in.dim() >= 1, "matmul: 0-d operand (shapes {} and {}); use mul for scalars",
            shape_str(a_in.shape()), shape_str(b_in.shape()));
  const DType dtype = promote_types(a_in.dtype(), b_in.dtype());
  MLR_CHECK(is_floating(dtype), "matmul: dtype {} is not supported (shapes {} and {}); cast to a floating dtype",
            dtype, shape_str(a_in.shape()), shape_str(b_in.shape()));

  // numpy: a 1-D a is a row [1, k], a 1-D b a column [k, 1]; the added dimension is removed after.
  const bool a_vec = a_in.dim() == 1, b_vec = b_in.dim() == 1;
  Tensor a = a_vec ? a_in.to(dtype).unsqueeze(0) : a_in.to(dtype);
  Tensor b = b_vec ? b_in.to(dtype).unsqueeze(1) : b_in.to(dtype);
  const int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  MLR_CHECK(b.size(-2) == k, "matmul: shapes {} and {} do not match (inner dimensions {} and {})",
            shape_str(a_in.shape()), shape_str(b_in.shape()), k, b.size(-2));

  Shape batch_a(a.shape().begin(), a.shape().end() - 2), batch_b(b.shape().begin(), b.shape().end() - 2);
  const size_t nb = std::max(batch_a.size(), batch_b.size());
  Shape batch(nb);
  for (size_t i = 0; i < nb; ++i) {
    int64_t da = i + batch_a.size() < nb ? 1 : batch_a[i + batch_a.size() - nb];
    int64_t db = i + batch_b.size() < nb ? 1 : batch_b[i + batch_b.size() - nb];
    MLR_CHECK(da == db || da == 1 || db == 1,
              "matmul: batch dimensions of {} and {} cannot be broadcast (dimension {}: {} vs {})",
              shape_str(a_in.shape()), shape_str(b_in.shape()), i, da, db);
    batch[i] = da == 1 ? db : da;
  }

  Tensor a3 = as_batched(a, batch, m, k);
  Tensor b3 = as_batched(b, batch, k, n);
  Tensor out3;
  if (a3.size(0) > 1 && b3.stride(0) == 0 && a3.stride(2) == 1 && a3.stride(1) >= std::max<int64_t>(k, 1) &&
      a3.stride(0) == m * a3.stride(1)) {
    // Many row-major matrices times one shared matrix (x @ W): one tall GEMM [B*m, k] @ [k, n].
    Tensor tall(a3.storage(), {1, a3.size(0) * m, k}, {0, a3.stride(1), 1}, a3.offset(), dtype);
    out3 = empty({1, a3.size(0) * m, n}, {dtype, a.device()});
    MLR_DISPATCH(a.device(), matmul, out3, tall, b3.narrow(0, 0, 1));
  } else {
    out3 = empty({a3.size(0), m, n}, {dtype, a.device()});
    MLR_DISPATCH(a.device(), matmul, out3, a3, b3);
  }

  Shape out_shape = batch;
  if (!a_vec) out_shape.push_back(m);
  if (!b_vec) out_shape.push_back(n);
  return out3.view(out_shape);
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  MLR_CHECK(x.defined() && w.defined(), "linear: undefined input or weight");
  MLR_CHECK(w.dim() == 2, "linear: weight must be 2-d [out, in], got shape {}", shape_str(w.shape()));
  MLR_CHECK(x.dim() >= 1 && x.size(-1) == w.size(1),
            "linear: input {} does not match weight {} (input features {} vs weight in_features {})",
            shape_str(x.shape()), shape_str(w.shape()), x.dim() >= 1 ? x.size(-1) : 0, w.size(1));
  if (bias.defined()) {
    MLR_CHECK(bias.dim() == 1 && bias.size(0) == w.size(0), "linear: bias {} does not match weight {} (expected [{}])",
              shape_str(bias.shape()), shape_str(w.shape()), w.size(0));
    MLR_CHECK(bias.device() == x.device(), "linear: bias on {} but input on {}", bias.device().str(),
              x.device().str());
  }
  // w.t() is a column-major view: BLAS reads it transposed, w^T is never materialised.
  Tensor out = matmul(x, w.t());
  if (bias.defined()) add_(out, bias);
  return out;
}

}  // namespace mlr
