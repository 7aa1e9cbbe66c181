// Gather / scatter and shape assembly: embedding and its backward, index_select, index_add, cat,
// stack, split, chunk. Index values of CPU tensors are checked here, so that an out-of-range id is
// an error naming the id, where it sits and the valid range, never an out-of-bounds read. Device
// indices are checked only with debug checks on (tensor/nn_ops.h): reading them would cost a host
// round trip per op, so callers validate their ids once where they come from the host (the
// trainer checks each batch against the model's vocabulary).
#include "tensor/dispatch.h"
#include "tensor/nn_ops.h"
#include "tensor/ops.h"

namespace mlr {

namespace {

void check_index_tensor(const Tensor& index, const char* op, const char* what) {
  MLR_CHECK(index.defined(), "{}: {} is undefined", op, what);
  MLR_CHECK(index.dtype() == DType::i32 || index.dtype() == DType::i64, "{}: {} must be i32 or i64, got {} (shape {})",
            op, what, index.dtype(), shape_str(index.shape()));
}

// Multi-dimensional position of flat (row-major) element p of a tensor of `shape`, e.g. "[1, 4]".
std::string position_str(int64_t p, const Shape& shape) {
  Shape pos(shape.size());
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    pos[d] = shape[d] == 0 ? 0 : p % shape[d];
    p = shape[d] == 0 ? 0 : p / shape[d];
  }
  return shape_str(pos);
}

// Throws unless every value of index lies in [0, limit); `what` is e.g. "id" and `range` says what
// the limit is, e.g. "a vocabulary of 32000".
void check_index_range(const Tensor& index, int64_t limit, const char* op, const char* what,
                       const std::string& range) {
  if (!check_values_of(index)) return;
  const std::vector<int64_t> v = index.to_vector<int64_t>();
  for (size_t p = 0; p < v.size(); ++p) {
    MLR_CHECK(v[p] >= 0 && v[p] < limit, "{}: {} {} at position {} (index {} of shape {}) is out of range for {}", op,
              what, v[p], p, position_str(static_cast<int64_t>(p), index.shape()), shape_str(index.shape()), range);
  }
}

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  MLR_CHECK(weight.defined() && weight.dim() == 2, "embedding: weight must be 2-d [num_embeddings, dim], got {}",
            weight.defined() ? shape_str(weight.shape()) : "undefined");
  check_index_tensor(ids, "embedding", "ids");
  MLR_CHECK(ids.device() == weight.device(), "embedding: ids on {} but weight on {}", ids.device().str(),
            weight.device().str());
  const int64_t vocab = weight.size(0);
  check_index_range(ids, vocab, "embedding", "id",
                    fmt::format("a vocabulary of {} (weight {})", vocab, shape_str(weight.shape())));
  Shape shape = ids.shape();
  shape.push_back(weight.size(1));
  Tensor out = empty(shape, weight.options());
  if (out.numel() > 0) MLR_DISPATCH(weight.device(), embedding, out, weight, ids);
  return out;
}

Tensor embedding_backward(const Tensor& g, const Tensor& ids, int64_t num_embeddings) {
  check_index_tensor(ids, "embedding_backward", "ids");
  MLR_CHECK(g.defined() && g.is_floating_point(), "embedding_backward: gradient must be a floating tensor");
  MLR_CHECK(g.device() == ids.device(), "embedding_backward: gradient on {} but ids on {}", g.device().str(),
            ids.device().str());
  MLR_CHECK(g.dim() == ids.dim() + 1 && Shape(g.shape().begin(), g.shape().end() - 1) == ids.shape(),
            "embedding_backward: gradient {} does not match ids {} (expected ids.shape + [dim])", shape_str(g.shape()),
            shape_str(ids.shape()));
  MLR_CHECK(num_embeddings >= 0, "embedding_backward: num_embeddings {} is negative", num_embeddings);
  check_index_range(ids, num_embeddings, "embedding_backward", "id", fmt::format("a vocabulary of {}", num_embeddings));
  Tensor dweight = zeros({num_embeddings, g.size(-1)}, g.options());
  if (g.numel() > 0) MLR_DISPATCH(g.device(), embedding_backward, dweight, g, ids);
  return dweight;
}

Tensor index_select(const Tensor& a, int64_t dim, const Tensor& index) {
  MLR_CHECK(a.defined() && a.dim() >= 1, "index_select: input must have at least one dimension");
  check_index_tensor(index, "index_select", "index");
  MLR_CHECK(index.dim() <= 1, "index_select: index must be 0-d or 1-d, got shape {}", shape_str(index.shape()));
  MLR_CHECK(index.device() == a.device(), "index_select: index on {} but input on {}", index.device().str(),
            a.device().str());
  dim = wrap_dim(dim, a.dim(), "index_select");
  check_index_range(index, a.size(dim), "index_select", "index",
                    fmt::format("dimension {} of size {} (input {})", dim, a.size(dim), shape_str(a.shape())));
  Shape shape = a.shape();
  shape[dim] = index.numel();
  Tensor out = empty(shape, a.options());
  if (out.numel() > 0) MLR_DISPATCH(a.device(), index_select, out, a, dim, index.reshape({-1}));
  return out;
}

Tensor index_add(const Tensor& base, int64_t dim, const Tensor& index, const Tensor& source) {
  MLR_CHECK(base.defined() && source.defined() && base.dim() >= 1, "index_add: base and source must be defined, >= 1-d");
  check_index_tensor(index, "index_add", "index");
  MLR_CHECK(index.dim() <= 1, "index_add: index must be 0-d or 1-d, got shape {}", shape_str(index.shape()));
  MLR_CHECK(base.device() == source.device() && base.device() == index.device(),
            "index_add: base, index and source on different devices ({}, {}, {})", base.device().str(),
            index.device().str(), source.device().str());
  dim = wrap_dim(dim, base.dim(), "index_add");
  Shape expected = base.shape();
  expected[dim] = index.numel();
  MLR_CHECK(source.shape() == expected,
            "index_add: source {} does not match base {} with {} indices along dimension {} (expected {})",
            shape_str(source.shape()), shape_str(base.shape()), index.numel(), dim, shape_str(expected));
  check_index_range(index, base.size(dim), "index_add", "index",
                    fmt::format("dimension {} of size {} (base {})", dim, base.size(dim), shape_str(base.shape())));
  Tensor out = base.clone();
  if (source.numel() > 0)
    MLR_DISPATCH(base.device(), index_add, out, dim, index.reshape({-1}), source.to(base.dtype()));
  return out;
}

Tensor cat(const std::vector<Tensor>& tensors, int64_t dim) {
  MLR_CHECK(!tensors.empty(), "cat: no tensors given");
  const Tensor& first = tensors[0];
  for (size_t i = 0; i < tensors.size(); ++i) {
    MLR_CHECK(tensors[i].defined(), "cat: input {} is undefined", i);
    MLR_CHECK(tensors[i].dim() >= 1, "cat: input {} is 0-d; cat needs at least one dimension (use stack)", i);
  }
  dim = wrap_dim(dim, first.dim(), "cat");
  DType dtype = first.dtype();
  int64_t total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    MLR_CHECK(t.device() == first.device(), "cat: input {} is on {} but input 0 is on {}", i, t.device().str(),
              first.device().str());
    bool match = t.dim() == first.dim();
    for (int64_t d = 0; match && d < t.dim(); ++d) match = d == dim || t.size(d) == first.size(d);
    MLR_CHECK(match, "cat: input {} has shape {} but input 0 has shape {} (sizes must match except in dimension {})",
              i, shape_str(t.shape()), shape_str(first.shape()), dim);
    dtype = promote_types(dtype, t.dtype());
    total += t.size(dim);
  }
  Shape shape = first.shape();
  shape[dim] = total;
  Tensor out = empty(shape, {dtype, first.device()});
  int64_t offset = 0;
  for (const Tensor& t : tensors) {
    out.narrow(dim, offset, t.size(dim)).copy_(t);  // copy_ converts to the promoted dtype
    offset += t.size(dim);
  }
  return out;
}

Tensor stack(const std::vector<Tensor>& tensors, int64_t dim) {
  MLR_CHECK(!tensors.empty(), "stack: no tensors given");
  std::vector<Tensor> parts;
  for (size_t i = 0; i < tensors.size(); ++i) {
    MLR_CHECK(tensors[i].defined(), "stack: input {} is undefined", i);
    MLR_CHECK(tensors[i].shape() == tensors[0].shape(), "stack: input {} has shape {} but input 0 has shape {}", i,
              shape_str(tensors[i].shape()), shape_str(tensors[0].shape()));
  }
  dim = wrap_dim(dim, tensors[0].dim() + 1, "stack");
  for (const Tensor& t : tensors) parts.push_back(t.unsqueeze(dim));
  return cat(parts, dim);
}

std::vector<Tensor> split(const Tensor& a, int64_t split_size, int64_t dim) {
  MLR_CHECK(a.defined() && a.dim() >= 1, "split: input must have at least one dimension");
  dim = wrap_dim(dim, a.dim(), "split");
  const int64_t n = a.size(dim);
  MLR_CHECK(split_size > 0 || (split_size == 0 && n == 0),
            "split: split_size must be positive, got {} (dimension {} of shape {})", split_size, dim,
            shape_str(a.shape()));
  if (n == 0) return {a};
  std::vector<Tensor> parts;
  for (int64_t start = 0; start < n; start += split_size) parts.push_back(a.narrow(dim, start, std::min(split_size, n - start)));
  return parts;
}

std::vector<Tensor> split(const Tensor& a, const std::vector<int64_t>& sizes, int64_t dim) {
  MLR_CHECK(a.defined() && a.dim() >= 1, "split: input must have at least one dimension");
  dim = wrap_dim(dim, a.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    MLR_CHECK(s >= 0, "split: negative size {} in [{}]", s, fmt::join(sizes, ", "));
    total += s;
  }
  MLR_CHECK(total == a.size(dim), "split: sizes [{}] sum to {} but dimension {} of shape {} has size {}",
            fmt::join(sizes, ", "), total, dim, shape_str(a.shape()), a.size(dim));
  std::vector<Tensor> parts;
  int64_t start = 0;
  for (int64_t s : sizes) {
    parts.push_back(a.narrow(dim, start, s));
    start += s;
  }
  return parts;
}

std::vector<Tensor> chunk(const Tensor& a, int64_t chunks, int64_t dim) {
  MLR_CHECK(chunks > 0, "chunk: number of chunks must be positive, got {}", chunks);
  MLR_CHECK(a.defined() && a.dim() >= 1, "chunk: input must have at least one dimension");
  dim = wrap_dim(dim, a.dim(), "chunk");
  // As torch.chunk: pieces of ceil(n / chunks), so fewer than `chunks` pieces may come back.
  const int64_t n = a.size(dim);
  return split(a, n == 0 ? 0 : (n + chunks - 1) / chunks, dim);
}

}  // namespace mlr
