// dist/data_parallel.h with a collective worker: gradient buckets reduced while backward runs
// (the order of events shows a bucket starting before backward reaches the first layers), the
// same bytes as reducing after backward, gradient accumulation reducing only on the armed
// backward, and ZeRO-2's reduce-scattered buckets keeping each rank's own gradients. Each with
// the two kinds of worker: a thread driving Gloo (CPU) and a communicator that queues its jobs as
// NCCL does (tests/dist/deferred_communicator.h). Ranks are forked processes
// (tests/dist/run_ranks.h).
#include <doctest/doctest.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "dist/collective_worker.h"
#include "dist/data_parallel.h"
#include "tests/dist/deferred_communicator.h"
#include "tests/dist/run_ranks.h"
#include "tensor/ops.h"

using namespace mlr;
using namespace mlr::dist;

using mlr::test::check_all_ok;
using mlr::test::run_ranks;

namespace {

// A chain of `layers` 8x8 linear layers and an unused parameter, rank-dependent inputs; every
// parameter 256 bytes, so a 256-byte bucket holds one.
struct Chain {
  std::vector<Variable> params;
  explicit Chain(int layers) {
    Generator g(7);
    for (int l = 0; l < layers; ++l)
      params.push_back(Variable::leaf(mul(randn({8, 8}, g), 0.3), true, "w" + std::to_string(l)));
    params.push_back(Variable::leaf(zeros({8, 8}), true, "unused"));
  }
  // Uses the last parameter only on rank 1: on rank 0 its gradient never becomes ready.
  Variable loss(int rank, int micro) const {
    Generator g(100 + 10 * rank + micro);
    Variable h(randn({4, 8}, g));
    for (size_t l = 0; l + 1 < params.size(); ++l) h = tanh(linear(h, params[l]));
    Variable out = sum(mul(h, h));
    if (rank == 1) out = add(out, sum(params.back()));
    return out;
  }
};

std::string events_text(const std::vector<std::string>& events) {
  std::ostringstream out;
  for (const std::string& e : events) out << e << "; ";
  return out.str();
}

size_t position(const std::vector<std::string>& events, const std::string& e) {
  return static_cast<size_t>(std::find(events.begin(), events.end(), e) - events.begin());
}

// How the buckets are reduced: after backward on the main communicator, or during backward by a
// worker's thread, or queued on a (stand-in) device queue.
enum class Overlap { none, thread, queued };
const char* overlap_name(Overlap o) { return o == Overlap::none ? "none" : o == Overlap::thread ? "thread" : "queued"; }

std::unique_ptr<CollectiveWorker> make_worker(ProcessGroup& g, Overlap overlap) {
  std::unique_ptr<Communicator> side = g.new_communicator(Device::cpu(), "grad");
  if (overlap == Overlap::queued) side = std::make_unique<mlr::test::DeferredCommunicator>(std::move(side));
  auto worker = std::make_unique<CollectiveWorker>(std::move(side));
  MLR_CHECK(worker->threaded() == (overlap == Overlap::thread), "worker kind");
  return worker;
}

// Gradients of a chain after `micros` accumulated backward passes, reduced by buckets armed for
// the last one.
std::vector<std::vector<float>> reduced_grads(ProcessGroup& g, Overlap overlap, int micros, std::vector<int> owners,
                                             std::vector<std::string>* events) {
  Chain chain(4);
  GradientBucketOptions options;
  options.bucket_bytes = 256;
  options.owners = std::move(owners);
  std::unique_ptr<CollectiveWorker> worker;
  if (overlap != Overlap::none) worker = make_worker(g, overlap);
  GradientBuckets buckets(g.cpu(), chain.params, options, std::move(worker));
  if (events) buckets.on_event = [events](const std::string& e) { events->push_back(e); };
  for (int m = 0; m < micros; ++m) {
    if (m + 1 == micros) buckets.arm();
    chain.loss(g.rank(), m).backward();
    if (events) events->push_back("backward " + std::to_string(m) + " returned");
  }
  buckets.finish();
  std::vector<std::vector<float>> out;
  for (const Variable& p : chain.params)
    out.push_back(p.grad().defined() ? p.grad().to_vector<float>() : std::vector<float>{});
  return out;
}

}  // namespace

TEST_CASE("overlap: buckets start during backward, in reverse parameter order, and give the bytes of reducing after") {
  for (Overlap overlap : {Overlap::thread, Overlap::queued}) {
    CAPTURE(overlap_name(overlap));
    check_all_ok(run_ranks(2, [overlap](ProcessGroup& g, std::ostream& msg) {
      std::vector<std::string> events;
      const auto overlapped = reduced_grads(g, overlap, 1, {}, &events);
      const auto after = reduced_grads(g, Overlap::none, 1, {}, nullptr);
      // Buckets: 0 = the unused parameter (index 4), 1 = w3, 2 = w2, 3 = w1, 4 = w0.
      const size_t returned = position(events, "backward 0 returned");
      if (g.rank() == 1) {
        // Every gradient is ready in backward: bucket 1 (w3) starts before w0's gradient exists.
        if (!(position(events, "start 1") < position(events, "ready 0") && position(events, "ready 0") < returned)) {
          msg << "rank 1: no bucket started while backward ran: " << events_text(events);
          return 1;
        }
      } else {
        // The unused parameter has no gradient here: bucket 0 holds every later bucket back until
        // finish(), which starts them after backward, in order.
        if (!(position(events, "start 0") > returned && position(events, "start 1") > position(events, "start 0"))) {
          msg << "rank 0: buckets did not wait for bucket 0: " << events_text(events);
          return 1;
        }
      }
      if (overlapped != after) {
        msg << "overlapped gradients differ from those reduced after backward";
        return 1;
      }
      if (overlapped.back() != std::vector<float>(64, 1.0f)) {  // d sum(w)/dw on rank 1 only
        msg << "the parameter used on rank 1 only has the wrong sum";
        return 1;
      }
      return 0;
    }));
  }
}

TEST_CASE("overlap: with gradient accumulation only the armed (last) backward reduces, and the sum covers all micro-batches") {
  for (Overlap overlap : {Overlap::thread, Overlap::queued}) {
    CAPTURE(overlap_name(overlap));
    check_all_ok(run_ranks(2, [overlap](ProcessGroup& g, std::ostream& msg) {
      std::vector<std::string> events;
      const auto overlapped = reduced_grads(g, overlap, 3, {}, &events);
      const auto after = reduced_grads(g, Overlap::none, 3, {}, nullptr);
      const size_t second = position(events, "backward 1 returned");
      for (size_t k = 0; k < second; ++k) {
        if (events[k].rfind("start", 0) == 0 || events[k].rfind("ready", 0) == 0) {
          msg << "a bucket moved before the last micro-batch: " << events_text(events);
          return 1;
        }
      }
      if (overlapped != after) {
        msg << "accumulated overlapped gradients differ from those reduced after backward";
        return 1;
      }
      return 0;
    }));
  }
}

TEST_CASE("ZeRO-2: each rank keeps the reduced gradients of the parameters it owns, the same as all-reduce") {
  check_all_ok(run_ranks(2, [](ProcessGroup& g, std::ostream& msg) {
    const std::vector<int> owners = {1, 0, 0, 1, 0};
    const auto whole = reduced_grads(g, Overlap::none, 2, {}, nullptr);
    for (Overlap overlap : {Overlap::none, Overlap::thread, Overlap::queued}) {
      const auto mine = reduced_grads(g, overlap, 2, owners, nullptr);
      for (size_t i = 0; i < owners.size(); ++i) {
        const bool owned = owners[i] == g.rank();
        if (owned && mine[i] != whole[i]) {
          msg << "overlap " << overlap_name(overlap) << ": owned gradient " << i << " differs from the all-reduced one";
          return 1;
        }
        if (!owned && !mine[i].empty()) {
          msg << "overlap " << overlap_name(overlap) << ": gradient " << i << " of another rank was kept";
          return 1;
        }
      }
    }
    return 0;
  }));
}

TEST_CASE("overlap: a gradient that arrives after its bucket started is an error naming the parameter") {
  check_all_ok(run_ranks(2, [](ProcessGroup& g, std::ostream& msg) {
    Variable w = Variable::leaf(full({4}, 1.0), true, "shared.weight");
    GradientBuckets buckets(g.cpu(), {w}, {},
                            std::make_unique<CollectiveWorker>(g.new_communicator(Device::cpu(), "grad")));
    buckets.arm();
    sum(mul(w, 2.0)).backward();  // ready: the bucket starts
    std::string error;
    try {
      sum(w).backward();  // a second graph reaching w in the same step
    } catch (const Error& e) {
      error = e.what();
    }
    buckets.finish();
    if (error.find("'shared.weight'") == std::string::npos || error.find("second gradient") == std::string::npos) {
      msg << "no error naming the parameter: " << error;
      return 1;
    }
    return 0;
  }));
}

TEST_CASE("overlap: a CPU communicator cannot queue a job (it needs a worker's thread), and says so") {
  check_all_ok(run_ranks(1, [](ProcessGroup& g, std::ostream& msg) {
    std::string error;
    try {
      g.cpu().start([](Communicator& c) { c.barrier(); });
    } catch (const Error& e) {
      error = e.what();
    }
    if (g.cpu().queues_on_device() || error.find("calling thread only") == std::string::npos ||
        error.find("collective_worker.h") == std::string::npos) {
      msg << "gloo start(): " << error;
      return 1;
    }
    return 0;
  }));
}
