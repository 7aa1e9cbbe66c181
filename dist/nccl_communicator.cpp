#include "dist/nccl_communicator.h"

#include <fmt/format.h>

#if defined(MLR_NCCL)
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>
#include <future>
#include <thread>
#endif

namespace mlr::dist {

#if defined(MLR_NCCL)

}  // namespace mlr::dist

namespace mlr::cuda {
cudaStream_t current_stream(int device);  // tensor/kernels/cuda/runtime.cu: every kernel's stream
}

namespace mlr::dist {

namespace {

#define MLR_NCCL_CUDA_CHECK(call)                                                                   \
  do {                                                                                              \
    cudaError_t err_ = (call);                                                                      \
    MLR_CHECK(err_ == cudaSuccess, "dist: nccl: {} failed: {}", #call, cudaGetErrorString(err_));   \
  } while (0)

ncclDataType_t nccl_dtype(DType t) {
  switch (t) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::bf16: return ncclBfloat16;
    case DType::f16: return ncclFloat16;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    case DType::boolean: return ncclUint8;
  }
  return ncclFloat32;
}

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(int rank, int world_size, int device, StoreClient& store, const std::string& prefix,
                   std::chrono::milliseconds timeout, CollectiveObserver observer)
      : Communicator(rank, world_size, timeout, std::move(observer)), device_(device) {
    MLR_NCCL_CUDA_CHECK(cudaSetDevice(device));
    ncclUniqueId id;
    const std::string key = prefix + "unique_id";
    if (rank == 0) {
      check(ncclGetUniqueId(&id), "ncclGetUniqueId");
      store.set(key, std::string(reinterpret_cast<const char*>(&id), sizeof id));
    } else {
      const std::string v = store.wait_get(key, timeout, "rank 0 never published the NCCL unique id");
      MLR_CHECK(v.size() == sizeof id, "dist: nccl: the unique id in the store has {} bytes, expected {}", v.size(),
                sizeof id);
      std::memcpy(&id, v.data(), sizeof id);
    }
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    const auto t0 = std::chrono::steady_clock::now();
    ncclResult_t r = ncclCommInitRankConfig(&comm_, world_size, id, rank, &config);
    if (r != ncclSuccess && r != ncclInProgress) check(r, "ncclCommInitRankConfig");
    wait_comm("init (ncclCommInitRankConfig)", 0, fmt::format("cuda:{}", device), t0);
    MLR_NCCL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    MLR_NCCL_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    MLR_NCCL_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
  }

  ~NcclCommunicator() override {
    if (comm_ != nullptr) {
      if (aborted_) {
        ncclCommAbort(comm_);
      } else {
        ncclCommFinalize(comm_);  // non-blocking communicator: poll until finalized (bounded)
        ncclResult_t state = ncclInProgress;
        for (int i = 0; i < 100000 && state == ncclInProgress; ++i) {
          ncclCommGetAsyncError(comm_, &state);
          if (state == ncclInProgress) std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
        ncclCommDestroy(comm_);
      }
    }
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    if (ready_ != nullptr) cudaEventDestroy(ready_);
    if (done_ != nullptr) cudaEventDestroy(done_);
  }

  std::string backend() const override { return "nccl"; }
  Device device() const override { return Device::cuda(device_); }
  bool queues_on_device() const override { return true; }

  // The job's collectives are queued (launch() in queueing mode: no completion wait), then one
  // event behind them; the work's wait() polls that event within the timeout and puts the compute
  // stream behind it. The timeout counts from wait(): the job may rightly sit behind long compute.
  CollectiveWork start(const std::function<void(Communicator&)>& job) override {
    MLR_CHECK(!queueing_, "dist: rank {}: nccl: a collective job started from inside another", rank_);
    queueing_ = true;
    queued_ = Queued();
    try {
      job(*this);
    } catch (...) {
      queueing_ = false;
      throw;
    }
    queueing_ = false;
    MLR_NCCL_CUDA_CHECK(cudaSetDevice(device_));
    cudaEvent_t raw = nullptr;
    MLR_NCCL_CUDA_CHECK(cudaEventCreateWithFlags(&raw, cudaEventDisableTiming));
    std::shared_ptr<CUevent_st> done(raw, [](cudaEvent_t e) { cudaEventDestroy(e); });
    MLR_NCCL_CUDA_CHECK(cudaEventRecord(done.get(), stream_));
    const Queued what = queued_;
    return CollectiveWork(std::async(std::launch::deferred, [this, done, what] {
                            MLR_CHECK(comm_ != nullptr,
                                      "dist: rank {}: nccl: waiting for {} #{} after the communicator was aborted by "
                                      "an earlier failure",
                                      rank_, what.collective, what.sequence);
                            MLR_NCCL_CUDA_CHECK(cudaSetDevice(device_));
                            wait_comm(what.collective, what.sequence, what.shape, std::chrono::steady_clock::now(),
                                      done.get());
                            MLR_NCCL_CUDA_CHECK(cudaStreamWaitEvent(mlr::cuda::current_stream(device_), done.get(), 0));
                          }).share());
  }

  void all_reduce(Tensor& t, ReduceOp op) override {
    launch("all_reduce", t, [&] {
      return ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), nccl_dtype(t.dtype()),
                           op == ReduceOp::avg ? ncclAvg : ncclSum, comm_, stream_);
    });
  }
  void reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) override {
    check_same("reduce_scatter", output, input, world_size_, 1);
    launch("reduce_scatter", input, [&] {
      return ncclReduceScatter(input.data_ptr(), output.data_ptr(), static_cast<size_t>(output.numel()),
                               nccl_dtype(input.dtype()), op == ReduceOp::avg ? ncclAvg : ncclSum, comm_, stream_);
    });
  }
  void all_gather(const Tensor& input, Tensor& output) override {
    check_same("all_gather", input, output, world_size_, 1);
    launch("all_gather", input, [&] {
      return ncclAllGather(input.data_ptr(), output.data_ptr(), static_cast<size_t>(input.numel()),
                           nccl_dtype(input.dtype()), comm_, stream_);
    });
  }
  void broadcast(Tensor& t, int root) override {
    MLR_CHECK(root >= 0 && root < world_size_, "dist: rank {}: broadcast from rank {} of a world of {}", rank_, root,
              world_size_);
    launch("broadcast", t, [&] {
      return ncclBroadcast(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), nccl_dtype(t.dtype()), root,
                           comm_, stream_);
    });
  }
  void barrier() override {
    Tensor token = zeros({1}, Device::cuda(device_));
    launch("barrier", token, [&] {
      return ncclAllReduce(token.data_ptr(), token.data_ptr(), 1, ncclFloat32, ncclSum, comm_, stream_);
    });
  }

 private:
  void check(ncclResult_t r, const char* what) {
    MLR_CHECK(r == ncclSuccess, "dist: rank {}: nccl: {} failed: {} ({})", rank_, what, ncclGetErrorString(r),
              ncclGetLastError(comm_));
  }

  // Polls the communicator (and the completion event, when given) until done or the timeout.
  void wait_comm(const char* collective, int64_t seq, const std::string& shape,
                 std::chrono::steady_clock::time_point t0, cudaEvent_t event = nullptr) {
    const auto deadline = t0 + timeout_;
    while (true) {
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      const bool comm_ready = async == ncclSuccess;
      if (async != ncclSuccess && async != ncclInProgress) {
        aborted_ = true;
        throw failure(collective, seq, shape, elapsed(t0),
                      fmt::format("NCCL reports {} ({})", ncclGetErrorString(async), ncclGetLastError(comm_)));
      }
      if (comm_ready) {
        if (event == nullptr) return;
        const cudaError_t q = cudaEventQuery(event);
        if (q == cudaSuccess) return;
        MLR_CHECK(q == cudaErrorNotReady, "dist: rank {}: nccl: {}: cudaEventQuery: {}", rank_, collective,
                  cudaGetErrorString(q));
      }
      if (std::chrono::steady_clock::now() > deadline) {
        aborted_ = true;
        ncclCommAbort(comm_);
        comm_ = nullptr;
        throw failure(collective, seq, shape, elapsed(t0), "timed out; the communicator was aborted");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  static double elapsed(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  template <typename Call>
  void launch(const char* collective, const Tensor& t, Call&& call) {
    MLR_CHECK(comm_ != nullptr, "dist: rank {}: nccl: {} after the communicator was aborted by an earlier failure",
              rank_, collective);
    const int64_t seq = enter(collective, t, Device::cuda(device_));
    const auto t0 = std::chrono::steady_clock::now();
    MLR_NCCL_CUDA_CHECK(cudaSetDevice(device_));
    cudaStream_t compute = mlr::cuda::current_stream(device_);
    MLR_NCCL_CUDA_CHECK(cudaEventRecord(ready_, compute));
    MLR_NCCL_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
    const ncclResult_t r = call();
    if (r != ncclSuccess && r != ncclInProgress) {
      throw failure(collective, seq, describe(t), elapsed(t0),
                    fmt::format("{} ({})", ncclGetErrorString(r), ncclGetLastError(comm_)));
    }
    // A non-blocking communicator may return ncclInProgress before the collective is on the stream:
    // an event recorded now could come before it. It is queued once the communicator's state is
    // ncclSuccess again.
    wait_comm(collective, seq, describe(t), t0);
    if (queueing_) {
      queued_ = {collective, seq, describe(t)};
      return;
    }
    MLR_NCCL_CUDA_CHECK(cudaEventRecord(done_, stream_));
    MLR_NCCL_CUDA_CHECK(cudaStreamWaitEvent(compute, done_, 0));
    wait_comm(collective, seq, describe(t), t0, done_);
  }

  // The last collective of the job being queued by start(), for its wait's errors.
  struct Queued {
    const char* collective = "collective job";
    int64_t sequence = 0;
    std::string shape;
  };

  int device_;
  bool queueing_ = false;
  Queued queued_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr, done_ = nullptr;
  bool aborted_ = false;
};

}  // namespace

bool nccl_available() { return true; }

std::unique_ptr<Communicator> make_nccl_communicator(int rank, int world_size, int device, StoreClient& store,
                                                     const std::string& key_prefix, std::chrono::milliseconds timeout,
                                                     CollectiveObserver observer) {
  return std::make_unique<NcclCommunicator>(rank, world_size, device, store, key_prefix, timeout, std::move(observer));
}

#else

bool nccl_available() { return false; }

std::unique_ptr<Communicator> make_nccl_communicator(int rank, int, int device, StoreClient&, const std::string&,
                                                     std::chrono::milliseconds, CollectiveObserver) {
  throw Error(fmt::format("dist: rank {}: a collective on cuda:{} needs NCCL, and this build has none (configure "
                          "with MLR_CUDA=ON on a machine with the CUDA toolkit's NCCL)",
                          rank, device));
}

#endif

}  // namespace mlr::dist
