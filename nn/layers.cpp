#include "nn/layers.h"

#include <cmath>

#include <fmt/format.h>

namespace mlr {

namespace {

// Initialised in f32 on the CPU (where the Philox kernels are the reference), then placed.
Tensor make_param(const Shape& shape, const ParamOptions& o, const std::function<void(Tensor&)>& init) {
  if (o.unallocated) return zeros(Shape(shape.size(), 1), {o.dtype, o.device}).expand(shape);
  if (o.skip_init) return empty(shape, {o.dtype, o.device});
  Tensor t = empty(shape, DType::f32);
  init(t);
  return t.to(o.device, o.dtype);
}

Generator& pick(Generator* gen) { return gen ? *gen : default_generator(); }

}  // namespace

Linear::Linear(int64_t in_features, int64_t out_features, bool bias, Generator* gen, ParamOptions options)
    : UnaryModule("Linear"), in_features_(in_features), out_features_(out_features) {
  MLR_CHECK(in_features > 0 && out_features > 0, "Linear: sizes must be positive, got in {} out {}", in_features,
            out_features);
  Generator& g = pick(gen);
  weight_ = register_parameter("weight", make_param({out_features, in_features}, options, [&](Tensor& t) {
                                 kaiming_uniform_(t, std::sqrt(5.0), g);
                               }));
  if (bias) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
    bias_ = register_parameter("bias", make_param({out_features}, options, [&](Tensor& t) {
                                 uniform_(t, -bound, bound, g);
                               }));
  }
}

Variable Linear::forward(const Variable& x) {
  MLR_CHECK(x.dim() >= 1 && x.size(-1) == in_features_, "Linear(in={}, out={}): input of shape {} does not end in {}",
            in_features_, out_features_, shape_str(x.shape()), in_features_);
  return linear(x, weight_, bias_);
}

std::string Linear::extra_repr() const {
  return fmt::format("in={}, out={}, bias={}", in_features_, out_features_, has_bias());
}

Embedding::Embedding(int64_t num_embeddings, int64_t embedding_dim, Generator* gen, ParamOptions options)
    : Module("Embedding"), num_embeddings_(num_embeddings), embedding_dim_(embedding_dim) {
  MLR_CHECK(num_embeddings > 0 && embedding_dim > 0, "Embedding: sizes must be positive, got {} x {}",
            num_embeddings, embedding_dim);
  Generator& g = pick(gen);
  weight_ = register_parameter("weight", make_param({num_embeddings, embedding_dim}, options, [&](Tensor& t) {
                                 normal_(t, 0.0, 1.0, g);
                               }));
}

Variable Embedding::forward(const Tensor& ids) { return embedding(weight_, ids); }

std::string Embedding::extra_repr() const { return fmt::format("{}, {}", num_embeddings_, embedding_dim_); }

RMSNorm::RMSNorm(int64_t dim, double eps, ParamOptions options) : UnaryModule("RMSNorm"), dim_(dim), eps_(eps) {
  MLR_CHECK(dim > 0 && eps >= 0, "RMSNorm: needs dim > 0 and eps >= 0, got {} and {}", dim, eps);
  weight_ = register_parameter("weight", make_param({dim}, options, [](Tensor& t) { t.fill_(1.0); }));
}

Variable RMSNorm::forward(const Variable& x) {
  MLR_CHECK(x.dim() >= 1 && x.size(-1) == dim_, "RMSNorm({}): input of shape {} does not end in {}", dim_,
            shape_str(x.shape()), dim_);
  return rmsnorm(x, weight_, eps_);
}

std::string RMSNorm::extra_repr() const { return fmt::format("{}, eps={}", dim_, eps_); }

}  // namespace mlr
