// Values that index memory on the device (tensor/nn_ops.h): the ops trust them unless debug checks
// are on, and then reject bad ones with the CPU's messages, naming the value at fault. The
// device-side scatter-add behind the embedding backward sums in position order, bit for bit as
// the CPU reference, and twice the same.
#include <doctest/doctest.h>

#include <vector>

#include "tensor/nn_ops.h"
#include "tensor/ops.h"
#include "tests/test_support.h"

using namespace mlr;

namespace {

struct DebugChecks {
  explicit DebugChecks(bool on) : was(debug_checks()) { set_debug_checks(on); }
  ~DebugChecks() { set_debug_checks(was); }
  bool was;
};

}  // namespace

TEST_CASE("with debug checks, device ops reject bad ids, targets and cu_seqlens naming the value") {
  DebugChecks on(true);
  Generator g(4);
  const Tensor w = randn({4, 3}, g, DType::f32).cuda();
  CHECK_ERROR_CONTAINS(embedding(w, from_vector<int64_t>({0, 1, 7, 2}, {2, 2}).cuda()),
                       "embedding: id 7 at position 2 (index [1, 0] of shape [2, 2]) is out of range for a vocabulary of 4");
  CHECK_ERROR_CONTAINS(embedding_backward(randn({2, 3}, g, DType::f32).cuda(), tensor<int64_t>({1, 9}).cuda(), 4),
                       "embedding_backward: id 9 at position 1");
  CHECK_ERROR_CONTAINS(index_select(w, 0, tensor<int32_t>({5}).cuda()), "index_select: index 5 at position 0");
  const Tensor logits = randn({3, 5}, g, DType::f32).cuda();
  CHECK_ERROR_CONTAINS(cross_entropy_forward(logits, tensor<int64_t>({0, 5, -100}).cuda()),
                       "cross_entropy_forward: target 5 at row 1 is out of range for 5 classes (ignore_index -100)");
  const Tensor q = randn({1, 6, 2, 4}, g, DType::f32).cuda();
  CHECK_ERROR_CONTAINS(attention_forward(q, q, q, 0.5, tensor<int32_t>({0, 4, 2, 6}).cuda()),
                       "cu_seqlens [0, 4, 2, 6] decreases at entry 2");
}

TEST_CASE("without debug checks, device ops trust their index values; good values give the CPU's results") {
  DebugChecks off(false);
  CHECK_FALSE(check_values_of(tensor<int64_t>({1}).cuda()));
  CHECK(check_values_of(tensor<int64_t>({1})));  // the CPU checks whatever the switch
  CHECK_ERROR_CONTAINS(embedding(zeros({4, 3}), tensor<int64_t>({4})), "id 4 at position 0");
  Generator g(5);
  const Tensor logits = randn({3, 5}, g, DType::f32);
  const Tensor targets = tensor<int64_t>({0, 4, -100});
  const CrossEntropyOutput want = cross_entropy_forward(logits, targets);
  const CrossEntropyOutput got = cross_entropy_forward(logits.cuda(), targets.cuda());
  CHECK(max_abs_diff(got.losses.cpu(), want.losses) < 1e-6);
}

TEST_CASE("embedding backward on the device: position-ordered sums, bit for bit the CPU's, deterministic") {
  // 300 positions onto 7 rows (long runs of one id) and a table row nobody reads.
  std::vector<int64_t> ids(300);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * i + 3 * i) % 7);
  Generator g(6);
  for (DType dtype : {DType::f32, DType::bf16}) {
    CAPTURE(dtype_name(dtype));
    const Tensor grad = randn({300, 5}, g, DType::f32).to(dtype);
    const Tensor idx = from_vector(ids, {300});
    const Tensor want = embedding_backward(grad, idx, 8);
    const Tensor got1 = embedding_backward(grad.cuda(), idx.cuda(), 8).cpu();
    const Tensor got2 = embedding_backward(grad.cuda(), idx.to(DType::i32).cuda(), 8).cpu();
    const std::vector<double> a = want.to_vector<double>(), b = got1.to_vector<double>(), c = got2.to_vector<double>();
    CHECK(a == b);
    CHECK(b == c);
    // index_add along a middle dimension onto a non-zero base.
    const Tensor base = randn({2, 8, 3}, g, DType::f32).to(dtype), src = randn({2, 300, 3}, g, DType::f32).to(dtype);
    const std::vector<double> d = index_add(base, 1, idx, src).to_vector<double>();
    const std::vector<double> e = index_add(base.cuda(), 1, idx.cuda(), src.cuda()).cpu().to_vector<double>();
    CHECK(d == e);
  }
}
