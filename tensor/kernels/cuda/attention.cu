// Causal attention with grouped-query heads, forward and backward, in the flash-attention manner:
// the S x S score matrix is never stored. q [B, S, H, D], k and v [B, S, Hkv, D], out [B, S, H, D],
// lse [B, H, S] (f32; f64 for f64); query head h reads key/value head h / (H / Hkv).
//   s_ij = scale * q_i . k_j          for keys j <= i of the same document
//   out_i = sum_j p_ij v_j,  p_ij = exp(s_ij - lse_i),  lse_i = log sum_j exp(s_ij)
// Backward, with Dsum_i = dO_i . out_i:
//   dp_ij = dO_i . v_j,   ds_ij = p_ij (dp_ij - Dsum_i)
//   dq_i = scale * sum_j ds_ij k_j,   dk_j = scale * sum_i ds_ij q_i,   dv_j = sum_i p_ij dO_i
// (dk_j and dv_j sum over the query heads of the group as well.)
// Packed rows: with cu_seqlens = [0, l1, l1+l2, ..., S] (batch 1) a query attends only to keys of
// its own document.
//
// Two kernels serve it. attention_flash.cu is the fast one: tiles on tensor cores, bf16/f16, head
// dims 64 and 128. This file holds the reference-grade one, which serves every other case (f32, f64,
// any head dim up to 256) and is what the flash kernel is tested against on the GPU: one warp per
// query row (forward, dq) or key row (dk, dv), each lane holding D/32 elements of the row in
// registers, an online softmax (running max and sum) over the keys, f32 arithmetic. It is exact and
// deterministic (no atomics: dk/dv are gathered per key instead of scattered per query) and reads
// K/V through L2.
#include <atomic>
#include <cstdlib>
#include <cstdio>
#include <mutex>
#include <set>
#include <string>

#include "tensor/kernels/cuda/attention_documents.cuh"
#include "tensor/kernels/cuda/cuda_utils.cuh"
#include "tensor/kernels/cuda/kernels.h"
#include "tensor/kernels/kernel_checks.h"
#include "tensor/kernels/cuda/reduce_utils.cuh"

namespace mlr::cuda {

namespace {

constexpr int kWarps = 4;  // warps per block, each owning one row

struct Geometry {
  int64_t batch, seq, heads, kv_heads, dim;
  const int32_t* cu;  // cumulative document lengths (nullptr: one document per row)
  int64_t docs;       // entries of cu minus one
};

__device__ __forceinline__ void document_of(const Geometry& g, int64_t i, int64_t& start, int64_t& end) {
  document_bounds(g.cu, g.docs, g.seq, i, start, end);
}

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Loads the row at p (dim elements) into this lane's registers: element lane + 32 t.
template <int NT, typename T, typename A>
__device__ __forceinline__ void load_row(A (&r)[NT], const T* p, int64_t dim, int lane) {
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const int64_t d = lane + 32 * t;
    r[t] = d < dim ? load_as<A>(p[d]) : A(0);
  }
}

template <int NT, typename A>
__device__ __forceinline__ A dot_row(const A (&r)[NT], const A (&s)[NT]) {
  A acc = 0;
#pragma unroll
  for (int t = 0; t < NT; ++t) acc += r[t] * s[t];
  return warp_sum(acc);
}

template <int NT, typename T, typename A>
__device__ __forceinline__ A dot_global(const A (&r)[NT], const T* p, int64_t dim, int lane) {
  A acc = 0;
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const int64_t d = lane + 32 * t;
    if (d < dim) acc += r[t] * load_as<A>(p[d]);
  }
  return warp_sum(acc);
}

template <int NT, typename T, typename A>
__device__ __forceinline__ void store_row(T* p, const A (&r)[NT], A factor, int64_t dim, int lane) {
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const int64_t d = lane + 32 * t;
    if (d < dim) p[d] = convert<T>(r[t] * factor);
  }
}

// Row index layout: query row = (b * H + h) * S + i; key row = (b * Hkv + hk) * S + j.
template <int NT, typename T>
__global__ void attention_forward_kernel(const T* q, const T* k, const T* v, T* out, acc_t<T>* lse, Geometry g,
                                         acc_t<T> scale) {
  using A = acc_t<T>;
  const int lane = threadIdx.x % 32;
  const int64_t rows = g.batch * g.heads * g.seq;
  const int64_t group = g.heads / g.kv_heads;
  for (int64_t row = blockIdx.x * int64_t(kWarps) + threadIdx.x / 32; row < rows; row += int64_t(gridDim.x) * kWarps) {
    const int64_t i = row % g.seq, h = (row / g.seq) % g.heads, b = row / (g.seq * g.heads);
    const int64_t hk = h / group;
    int64_t start, end;
    document_of(g, i, start, end);
    A qr[NT], o[NT];
    load_row<NT>(qr, q + ((b * g.seq + i) * g.heads + h) * g.dim, g.dim, lane);
#pragma unroll
    for (int t = 0; t < NT; ++t) o[t] = A(0);
    A m = -std::numeric_limits<A>::infinity(), l = A(0);
    for (int64_t j = start; j <= i; ++j) {
      const int64_t kv_off = ((b * g.seq + j) * g.kv_heads + hk) * g.dim;
      const A s = scale * dot_global<NT>(qr, k + kv_off, g.dim, lane);
      const A m_new = s > m ? s : m;
      const A correction = m_exp_(m - m_new);  // exp(-inf) = 0 on the first key
      const A p = m_exp_(s - m_new);
      l = l * correction + p;
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        const int64_t d = lane + 32 * t;
        o[t] = o[t] * correction + (d < g.dim ? p * load_as<A>(v[kv_off + d]) : A(0));
      }
      m = m_new;
    }
    store_row<NT>(out + ((b * g.seq + i) * g.heads + h) * g.dim, o, A(1) / l, g.dim, lane);
    if (lane == 0) lse[row] = m + m_log_(l);
  }
}

// Dsum_i = dO_i . out_i per query row, in the lse layout [B, H, S].
template <int NT, typename T>
__global__ void attention_dsum_kernel(const T* dout, const T* out, acc_t<T>* dsum, Geometry g) {
  using A = acc_t<T>;
  const int lane = threadIdx.x % 32;
  const int64_t rows = g.batch * g.heads * g.seq;
  for (int64_t row = blockIdx.x * int64_t(kWarps) + threadIdx.x / 32; row < rows; row += int64_t(gridDim.x) * kWarps) {
    const int64_t i = row % g.seq, h = (row / g.seq) % g.heads, b = row / (g.seq * g.heads);
    const int64_t off = ((b * g.seq + i) * g.heads + h) * g.dim;
    A r[NT];
    load_row<NT>(r, dout + off, g.dim, lane);
    const A s = dot_global<NT>(r, out + off, g.dim, lane);
    if (lane == 0) dsum[row] = s;
  }
}

template <int NT, typename T>
__global__ void attention_dq_kernel(const T* dout, const T* q, const T* k, const T* v, const acc_t<T>* lse,
                                    const acc_t<T>* dsum, T* dq, Geometry g, acc_t<T> scale) {
  using A = acc_t<T>;
  const int lane = threadIdx.x % 32;
  const int64_t rows = g.batch * g.heads * g.seq;
  const int64_t group = g.heads / g.kv_heads;
  for (int64_t row = blockIdx.x * int64_t(kWarps) + threadIdx.x / 32; row < rows; row += int64_t(gridDim.x) * kWarps) {
    const int64_t i = row % g.seq, h = (row / g.seq) % g.heads, b = row / (g.seq * g.heads);
    const int64_t hk = h / group;
    int64_t start, end;
    document_of(g, i, start, end);
    const int64_t off = ((b * g.seq + i) * g.heads + h) * g.dim;
    A qr[NT], dor[NT], acc[NT];
    load_row<NT>(qr, q + off, g.dim, lane);
    load_row<NT>(dor, dout + off, g.dim, lane);
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[t] = A(0);
    const A l = lse[row], ds_base = dsum[row];
    for (int64_t j = start; j <= i; ++j) {
      const int64_t kv_off = ((b * g.seq + j) * g.kv_heads + hk) * g.dim;
      const A p = m_exp_(scale * dot_global<NT>(qr, k + kv_off, g.dim, lane) - l);
      const A dp = dot_global<NT>(dor, v + kv_off, g.dim, lane);
      const A ds = p * (dp - ds_base);
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        const int64_t d = lane + 32 * t;
        if (d < g.dim) acc[t] += ds * load_as<A>(k[kv_off + d]);
      }
    }
    store_row<NT>(dq + off, acc, scale, g.dim, lane);
  }
}

template <int NT, typename T>
__global__ void attention_dkv_kernel(const T* dout, const T* q, const T* k, const T* v, const acc_t<T>* lse,
                                     const acc_t<T>* dsum, T* dk, T* dv, Geometry g, acc_t<T> scale) {
  using A = acc_t<T>;
  const int lane = threadIdx.x % 32;
  const int64_t rows = g.batch * g.kv_heads * g.seq;
  const int64_t group = g.heads / g.kv_heads;
  for (int64_t row = blockIdx.x * int64_t(kWarps) + threadIdx.x / 32; row < rows; row += int64_t(gridDim.x) * kWarps) {
    const int64_t j = row % g.seq, hk = (row / g.seq) % g.kv_heads, b = row / (g.seq * g.kv_heads);
    int64_t start, end;
    document_of(g, j, start, end);
    const int64_t kv_off = ((b * g.seq + j) * g.kv_heads + hk) * g.dim;
    A kr[NT], vr[NT], dk_acc[NT], dv_acc[NT];
    load_row<NT>(kr, k + kv_off, g.dim, lane);
    load_row<NT>(vr, v + kv_off, g.dim, lane);
#pragma unroll
    for (int t = 0; t < NT; ++t) dk_acc[t] = dv_acc[t] = A(0);
    for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
      for (int64_t i = j; i < end; ++i) {
        const int64_t off = ((b * g.seq + i) * g.heads + h) * g.dim;
        const int64_t stat = (b * g.heads + h) * g.seq + i;
        const A p = m_exp_(scale * dot_global<NT>(kr, q + off, g.dim, lane) - lse[stat]);
        const A dp = dot_global<NT>(vr, dout + off, g.dim, lane);
        const A ds = p * (dp - dsum[stat]);
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          const int64_t d = lane + 32 * t;
          if (d < g.dim) {
            dv_acc[t] += p * load_as<A>(dout[off + d]);
            dk_acc[t] += ds * load_as<A>(q[off + d]);
          }
        }
      }
    }
    store_row<NT>(dk + kv_off, dk_acc, scale, g.dim, lane);
    store_row<NT>(dv + kv_off, dv_acc, A(1), g.dim, lane);
  }
}

// Calls f with the register tile width NT = ceil(D / 32) rounded up to 1, 2, 4 or 8.
template <typename F>
void dispatch_dim(int64_t dim, const char* op, F&& f) {
  MLR_CHECK(dim >= 1 && dim <= 256, "{} (cuda kernel): head_dim {} is not supported (1 to 256)", op, dim);
  if (dim <= 32) f(std::integral_constant<int, 1>{});
  else if (dim <= 64) f(std::integral_constant<int, 2>{});
  else if (dim <= 128) f(std::integral_constant<int, 4>{});
  else f(std::integral_constant<int, 8>{});
}

Geometry geometry_of(const Tensor& q, const Tensor& k, const Tensor& cu) {
  Geometry g{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), nullptr, 0};
  if (cu.defined()) {
    g.cu = static_cast<const int32_t*>(cu.data_ptr());
    g.docs = cu.numel() - 1;
  }
  return g;
}

unsigned int grid_for_rows(int64_t rows, int device) {
  const int64_t wanted = (rows + kWarps - 1) / kWarps, cap = int64_t(sm_count(device)) * 64;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min(wanted, cap)));
}

AttentionKernel initial_attention_kernel() {
  const char* env = std::getenv("MLR_ATTENTION");
  if (env == nullptr || *env == 0) return AttentionKernel::automatic;
  const std::string name(env);
  if (name == "flash") return AttentionKernel::flash;
  if (name == "reference") return AttentionKernel::reference;
  MLR_CHECK(name == "auto" || name == "automatic", "MLR_ATTENTION={}: expected flash, reference or auto", name);
  return AttentionKernel::automatic;
}

std::atomic<AttentionKernel>& attention_kernel_choice() {
  static std::atomic<AttentionKernel> choice{initial_attention_kernel()};
  return choice;
}

// The automatic choice falls back to the warp-per-row kernel, orders of magnitude slower on long
// sequences; a GPU user should know. One warning per kind of reason (the text before the first
// space: "dtype", "head", ...) per process, on stderr, with the first call's details.
void warn_fallback(const std::string& why) {
  static std::mutex mutex;
  static std::set<std::string> warned;
  const std::string kind = why.substr(0, why.find(' '));
  std::lock_guard<std::mutex> lock(mutex);
  if (!warned.insert(kind).second) return;
  std::fprintf(stderr,
               "mlr: warning: attention runs on the slow reference kernel instead of the flash kernel: %s "
               "(warned once per reason; MLR_ATTENTION=reference silences this)\n",
               why.c_str());
}

// Whether this call goes to the flash kernel.
bool use_flash(const Tensor& q, const Tensor& k, const Tensor& v) {
  switch (attention_kernel_choice().load()) {
    case AttentionKernel::reference: return false;
    case AttentionKernel::flash: return true;  // its own checks name what is unsupported
    default: {
      const std::string why = flash_attention_unsupported_reason(q, k, v);
      if (why.empty()) return true;
      warn_fallback(why);
      return false;
    }
  }
}

}  // namespace

void set_attention_kernel(AttentionKernel kernel) { attention_kernel_choice().store(kernel); }
AttentionKernel attention_kernel() { return attention_kernel_choice().load(); }

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, const Tensor& cu_seqlens,
                       const Tensor& out, const Tensor& lse) {
  if (use_flash(q, k, v)) return flash_attention_forward(q, k, v, scale, cu_seqlens, out, lse);
  const char* op = "attention_forward";
  check_kernel_contiguous(op, "cuda", {&q, &k, &v, &out, &lse});
  cudaStream_t stream = device_stream(q);
  const Tensor cu = cu_seqlens.defined() ? cu_seqlens.to(DType::i32).contiguous() : Tensor();
  const Geometry g = geometry_of(q, k, cu);
  const int64_t rows = g.batch * g.heads * g.seq;
  if (rows == 0) return;
  dispatch_floating(q.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    dispatch_dim(g.dim, op, [&](auto nt) {
      MLR_LAUNCH((grid_for_rows(rows, q.device().index), 32 * kWarps, 0, stream), attention_forward_kernel<decltype(nt)::value, T>)(
          static_cast<const T*>(q.data_ptr()), static_cast<const T*>(k.data_ptr()), static_cast<const T*>(v.data_ptr()),
          static_cast<T*>(out.data_ptr()), static_cast<A*>(lse.data_ptr()), g, static_cast<A>(scale));
      MLR_CUDA_CHECK_LAUNCH();
    });
  });
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, double scale, const Tensor& cu_seqlens, const Tensor& dq,
                        const Tensor& dk, const Tensor& dv) {
  if (use_flash(q, k, v)) return flash_attention_backward(dout, q, k, v, out, lse, scale, cu_seqlens, dq, dk, dv);
  const char* op = "attention_backward";
  check_kernel_contiguous(op, "cuda", {&dout, &q, &k, &v, &out, &lse, &dq, &dk, &dv});
  cudaStream_t stream = device_stream(q);
  const Tensor cu = cu_seqlens.defined() ? cu_seqlens.to(DType::i32).contiguous() : Tensor();
  const Geometry g = geometry_of(q, k, cu);
  const int64_t q_rows = g.batch * g.heads * g.seq, kv_rows = g.batch * g.kv_heads * g.seq;
  if (q_rows == 0) return;
  const int device = q.device().index;
  Tensor dsum = empty_like(lse);
  dispatch_floating(q.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const T* pdout = static_cast<const T*>(dout.data_ptr());
    const T* pq = static_cast<const T*>(q.data_ptr());
    const T* pk = static_cast<const T*>(k.data_ptr());
    const T* pv = static_cast<const T*>(v.data_ptr());
    const A* plse = static_cast<const A*>(lse.data_ptr());
    A* pdsum = static_cast<A*>(dsum.data_ptr());
    dispatch_dim(g.dim, op, [&](auto nt) {
      constexpr int NT = decltype(nt)::value;
      MLR_LAUNCH((grid_for_rows(q_rows, device), 32 * kWarps, 0, stream), attention_dsum_kernel<NT, T>)(
          pdout, static_cast<const T*>(out.data_ptr()), pdsum, g);
      MLR_CUDA_CHECK_LAUNCH();
      MLR_LAUNCH((grid_for_rows(q_rows, device), 32 * kWarps, 0, stream), attention_dq_kernel<NT, T>)(
          pdout, pq, pk, pv, plse, pdsum, static_cast<T*>(dq.data_ptr()), g, static_cast<A>(scale));
      MLR_CUDA_CHECK_LAUNCH();
      MLR_LAUNCH((grid_for_rows(kv_rows, device), 32 * kWarps, 0, stream), attention_dkv_kernel<NT, T>)(
          pdout, pq, pk, pv, plse, pdsum, static_cast<T*>(dk.data_ptr()), static_cast<T*>(dv.data_ptr()), g,
          static_cast<A>(scale));
      MLR_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace mlr::cuda
