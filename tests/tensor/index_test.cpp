// Gather / scatter and shape assembly by hand values: embedding (and its error message),
// embedding_backward (repeats, f32 accumulation for 16-bit), index_select / index_add along any
// dim, cat with dtype promotion, stack, split / chunk views.
#include <doctest/doctest.h>

#include "tests/test_support.h"

#include <cmath>
#include <string>

#include "tensor/ops.h"

using namespace mlr;

namespace {


std::vector<double> vals(const Tensor& t) { return t.to_vector<double>(); }

// [rows, cols] with element (r, c) = 10 r + c
Tensor grid(int64_t rows, int64_t cols, DType dtype = DType::f32) {
  std::vector<double> v;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) v.push_back(10.0 * r + c);
  return from_vector(v, {rows, cols}, dtype);
}

}  // namespace

TEST_CASE("embedding gathers rows for i32 and i64 ids of any shape") {
  for (DType t : {DType::f32, DType::bf16, DType::f64}) {
    Tensor w = grid(4, 3, t);
    Tensor ids = from_vector<int64_t>({1, 3, 0, 1}, {2, 2});
    Tensor out = embedding(w, ids);
    CHECK(out.shape() == Shape({2, 2, 3}));
    CHECK(out.dtype() == t);
    CHECK(vals(out) == std::vector<double>{10, 11, 12, 30, 31, 32, 0, 1, 2, 10, 11, 12});
    CHECK(vals(embedding(w, tensor<int32_t>({2}))) == std::vector<double>{20, 21, 22});
  }
  // a transposed (strided) weight
  Tensor wt = grid(3, 4).t();  // [4, 3], row r = (r, 10 + r, 20 + r)
  CHECK(vals(embedding(wt, tensor<int64_t>({2, 0}))) == std::vector<double>{2, 12, 22, 0, 10, 20});
  CHECK(embedding(grid(4, 3), zeros({0}, DType::i64)).shape() == Shape({0, 3}));
}

TEST_CASE("embedding: an out-of-range id names the id, its position and the vocabulary size") {
  Tensor w = grid(4, 3);
  CHECK_ERROR_CONTAINS(embedding(w, from_vector<int64_t>({0, 1, 7, 2}, {2, 2})),
                       "embedding: id 7 at position 2 (index [1, 0] of shape [2, 2]) is out of range for a vocabulary of 4");
  CHECK_ERROR_CONTAINS(embedding(w, tensor<int32_t>({-1})), "id -1 at position 0");
  CHECK_ERROR_CONTAINS(embedding(w, tensor<float>({1.f})), "embedding: ids must be i32 or i64, got f32");
  CHECK_ERROR_CONTAINS(embedding(tensor<float>({1.f}), tensor<int64_t>({0})), "embedding: weight must be 2-d");
}

TEST_CASE("embedding_backward scatter-adds rows, repeats included") {
  Tensor ids = from_vector<int64_t>({2, 0, 2, 2}, {2, 2});
  Tensor g = from_vector<float>({1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2});
  Tensor dw = embedding_backward(g, ids, 4);
  CHECK(dw.shape() == Shape({4, 2}));
  CHECK(vals(dw) == std::vector<double>{3, 4, 0, 0, 1 + 5 + 7, 2 + 6 + 8, 0, 0});
  CHECK(vals(embedding_backward(g, ids.to(DType::i32), 3)) == std::vector<double>{3, 4, 0, 0, 13, 16});
  CHECK_ERROR_CONTAINS(embedding_backward(g, ids, 2), "id 2 at position 0");
  CHECK_ERROR_CONTAINS(embedding_backward(g.narrow(2, 0, 1).squeeze(2).unsqueeze(0), ids, 4), "does not match ids");
}

TEST_CASE("embedding_backward accumulates 16-bit gradients in f32 and rounds once") {
  // row 0 receives 1 and then 64 times 2^-9: a bf16 running sum stays at 1 (1 + 2^-9 rounds back
  // to 1), the f32 sum is 1 + 2^-3, exactly representable in bf16.
  const int64_t n = 65;
  std::vector<float> g(static_cast<size_t>(n), std::ldexp(1.0f, -9));
  g[0] = 1.0f;
  Tensor dw = embedding_backward(from_vector(g, {n, 1}, DType::bf16), zeros({n}, DType::i64), 1);
  CHECK(dw.dtype() == DType::bf16);
  CHECK(dw.item<double>() == 1.125);
  // Many ids, many repeats: each row is the f32 sum of its gradients in position order, rounded
  // once, exactly (so the result cannot depend on how the work is split across threads).
  const int64_t rows = 5000, dim = 16, vocab = 37;
  Generator gen(7);
  Tensor grads = rand({rows, dim}, gen, DType::bf16);
  std::vector<int64_t> id(rows);
  for (int64_t i = 0; i < rows; ++i) id[i] = (i * 7919) % vocab;
  const std::vector<float> gv = grads.to_vector<float>();
  std::vector<float> expected(static_cast<size_t>(vocab * dim), 0.0f);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < dim; ++j) expected[id[i] * dim + j] += gv[i * dim + j];
  const std::vector<float> got = embedding_backward(grads, from_vector(id, {rows}), vocab).to_vector<float>();
  int mismatches = 0;
  for (size_t i = 0; i < got.size(); ++i) mismatches += got[i] != float(bf16(expected[i]));
  CHECK(mismatches == 0);
}

TEST_CASE("index_select along any dim, strided input, i32 index") {
  Tensor a = grid(3, 4);
  CHECK(vals(index_select(a, 0, tensor<int64_t>({2, 0, 2}))) ==
        std::vector<double>{20, 21, 22, 23, 0, 1, 2, 3, 20, 21, 22, 23});
  CHECK(vals(index_select(a, 1, tensor<int32_t>({3, 1}))) == std::vector<double>{3, 1, 13, 11, 23, 21});
  CHECK(vals(index_select(a, -1, tensor<int64_t>({0}))) == std::vector<double>{0, 10, 20});
  CHECK(vals(index_select(a.t(), 0, tensor<int64_t>({1, 1}))) == std::vector<double>{1, 11, 21, 1, 11, 21});
  Tensor cube = arange(24, DType::f64).view({2, 3, 4});
  Tensor s = index_select(cube, 1, tensor<int64_t>({2, 0}));
  CHECK(s.shape() == Shape({2, 2, 4}));
  CHECK(vals(s) == std::vector<double>{8, 9, 10, 11, 0, 1, 2, 3, 20, 21, 22, 23, 12, 13, 14, 15});
  // more indices than threads x 4: the per-slice parallel path
  std::vector<int64_t> many;
  for (int64_t i = 0; i < 200; ++i) many.push_back((i * 5) % 4);
  std::vector<double> got = vals(index_select(a, 1, from_vector(many, {200})));
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t i = 0; i < 200; ++i) CHECK(got[r * 200 + i] == 10.0 * r + many[i]);
  CHECK_ERROR_CONTAINS(index_select(a, 1, tensor<int64_t>({4})),
                       "index_select: index 4 at position 0 (index [0] of shape [1]) is out of range for dimension 1 of size 4");
  CHECK_ERROR_CONTAINS(index_select(a, 2, tensor<int64_t>({0})), "index_select: dimension 2 out of range");
  CHECK_ERROR_CONTAINS(index_select(a, 0, zeros({1, 1}, DType::i64)), "index must be 0-d or 1-d");
}

TEST_CASE("index_add adds source slices at the indexed positions, repeats accumulate") {
  Tensor base = ones({2, 3});
  Tensor source = from_vector<float>({1, 2, 3, 4, 5, 6, 7, 8}, {2, 4});
  Tensor out = index_add(base, 1, tensor<int64_t>({2, 0, 2, 1}), source);
  CHECK(vals(out) == std::vector<double>{1 + 2, 1 + 4, 1 + 1 + 3, 1 + 6, 1 + 8, 1 + 5 + 7});
  CHECK(vals(base) == std::vector<double>(6, 1.0));  // the base is not modified
  Tensor rows = index_add(zeros({3, 2}, DType::f64), 0, tensor<int32_t>({1, 1}), from_vector<double>({1, 2, 3, 4}, {2, 2}));
  CHECK(vals(rows) == std::vector<double>{0, 0, 4, 6, 0, 0});
  // index_add undoes index_select's gather: the backward of index_select
  Tensor idx = tensor<int64_t>({0, 2, 2});
  Tensor g = index_select(grid(3, 2), 0, idx);
  CHECK(vals(index_add(zeros({3, 2}), 0, idx, g)) == std::vector<double>{0, 1, 0, 0, 40, 42});
  CHECK(index_add(zeros({2, 2}, DType::bf16), 0, tensor<int64_t>({0}), ones({1, 2})).dtype() == DType::bf16);
  CHECK_ERROR_CONTAINS(index_add(base, 1, tensor<int64_t>({0, 1}), source), "index_add: source [2, 4] does not match");
  CHECK_ERROR_CONTAINS(index_add(base, 1, tensor<int64_t>({0, 1, 3, 1}), source), "index 3 at position 2");
}

TEST_CASE("cat: along any dim, with dtype promotion, strided inputs; errors name the input") {
  Tensor a = grid(2, 2), b = grid(1, 2).to(DType::i32), c = grid(2, 3).t();  // c: [3, 2] strided
  Tensor r0 = cat({a, b, c}, 0);
  CHECK(r0.dtype() == DType::f32);
  CHECK(r0.shape() == Shape({6, 2}));
  CHECK(vals(r0) == std::vector<double>{0, 1, 10, 11, 0, 1, 0, 10, 1, 11, 2, 12});
  Tensor r1 = cat({a, grid(2, 1, DType::f64)}, -1);
  CHECK(r1.dtype() == DType::f64);
  CHECK(vals(r1) == std::vector<double>{0, 1, 0, 10, 11, 10});
  CHECK(cat({a.to(DType::bf16), a.to(DType::f16)}, 0).dtype() == DType::f32);
  CHECK(cat({a, zeros({0, 2})}, 0).shape() == Shape({2, 2}));
  CHECK_ERROR_CONTAINS(cat({a, a, grid(2, 3)}, 0),
                       "cat: input 2 has shape [2, 3] but input 0 has shape [2, 2] (sizes must match except in dimension 0)");
  CHECK_ERROR_CONTAINS(cat({a, tensor<float>({1.f})}, 0), "cat: input 1 has shape [1]");
  CHECK_ERROR_CONTAINS(cat({}, 0), "cat: no tensors given");
}

TEST_CASE("stack inserts a new dimension") {
  Tensor a = tensor<float>({1, 2, 3}), b = tensor<float>({4, 5, 6});
  CHECK(stack({a, b}, 0).shape() == Shape({2, 3}));
  CHECK(vals(stack({a, b}, 0)) == std::vector<double>{1, 2, 3, 4, 5, 6});
  CHECK(vals(stack({a, b}, 1)) == std::vector<double>{1, 4, 2, 5, 3, 6});
  CHECK(vals(stack({a, b}, -1)) == std::vector<double>{1, 4, 2, 5, 3, 6});
  CHECK(stack({grid(2, 3), grid(2, 3)}, 2).shape() == Shape({2, 3, 2}));
  CHECK_ERROR_CONTAINS(stack({a, b, tensor<float>({1, 2})}, 0), "stack: input 2 has shape [2] but input 0 has shape [3]");
}

TEST_CASE("split and chunk return views") {
  Tensor a = arange(7, DType::f32);
  std::vector<Tensor> parts = split(a, 3, 0);
  REQUIRE(parts.size() == 3);
  CHECK(vals(parts[0]) == std::vector<double>{0, 1, 2});
  CHECK(vals(parts[2]) == std::vector<double>{6});
  parts[1].fill_(-1.0);  // a write through a view is seen by the base
  CHECK(vals(a) == std::vector<double>{0, 1, 2, -1, -1, -1, 6});
  std::vector<Tensor> cols = split(grid(2, 5), std::vector<int64_t>{1, 0, 4}, 1);
  REQUIRE(cols.size() == 3);
  CHECK(cols[1].shape() == Shape({2, 0}));
  CHECK(vals(cols[2]) == std::vector<double>{1, 2, 3, 4, 11, 12, 13, 14});
  CHECK(cols[2].shares_storage(cols[0]));
  std::vector<Tensor> ch = chunk(arange(5, DType::f32), 3, 0);  // ceil(5/3) = 2: sizes 2, 2, 1
  REQUIRE(ch.size() == 3);
  CHECK(ch[2].numel() == 1);
  CHECK(chunk(arange(6, DType::f32), 4, 0).size() == 3);  // as torch.chunk: pieces of 2
  CHECK(chunk(grid(4, 2), 2, -2)[1].shape() == Shape({2, 2}));
  CHECK_ERROR_CONTAINS(split(a, std::vector<int64_t>{3, 3}, 0),
                       "split: sizes [3, 3] sum to 6 but dimension 0 of shape [7] has size 7");
  CHECK_ERROR_CONTAINS(split(a, 0, 0), "split: split_size must be positive");
  CHECK_ERROR_CONTAINS(chunk(a, 0, 0), "chunk: number of chunks must be positive");
}
