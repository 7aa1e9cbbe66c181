// Causal attention with grouped-query heads, the readable reference for the flash kernels.
// q [batch, seq, heads, d]; k, v [batch, seq, kv_heads, d]; query head h reads kv head
// h / (heads / kv_heads). Query i sees key j when j <= i and, with cu_seqlens (packed documents,
// batch 1), j lies in i's document.
//   S_ij = scale * q_i . k_j,  P = softmax_j(S),  O_i = sum_j P_ij v_j,  lse_i = logsumexp_j(S_ij)
// Backward from the saved lse (P is recomputed, never stored):
//   P_ij = exp(S_ij - lse_i),  delta_i = dO_i . O_i
//   dV_j = sum_i P_ij dO_i,  dP_ij = dO_i . v_j,  dS_ij = P_ij (dP_ij - delta_i)
//   dQ_i = scale * sum_j dS_ij k_j,  dK_j = scale * sum_i dS_ij q_i
// dQ is parallel over query rows; dK and dV are parallel over key rows, each summing over the
// query heads of its group and the queries that see it, in a fixed order (deterministic).
// All tensors contiguous; math in f32 (f64 for f64), so lse is f32 (f64 for f64 inputs).
#include <cmath>
#include <initializer_list>
#include <limits>
#include <vector>

#include "tensor/kernels/cpu/kernels.h"
#include "tensor/kernels/kernel_checks.h"

namespace mlr::cpu {

namespace {
// First position of the document that holds each position, and one past its last position.
struct Documents {
  std::vector<int64_t> start, end;
};

Documents documents(const Tensor& cu_seqlens, int64_t seq) {
  Documents docs{std::vector<int64_t>(seq, 0), std::vector<int64_t>(seq, seq)};
  if (!cu_seqlens.defined()) return docs;
  const std::vector<int64_t> cu = cu_seqlens.to_vector<int64_t>();
  for (size_t doc = 0; doc + 1 < cu.size(); ++doc)
    for (int64_t i = cu[doc]; i < cu[doc + 1]; ++i) {
      docs.start[i] = cu[doc];
      docs.end[i] = cu[doc + 1];
    }
  return docs;
}

// Element offsets of row (b, position, head) in [batch, seq, heads, d] layout.
struct Layout {
  int64_t seq, heads, d;
  int64_t at(int64_t b, int64_t pos, int64_t h) const { return ((b * seq + pos) * heads + h) * d; }
};

template <typename T, typename Acc>
Acc dot(const T* a, const T* b, int64_t d) {
  Acc s = 0;
  for (int64_t c = 0; c < d; ++c) s += static_cast<Acc>(a[c]) * static_cast<Acc>(b[c]);
  return s;
}

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, const Tensor& cu_seqlens,
                       const Tensor& out, const Tensor& lse) {
  check_kernel_contiguous("attention_forward", "cpu", {&q, &k, &v, &out, &lse});
  const int64_t batch = q.size(0), seq = q.size(1), heads = q.size(2), d = q.size(3), kv_heads = k.size(2);
  const int64_t group = heads / kv_heads;
  const Documents docs = documents(cu_seqlens, seq);
  const Layout lq{seq, heads, d}, lk{seq, kv_heads, d};
  visit_floating(q.dtype(), "attention_forward", [&](auto tag) {
    using T = decltype(tag);
    using Acc = compute_t<T>;
    const T* pq = q.data<T>();
    const T* pk = k.data<T>();
    const T* pv = v.data<T>();
    T* po = out.data<T>();
    Acc* plse = lse.data<Acc>();
#pragma omp parallel
    {
      std::vector<Acc> p(static_cast<size_t>(seq)), o(static_cast<size_t>(d));
#pragma omp for collapse(3) schedule(dynamic, 16)
      for (int64_t b = 0; b < batch; ++b) {
        for (int64_t h = 0; h < heads; ++h) {
          for (int64_t i = 0; i < seq; ++i) {
            const int64_t kh = h / group, j0 = docs.start[i];
            const T* qi = pq + lq.at(b, i, h);
            Acc m = -std::numeric_limits<Acc>::infinity();
            for (int64_t j = j0; j <= i; ++j) {
              p[j] = static_cast<Acc>(scale) * dot<T, Acc>(qi, pk + lk.at(b, j, kh), d);
              m = std::max(m, p[j]);
            }
            Acc l = 0;
            for (int64_t j = j0; j <= i; ++j) {
              p[j] = std::exp(p[j] - m);
              l += p[j];
            }
            std::fill(o.begin(), o.end(), Acc(0));
            for (int64_t j = j0; j <= i; ++j) {
              const T* vj = pv + lk.at(b, j, kh);
              for (int64_t c = 0; c < d; ++c) o[c] += p[j] * static_cast<Acc>(vj[c]);
            }
            T* oi = po + lq.at(b, i, h);
            for (int64_t c = 0; c < d; ++c) oi[c] = static_cast<T>(o[c] / l);
            plse[(b * heads + h) * seq + i] = m + std::log(l);
          }
        }
      }
    }
  });
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, double scale, const Tensor& cu_seqlens, const Tensor& dq, const Tensor& dk,
                        const Tensor& dv) {
  check_kernel_contiguous("attention_backward", "cpu", {&dout, &q, &k, &v, &out, &lse, &dq, &dk, &dv});
  const int64_t batch = q.size(0), seq = q.size(1), heads = q.size(2), d = q.size(3), kv_heads = k.size(2);
  const int64_t group = heads / kv_heads;
  const Documents docs = documents(cu_seqlens, seq);
  const Layout lq{seq, heads, d}, lk{seq, kv_heads, d};
  visit_floating(q.dtype(), "attention_backward", [&](auto tag) {
    using T = decltype(tag);
    using Acc = compute_t<T>;
    const T* pdo = dout.data<T>();
    const T* pq = q.data<T>();
    const T* pk = k.data<T>();
    const T* pv = v.data<T>();
    const T* po = out.data<T>();
    const Acc* plse = lse.data<Acc>();
    T* pdq = dq.data<T>();
    T* pdk = dk.data<T>();
    T* pdv = dv.data<T>();
    const Acc sc = static_cast<Acc>(scale);
    auto row = [&](int64_t b, int64_t h, int64_t i) { return (b * heads + h) * seq + i; };

    // delta_i = dO_i . O_i, one per query row
    std::vector<Acc> delta(static_cast<size_t>(batch * heads * seq));
#pragma omp parallel for collapse(3) schedule(static)
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < seq; ++i)
          delta[row(b, h, i)] = dot<T, Acc>(pdo + lq.at(b, i, h), po + lq.at(b, i, h), d);

    // dQ_i = scale * sum_j dS_ij k_j
#pragma omp parallel
    {
      std::vector<Acc> acc(static_cast<size_t>(d));
#pragma omp for collapse(3) schedule(dynamic, 16)
      for (int64_t b = 0; b < batch; ++b) {
        for (int64_t h = 0; h < heads; ++h) {
          for (int64_t i = 0; i < seq; ++i) {
            const int64_t kh = h / group, r = row(b, h, i);
            const T* qi = pq + lq.at(b, i, h);
            const T* doi = pdo + lq.at(b, i, h);
            std::fill(acc.begin(), acc.end(), Acc(0));
            for (int64_t j = docs.start[i]; j <= i; ++j) {
              const T* kj = pk + lk.at(b, j, kh);
              const Acc p = std::exp(sc * dot<T, Acc>(qi, kj, d) - plse[r]);
              const Acc ds = p * (dot<T, Acc>(doi, pv + lk.at(b, j, kh), d) - delta[r]);
              for (int64_t c = 0; c < d; ++c) acc[c] += ds * static_cast<Acc>(kj[c]);
            }
            T* dqi = pdq + lq.at(b, i, h);
            for (int64_t c = 0; c < d; ++c) dqi[c] = static_cast<T>(sc * acc[c]);
          }
        }
      }
    }

    // dV_j = sum_i P_ij dO_i,  dK_j = scale * sum_i dS_ij q_i, over the group's query heads and the
    // queries i >= j of j's document
#pragma omp parallel
    {
      std::vector<Acc> acc_k(static_cast<size_t>(d)), acc_v(static_cast<size_t>(d));
#pragma omp for collapse(3) schedule(dynamic, 16)
      for (int64_t b = 0; b < batch; ++b) {
        for (int64_t kh = 0; kh < kv_heads; ++kh) {
          for (int64_t j = 0; j < seq; ++j) {
            const T* kj = pk + lk.at(b, j, kh);
            const T* vj = pv + lk.at(b, j, kh);
            std::fill(acc_k.begin(), acc_k.end(), Acc(0));
            std::fill(acc_v.begin(), acc_v.end(), Acc(0));
            for (int64_t h = kh * group; h < (kh + 1) * group; ++h) {
              for (int64_t i = j; i < docs.end[j]; ++i) {
                const int64_t r = row(b, h, i);
                const T* qi = pq + lq.at(b, i, h);
                const T* doi = pdo + lq.at(b, i, h);
                const Acc p = std::exp(sc * dot<T, Acc>(qi, kj, d) - plse[r]);
                const Acc ds = p * (dot<T, Acc>(doi, vj, d) - delta[r]);
                for (int64_t c = 0; c < d; ++c) {
                  acc_v[c] += p * static_cast<Acc>(doi[c]);
                  acc_k[c] += ds * static_cast<Acc>(qi[c]);
                }
              }
            }
            T* dkj = pdk + lk.at(b, j, kh);
            T* dvj = pdv + lk.at(b, j, kh);
            for (int64_t c = 0; c < d; ++c) {
              dkj[c] = static_cast<T>(sc * acc_k[c]);
              dvj[c] = static_cast<T>(acc_v[c]);
            }
          }
        }
      }
    }
  });
}

}  // namespace mlr::cpu
