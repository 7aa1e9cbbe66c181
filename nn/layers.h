// The basic layers, with PyTorch's parameter names, shapes and initialisation:
//   Linear     weight [out, in] (y = x W^T + b), bias [out] only when asked for;
//              kaiming_uniform(a = sqrt 5) weight, bias ~ U(-1/sqrt(in), 1/sqrt(in))
//   Embedding  weight [num, dim] ~ N(0, 1)
//   RMSNorm    weight [dim] = 1, y = x * rsqrt(mean(x^2) + eps) * weight
// Initial values come from the Generator given (Philox), so they are reproducible from a seed but
// are not torch's numbers; checkpoints overwrite them.
#pragma once

#include <cstdint>

#include "autograd/functions.h"
#include "nn/module.h"

namespace mlr {

// Where and in what dtype a layer's parameters are created.
struct ParamOptions {
  DType dtype = DType::f32;
  Device device = Device::cpu();
  // Leave values uninitialised (a checkpoint is about to be loaded into them).
  bool skip_init = false;
  // No memory at all: each parameter holds one zero broadcast to its shape until set_data gives it
  // values (for a loader that gives memory to some parameters and keeps only a part of others).
  bool unallocated = false;
};

class Linear : public UnaryModule {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = false, Generator* gen = nullptr,
         ParamOptions options = {});
  Variable forward(const Variable& x) override;

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  const Variable& weight() const { return weight_; }
  const Variable& bias() const { return bias_; }  // undefined without bias
  bool has_bias() const { return bias_.defined(); }

 protected:
  std::string extra_repr() const override;

 private:
  int64_t in_features_, out_features_;
  Variable weight_, bias_;
};

class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim, Generator* gen = nullptr, ParamOptions options = {});
  // ids: i32 or i64, any shape -> [ids..., dim]
  Variable forward(const Tensor& ids);
  int64_t num_embeddings() const { return num_embeddings_; }
  int64_t embedding_dim() const { return embedding_dim_; }
  const Variable& weight() const { return weight_; }

 protected:
  std::string extra_repr() const override;

 private:
  int64_t num_embeddings_, embedding_dim_;
  Variable weight_;
};

class RMSNorm : public UnaryModule {
 public:
  explicit RMSNorm(int64_t dim, double eps = 1e-6, ParamOptions options = {});
  Variable forward(const Variable& x) override;
  double eps() const { return eps_; }
  const Variable& weight() const { return weight_; }

 protected:
  std::string extra_repr() const override;

 private:
  int64_t dim_;
  double eps_;
  Variable weight_;
};

}  // namespace mlr
