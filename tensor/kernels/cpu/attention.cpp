// Causal attention with grouped-query heads on the CPU.
// q [batch, seq, heads, d]; k, v [batch, seq, kv_heads, d]; query head h reads kv head
// h / (heads / kv_heads). Query i sees key j when j <= i and, with cu_seqlens (packed documents,
// batch 1), j lies in i's document.
//   S_ij = scale * q_i . k_j,  P = softmax_j(S),  O_i = sum_j P_ij v_j,  lse_i = logsumexp_j(S_ij)
// Backward from the saved lse (P is recomputed, never stored):
//   P_ij = exp(S_ij - lse_i),  delta_i = dO_i . O_i
//   dV_j = sum_i P_ij dO_i,  dP_ij = dO_i . v_j,  dS_ij = P_ij (dP_ij - delta_i)
//   dQ_i = scale * sum_j dS_ij k_j,  dK_j = scale * sum_i dS_ij q_i
// Two implementations of these formulas:
//   - f64 (the finite-difference reference): one query row at a time, exactly as written. dQ is
//     parallel over query rows; dK and dV over key rows, each summing over the query heads of its
//     group and the queries that see it, in a fixed order.
//   - f32, bf16, f16: blocked, flash-style, in f32 (below, before the entry points).
// Both deterministic (no result depends on the thread count). All tensors contiguous; lse is f32
// (f64 for f64 inputs).
#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <type_traits>
#include <vector>

#include "tensor/kernels/cpu/kernels.h"
#include "tensor/kernels/cpu/simd.h"
#include "tensor/kernels/cpu/tile_gemm.h"
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

// The f64 reference: one query row at a time, exactly the formulas above.
void reference_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, const Tensor& cu_seqlens,
                       const Tensor& out, const Tensor& lse) {
  const int64_t batch = q.size(0), seq = q.size(1), heads = q.size(2), d = q.size(3), kv_heads = k.size(2);
  const int64_t group = heads / kv_heads;
  const Documents docs = documents(cu_seqlens, seq);
  const Layout lq{seq, heads, d}, lk{seq, kv_heads, d};
  {
    using T = double;
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
  }
}

void reference_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, double scale, const Tensor& cu_seqlens, const Tensor& dq, const Tensor& dk,
                        const Tensor& dv) {
  const int64_t batch = q.size(0), seq = q.size(1), heads = q.size(2), d = q.size(3), kv_heads = k.size(2);
  const int64_t group = heads / kv_heads;
  const Documents docs = documents(cu_seqlens, seq);
  const Layout lq{seq, heads, d}, lk{seq, kv_heads, d};
  {
    using T = double;
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
  }
}

// ---------------------------------------------------------------- blocked f32 / bf16 / f16 path
// Flash-style: a query block of kBlockQ rows meets key blocks of kBlockK rows; S = (scale q) k^T
// and O += P v are tile products (tile_gemm.h) in f32. The forward keeps a running maximum m and
// sum l per row (online softmax): on a new block with maximum m' > m the old sum and output are
// scaled by exp(m - m'). Key blocks that no row of the query block can see (causal, documents)
// are skipped. The backward recomputes P = exp(S - lse) per block pair; one task owns one
// (batch, kv head): its key blocks' dK and dV and its query heads' dQ accumulate in f32 in one
// fixed order, so the result does not depend on the thread count.

constexpr int64_t kBlockQ = 64, kBlockK = 64;

template <typename T>
MLR_ALWAYS_INLINE void to_f32_rows(float* dst, const T* src, int64_t rows, int64_t src_stride, int64_t d,
                                   float scale) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* s = src + r * src_stride;
    float* o = dst + r * d;
    for (int64_t c = 0; c < d; ++c) o[c] = scale * static_cast<float>(s[c]);
  }
}

struct AttentionShape {
  int64_t batch, seq, heads, kv_heads, d, group;
  float scale;
  const Documents* docs;
  // Keys [lo, hi) that query i sees.
  int64_t first_key(int64_t i) const { return docs->start[i]; }
};

template <typename T>
struct ForwardBlock {
  const AttentionShape& sh;
  const T *q, *k, *v;
  T* out;
  float* lse;
  int64_t task;

  template <SimdLevel L>
  MLR_ALWAYS_INLINE void operator()() {
    const int64_t d = sh.d, nqb = (sh.seq + kBlockQ - 1) / kBlockQ;
    const int64_t qb = task % nqb, h = (task / nqb) % sh.heads, b = task / (nqb * sh.heads);
    const int64_t kh = h / sh.group, i0 = qb * kBlockQ, i1 = std::min(sh.seq, i0 + kBlockQ), nq = i1 - i0;
    const int64_t q_stride = sh.heads * d, kv_stride = sh.kv_heads * d;
    thread_local TileScratch scratch;
    thread_local std::vector<float> buf;
    buf.resize(static_cast<size_t>(kBlockQ * d * 2 + kBlockK * d * 2 + kBlockQ * kBlockK + 2 * kBlockQ));
    float* qs = buf.data();
    float* o = qs + kBlockQ * d;
    float* kf = o + kBlockQ * d;
    float* vf = kf + kBlockK * d;
    float* p = vf + kBlockK * d;
    float* m = p + kBlockQ * kBlockK;
    float* l = m + kBlockQ;
    to_f32_rows(qs, q + ((b * sh.seq + i0) * sh.heads + h) * d, nq, q_stride, d, sh.scale);
    std::fill(o, o + nq * d, 0.0f);
    for (int64_t r = 0; r < nq; ++r) {
      m[r] = -std::numeric_limits<float>::infinity();
      l[r] = 0.0f;
    }
    for (int64_t j0 = sh.first_key(i0); j0 < i1; j0 += kBlockK) {
      const int64_t nk = std::min(kBlockK, i1 - j0);
      const int64_t kv_at = ((b * sh.seq + j0) * sh.kv_heads + kh) * d;
      to_f32_rows(kf, k + kv_at, nk, kv_stride, d, 1.0f);
      to_f32_rows(vf, v + kv_at, nk, kv_stride, d, 1.0f);
      tile_gemm<L>(nq, nk, d, qs, d, 1, kf, 1, d, p, kBlockK, false, scratch);
      for (int64_t r = 0; r < nq; ++r) {
        const int64_t i = i0 + r;
        const int64_t lo = std::max(sh.first_key(i), j0) - j0, hi = std::min(i + 1, j0 + nk) - j0;
        float* pr = p + r * kBlockK;
        if (hi <= lo) {  // this row sees none of the block's keys
          std::fill(pr, pr + nk, 0.0f);
          continue;
        }
        float mx = m[r];
        for (int64_t j = lo; j < hi; ++j) mx = std::max(mx, pr[j]);
        const float alpha = fast_exp(m[r] - mx);
        float sum = 0.0f;
        for (int64_t j = 0; j < lo; ++j) pr[j] = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = lo; j < hi; ++j) {
          const float e = fast_exp(pr[j] - mx);
          pr[j] = e;
          sum += e;
        }
        for (int64_t j = hi; j < nk; ++j) pr[j] = 0.0f;
        l[r] = l[r] * alpha + sum;
        m[r] = mx;
        if (alpha != 1.0f) {
          float* orow = o + r * d;
          for (int64_t c = 0; c < d; ++c) orow[c] *= alpha;
        }
      }
      tile_gemm<L>(nq, d, nk, p, kBlockK, 1, vf, d, 1, o, d, true, scratch);
    }
    for (int64_t r = 0; r < nq; ++r) {
      const float inv = 1.0f / l[r];
      T* orow = out + ((b * sh.seq + i0 + r) * sh.heads + h) * d;
      for (int64_t c = 0; c < d; ++c) orow[c] = static_cast<T>(o[r * d + c] * inv);
      lse[(b * sh.heads + h) * sh.seq + i0 + r] = m[r] + std::log(l[r]);
    }
  }
};

template <typename T>
struct BackwardGroup {
  const AttentionShape& sh;
  const T *dout, *q, *k, *v, *out;
  const float* lse;
  T *dq, *dk, *dv;
  int64_t task;

  template <SimdLevel L>
  MLR_ALWAYS_INLINE void operator()() {
    const int64_t d = sh.d, seq = sh.seq, g = sh.group;
    const int64_t kh = task % sh.kv_heads, b = task / sh.kv_heads;
    const int64_t q_stride = sh.heads * d, kv_stride = sh.kv_heads * d;
    thread_local TileScratch scratch;
    thread_local std::vector<float> buf;
    const int64_t rows = g * seq;
    buf.resize(static_cast<size_t>(3 * rows * d + 2 * rows + 4 * seq * d + 2 * kBlockQ * kBlockK));
    float* qs = buf.data();           // [g, seq, d], scaled
    float* dof = qs + rows * d;       // [g, seq, d]
    float* dqa = dof + rows * d;      // [g, seq, d]
    float* delta = dqa + rows * d;    // [g, seq]
    float* lse_g = delta + rows;      // [g, seq]
    float* kf = lse_g + rows;         // [seq, d]
    float* vf = kf + seq * d;         // [seq, d]
    float* dka = vf + seq * d;        // [seq, d]
    float* dva = dka + seq * d;       // [seq, d]
    float* p = dva + seq * d;         // [kBlockQ, kBlockK]
    float* ds = p + kBlockQ * kBlockK;
    for (int64_t gh = 0; gh < g; ++gh) {
      const int64_t h = kh * g + gh, at = (b * seq * sh.heads + h) * d;
      to_f32_rows(qs + gh * seq * d, q + at, seq, q_stride, d, sh.scale);
      to_f32_rows(dof + gh * seq * d, dout + at, seq, q_stride, d, 1.0f);
      for (int64_t i = 0; i < seq; ++i) {
        const T* oi = out + at + i * q_stride;
        const float* doi = dof + (gh * seq + i) * d;
        float s = 0.0f;
        for (int64_t c = 0; c < d; ++c) s += doi[c] * static_cast<float>(oi[c]);
        delta[gh * seq + i] = s;
        lse_g[gh * seq + i] = lse[(b * sh.heads + h) * seq + i];
      }
    }
    const int64_t kv_at = (b * seq * sh.kv_heads + kh) * d;
    to_f32_rows(kf, k + kv_at, seq, kv_stride, d, 1.0f);
    to_f32_rows(vf, v + kv_at, seq, kv_stride, d, 1.0f);
    std::fill(dqa, dqa + rows * d, 0.0f);
    std::fill(dka, dka + seq * d, 0.0f);
    std::fill(dva, dva + seq * d, 0.0f);
    for (int64_t j0 = 0; j0 < seq; j0 += kBlockK) {
      const int64_t nk = std::min(kBlockK, seq - j0), j_last = j0 + nk - 1;
      const float* kb = kf + j0 * d;
      const float* vb = vf + j0 * d;
      for (int64_t i0 = j0 / kBlockQ * kBlockQ; i0 < seq; i0 += kBlockQ) {
        const int64_t i1 = std::min(seq, i0 + kBlockQ), nq = i1 - i0;
        // the first row at or after j0 starts the latest document among rows that may see the
        // block: when it starts after the block, no later row sees it either
        if (sh.first_key(std::max(i0, j0)) > j_last) break;
        for (int64_t gh = 0; gh < g; ++gh) {
          const float* qb = qs + (gh * seq + i0) * d;
          const float* dob = dof + (gh * seq + i0) * d;
          tile_gemm<L>(nq, nk, d, qb, d, 1, kb, 1, d, p, kBlockK, false, scratch);
          tile_gemm<L>(nq, nk, d, dob, d, 1, vb, 1, d, ds, kBlockK, false, scratch);
          for (int64_t r = 0; r < nq; ++r) {
            const int64_t i = i0 + r;
            const int64_t lo = std::max(sh.first_key(i), j0) - j0, hi = std::min(i + 1, j0 + nk) - j0;
            float* pr = p + r * kBlockK;
            float* dsr = ds + r * kBlockK;
            const float li = lse_g[gh * seq + i], di = delta[gh * seq + i];
            for (int64_t j = 0; j < std::min(lo, nk); ++j) pr[j] = dsr[j] = 0.0f;
#pragma omp simd
            for (int64_t j = lo; j < hi; ++j) {
              const float e = fast_exp(pr[j] - li);
              pr[j] = e;
              dsr[j] = e * (dsr[j] - di);
            }
            for (int64_t j = std::max(hi, lo); j < nk; ++j) pr[j] = dsr[j] = 0.0f;
          }
          // dV += P^T dO,  dK += dS^T (scale q),  dQ += dS k
          tile_gemm<L>(nk, d, nq, p, 1, kBlockK, dob, d, 1, dva + j0 * d, d, true, scratch);
          tile_gemm<L>(nk, d, nq, ds, 1, kBlockK, qb, d, 1, dka + j0 * d, d, true, scratch);
          tile_gemm<L>(nq, d, nk, ds, kBlockK, 1, kb, d, 1, dqa + (gh * seq + i0) * d, d, true, scratch);
        }
      }
    }
    for (int64_t j = 0; j < seq; ++j) {
      T* dkj = dk + kv_at + j * kv_stride;
      T* dvj = dv + kv_at + j * kv_stride;
      for (int64_t c = 0; c < d; ++c) {
        dkj[c] = static_cast<T>(dka[j * d + c]);
        dvj[c] = static_cast<T>(dva[j * d + c]);
      }
    }
    for (int64_t gh = 0; gh < g; ++gh) {
      const int64_t at = (b * seq * sh.heads + kh * g + gh) * d;
      for (int64_t i = 0; i < seq; ++i) {
        T* dqi = dq + at + i * q_stride;
        const float* acc = dqa + (gh * seq + i) * d;
        for (int64_t c = 0; c < d; ++c) dqi[c] = static_cast<T>(sh.scale * acc[c]);
      }
    }
  }
};

AttentionShape attention_shape(const Tensor& q, const Tensor& k, double scale, const Documents& docs) {
  const int64_t heads = q.size(2), kv_heads = k.size(2);
  return {q.size(0), q.size(1), heads, kv_heads, q.size(3), heads / kv_heads, static_cast<float>(scale), &docs};
}

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, const Tensor& cu_seqlens,
                       const Tensor& out, const Tensor& lse) {
  check_kernel_contiguous("attention_forward", "cpu", {&q, &k, &v, &out, &lse});
  if (q.dtype() == DType::f64) return reference_forward(q, k, v, scale, cu_seqlens, out, lse);
  const Documents docs = documents(cu_seqlens, q.size(1));
  const AttentionShape sh = attention_shape(q, k, scale, docs);
  const int64_t tasks = sh.batch * sh.heads * ((sh.seq + kBlockQ - 1) / kBlockQ);
  visit_floating(q.dtype(), "attention_forward", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, double>) {
      const T* pq = q.data<T>();
      const T* pk = k.data<T>();
      const T* pv = v.data<T>();
      T* po = out.data<T>();
      float* plse = lse.data<float>();
#pragma omp parallel for schedule(dynamic, 1) if (tasks > 1 && sh.seq * sh.d > 4096)
      for (int64_t t = 0; t < tasks; ++t) {
        ForwardBlock<T> block{sh, pq, pk, pv, po, plse, t};
        dispatch_simd(block);
      }
    }
  });
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, double scale, const Tensor& cu_seqlens, const Tensor& dq, const Tensor& dk,
                        const Tensor& dv) {
  check_kernel_contiguous("attention_backward", "cpu", {&dout, &q, &k, &v, &out, &lse, &dq, &dk, &dv});
  if (q.dtype() == DType::f64) return reference_backward(dout, q, k, v, out, lse, scale, cu_seqlens, dq, dk, dv);
  const Documents docs = documents(cu_seqlens, q.size(1));
  const AttentionShape sh = attention_shape(q, k, scale, docs);
  const int64_t tasks = sh.batch * sh.kv_heads;
  visit_floating(q.dtype(), "attention_backward", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, double>) {
#pragma omp parallel for schedule(dynamic, 1) if (tasks > 1 && sh.seq * sh.d > 4096)
      for (int64_t t = 0; t < tasks; ++t) {
        BackwardGroup<T> group{sh,
                               dout.data<T>(),
                               q.data<T>(),
                               k.data<T>(),
                               v.data<T>(),
                               out.data<T>(),
                               lse.data<float>(),
                               dq.data<T>(),
                               dk.data<T>(),
                               dv.data<T>(),
                               t};
        dispatch_simd(group);
      }
    }
  });
}

}  // namespace mlr::cpu
