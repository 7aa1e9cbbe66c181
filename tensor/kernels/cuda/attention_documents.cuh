// Packed documents of the attention kernels (attention.cu, attention_flash.cuh): with cu_seqlens =
// [0, l1, l1+l2, ..., S] a position attends only to keys of its own document.
#pragma once

#include <cstdint>

#include "tensor/kernels/cuda/cuda_utils.cuh"

namespace mlr::cuda {

// [start, end) of the document holding position i (i < seq); cu = nullptr: one document [0, seq).
// `docs` is the number of documents (entries of cu minus one); empty documents are skipped.
__device__ __forceinline__ void document_bounds(const int32_t* cu, int64_t docs, int64_t seq, int64_t i,
                                                int64_t& start, int64_t& end) {
  if (cu == nullptr) {
    start = 0;
    end = seq;
    return;
  }
  int64_t lo = 0, hi = docs - 1;  // the last document c with cu[c] <= i
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (cu[mid] <= i) lo = mid;
    else hi = mid - 1;
  }
  while (lo + 1 < docs && cu[lo + 1] <= i) ++lo;
  start = cu[lo];
  end = cu[lo + 1];
}

}  // namespace mlr::cuda
