// Multi-tensor launches without an upload: the list of tensors (pointers, sizes, per-tensor
// scalars: an Item) travels in the kernel's parameter space, so the host queues the launch like
// any other and never waits for a copy. Each tensor is cut into chunks of a fixed size; block b of
// a launch works on chunk b - first_chunk[i] of item i, where first_chunk[i] <= b < first_chunk[i + 1].
// The parameter space is 4 KiB, so a launch holds up to N items and a long list takes several.
#pragma once

#include <cstdint>

#include "tensor/kernels/cuda/cuda_utils.cuh"

namespace mlr::optim_kernels {

template <typename Item, int N>
struct MultiTensorLaunch {
  Item items[N];
  int32_t first_chunk[N + 1];
  int64_t first_block;  // blocks of earlier launches of the same list (for per-block outputs)

  // The item of block `block` and the index of its chunk within that item.
  __device__ __forceinline__ int item_of(int32_t block, int64_t& chunk) const {
    int item = 0;
    while (block >= first_chunk[item + 1]) ++item;
    chunk = block - first_chunk[item];
    return item;
  }
};

// Host side: add() items one by one; launch(params, blocks) runs whenever a launch is full and at
// finish(). `params` is the filled MultiTensorLaunch, `blocks` its number of chunks.
template <typename Item, int N, typename Launch>
class MultiTensorBatcher {
 public:
  using Params = MultiTensorLaunch<Item, N>;
  static_assert(sizeof(Params) <= 4000, "kernel parameters are limited to 4 KiB");

  explicit MultiTensorBatcher(Launch launch) : launch_(launch) {
    params_.first_chunk[0] = 0;
    params_.first_block = 0;
  }

  void add(const Item& item, int64_t chunks) {
    MLR_CHECK(chunks < (int64_t(1) << 30), "multi-tensor kernel: a tensor of {} chunks exceeds one launch", chunks);
    if (count_ == N || params_.first_chunk[count_] + chunks >= (int64_t(1) << 31)) flush();
    params_.items[count_] = item;
    params_.first_chunk[count_ + 1] = static_cast<int32_t>(params_.first_chunk[count_] + chunks);
    ++count_;
  }

  void finish() {
    if (count_ > 0) flush();
  }

 private:
  void flush() {
    const int32_t blocks = params_.first_chunk[count_];
    launch_(params_, blocks);
    params_.first_block += blocks;
    count_ = 0;
  }

  Launch launch_;
  Params params_{};
  int count_ = 0;
};

}  // namespace mlr::optim_kernels
