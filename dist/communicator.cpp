#include "dist/communicator.h"

#include <fmt/format.h>

namespace mlr::dist {

std::string describe(const Tensor& t) { return fmt::format("{}, {} elements", dtype_name(t.dtype()), t.numel()); }

int64_t Communicator::enter(const char* collective, const Tensor& t, Device expected_device) {
  MLR_CHECK(t.defined(), "dist: rank {}: {}: the tensor is undefined", rank_, collective);
  MLR_CHECK(t.is_contiguous(), "dist: rank {}: {}: the tensor {} is not contiguous", rank_, collective,
            shape_str(t.shape()));
  MLR_CHECK(t.device() == expected_device, "dist: rank {}: {}: the tensor is on {}, the {} communicator works on {}",
            rank_, collective, t.device().str(), backend(), expected_device.str());
  ++sequence_;
  if (observer_.on_enter) observer_.on_enter(sequence_, collective);
  return sequence_;
}

void Communicator::check_same(const char* collective, const Tensor& a, const Tensor& b, int64_t num, int64_t den) {
  MLR_CHECK(b.defined() && b.is_contiguous() && a.dtype() == b.dtype() && a.device() == b.device(),
            "dist: rank {}: {}: input and output must be contiguous tensors of one dtype and device (got {} on {} "
            "and {} on {})",
            rank_, collective, dtype_name(a.dtype()), a.device().str(), b.defined() ? dtype_name(b.dtype()) : "undefined",
            b.defined() ? b.device().str() : "-");
  MLR_CHECK(b.numel() * den == a.numel() * num,
            "dist: rank {}: {}: input has {} elements and output {}; with {} ranks the output must have {}", rank_,
            collective, a.numel(), b.numel(), world_size_, a.numel() * num / den);
}

CollectiveWork Communicator::start(const std::function<void(Communicator&)>&) {
  throw Error(fmt::format("dist: rank {}: the {} communicator runs collectives on the calling thread only; start them "
                          "on a collective worker's thread (dist/collective_worker.h)",
                          rank_, backend()));
}

CollectiveError Communicator::failure(const char* collective, int64_t sequence, const std::string& shape,
                                      double seconds, const std::string& cause) const {
  std::string peers = observer_.describe_peers ? observer_.describe_peers() : std::string();
  return CollectiveError(fmt::format("dist: rank {} of {}: {} #{} ({}) failed after {:.1f} s (timeout {:.0f} s): {}{}{}",
                                     rank_, world_size_, collective, sequence, shape, seconds,
                                     std::chrono::duration<double>(timeout_).count(), cause,
                                     peers.empty() ? "" : "; ", peers));
}

}  // namespace mlr::dist
