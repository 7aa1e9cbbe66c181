// NCCL for the emulated CUDA build (cmake -DMLR_CUDA_EMULATION=ON, tensor/kernels/cuda/emulator.h):
// the part of NCCL's API that dist/nccl_communicator.cpp calls, over Gloo on the emulated devices'
// memory (host memory). With it the NCCL communicator itself (its streams, events, completion
// polls and error paths, against the emulated CUDA runtime) and every CUDA-tensor path of data
// parallel training run as separate processes on a machine without a GPU, in CI.
//
// - The unique id names a small rendezvous store (dist/store.h) that the process creating the id
//   hosts on a free local port (kept until the process exits); the ranks connect Gloo's full mesh
//   through it, so every communicator made from a new id has its own connections. Ranks are on
//   one machine (127.0.0.1), as every emulated run is.
// - A collective runs when it is called: emulated streams are synchronous (emulated_cudart.cpp),
//   so by the time NCCL would have enqueued it, its inputs are final, and the work after it on the
//   stream sees its result.
// - A Gloo failure (a peer's connection closed, Gloo's timeout) becomes the communicator's
//   asynchronous error, as a failure inside NCCL's kernels or proxy thread would; the call itself
//   returns ncclSuccess, so the caller's polling of ncclCommGetAsyncError is what finds it.
// What it does not check is NCCL itself: kernels, transports, non-blocking progress (ncclInProgress
// never happens here).
#if defined(MLR_CUDA_EMULATION) && defined(MLR_NCCL)

#include <nccl.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "base/error.h"
#include "dist/gloo_communicator.h"
#include "dist/store.h"
#include "tensor/dtype.h"

struct ncclComm {
  int rank = 0, size = 1;
  std::unique_ptr<mlr::dist::StoreClient> store;
  std::shared_ptr<gloo::Context> context;
  ncclResult_t async_error = ncclSuccess;
  std::string last_error;
};

namespace {

using mlr::DType;

constexpr const char* kIdTag = "mlr-emulated-nccl";

std::chrono::milliseconds emulated_timeout() {
  double seconds = 300;
  if (const char* v = std::getenv("MLR_DIST_TIMEOUT")) seconds = std::atof(v);
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

bool dtype_of(ncclDataType_t t, DType& dtype, size_t& bytes) {
  switch (t) {
    case ncclFloat32: dtype = DType::f32; bytes = 4; return true;
    case ncclFloat64: dtype = DType::f64; bytes = 8; return true;
    case ncclBfloat16: dtype = DType::bf16; bytes = 2; return true;
    case ncclFloat16: dtype = DType::f16; bytes = 2; return true;
    case ncclInt32: dtype = DType::i32; bytes = 4; return true;
    case ncclInt64: dtype = DType::i64; bytes = 8; return true;
    case ncclUint8: dtype = DType::boolean; bytes = 1; return true;
    default: return false;
  }
}

// p[i] <- p[i] / size, in Compute (bf16 and f16 in f32, as NCCL divides them).
template <typename Value, typename Compute>
void divide_as(void* data, size_t n, int size) {
  auto* p = static_cast<Value*>(data);
  for (size_t i = 0; i < n; ++i) p[i] = Value(static_cast<Compute>(p[i]) / static_cast<Compute>(size));
}

// data <- data / size, for ncclAvg.
bool divide(void* data, size_t n, DType dtype, int size) {
  switch (dtype) {
    case DType::f32: divide_as<float, float>(data, n, size); return true;
    case DType::f64: divide_as<double, double>(data, n, size); return true;
    case DType::bf16: divide_as<mlr::bf16, float>(data, n, size); return true;
    case DType::f16: divide_as<mlr::f16, float>(data, n, size); return true;
    default: return false;
  }
}

// Runs a collective's body; a failure becomes the communicator's asynchronous error.
template <typename Body>
ncclResult_t run(ncclComm_t comm, const char* what, Body&& body) {
  if (comm == nullptr) return ncclInvalidArgument;
  if (comm->async_error != ncclSuccess) return comm->async_error;
  try {
    body();
  } catch (const std::exception& e) {
    comm->async_error = ncclRemoteError;
    comm->last_error = fmt::format("emulated NCCL: {} on rank {}: {}", what, comm->rank, e.what());
  }
  return ncclSuccess;
}

// A reduction's arguments: a type we emulate and sum or avg.
bool reduction_of(ncclDataType_t datatype, ncclRedOp_t op, DType& dtype, size_t& bytes) {
  return dtype_of(datatype, dtype, bytes) && (op == ncclSum || op == ncclAvg);
}

void all_reduce_in_place(ncclComm_t comm, void* data, size_t count, DType dtype, ncclRedOp_t op) {
  mlr::dist::gloo_all_reduce_sum(comm->context, data, count, dtype, emulated_timeout());
  if (op == ncclAvg) MLR_CHECK(divide(data, count, dtype, comm->size), "emulated NCCL: ncclAvg of an integer type");
}

}  // namespace

extern "C" {

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (id == nullptr) return ncclInvalidArgument;
  // Leaked on purpose: it serves the ranks' connection step for as long as this process lives.
  auto* server = new mlr::dist::StoreServer(0);
  std::memset(id->internal, 0, sizeof id->internal);
  const std::string text = fmt::format("{} 127.0.0.1 {}", kIdTag, server->port());
  std::memcpy(id->internal, text.data(), std::min(text.size(), sizeof id->internal - 1));
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank, ncclConfig_t*) {
  if (comm == nullptr || nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
  char tag[32] = {}, host[64] = {};
  int port = 0;
  std::string text(id.internal, strnlen(id.internal, sizeof id.internal));
  if (std::sscanf(text.c_str(), "%31s %63s %d", tag, host, &port) != 3 || std::string(tag) != kIdTag)
    return ncclInvalidArgument;
  auto c = std::make_unique<ncclComm>();
  c->rank = rank;
  c->size = nranks;
  try {
    c->store = std::make_unique<mlr::dist::StoreClient>(host, port, emulated_timeout(),
                                                        fmt::format("emulated NCCL rank {}", rank));
    c->context = mlr::dist::connect_gloo_mesh(rank, nranks, *c->store, "emulated-nccl/",
                                              mlr::dist::GlooTransport{"127.0.0.1", ""}, emulated_timeout());
  } catch (const std::exception& e) {
    c->async_error = ncclSystemError;
    c->last_error = fmt::format("emulated NCCL: connecting rank {} of {}: {}", rank, nranks, e.what());
  }
  *comm = c.release();
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* async_error) {
  if (comm == nullptr || async_error == nullptr) return ncclInvalidArgument;
  *async_error = comm->async_error;
  return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) { return comm == nullptr ? ncclInvalidArgument : ncclSuccess; }

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  delete comm;
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t comm) { return comm != nullptr ? comm->last_error.c_str() : ""; }

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t) {
  DType dtype;
  size_t bytes;
  if (!reduction_of(datatype, op, dtype, bytes)) return ncclInvalidArgument;
  return run(comm, "ncclAllReduce", [&] {
    if (sendbuff != recvbuff) std::memcpy(recvbuff, sendbuff, count * bytes);
    all_reduce_in_place(comm, recvbuff, count, dtype, op);
  });
}

ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount, ncclDataType_t datatype,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t) {
  DType dtype;
  size_t bytes;
  if (!reduction_of(datatype, op, dtype, bytes)) return ncclInvalidArgument;
  return run(comm, "ncclReduceScatter", [&] {
    const size_t chunk = recvcount * bytes;
    std::vector<char> all(chunk * static_cast<size_t>(comm->size));
    std::memcpy(all.data(), sendbuff, all.size());
    all_reduce_in_place(comm, all.data(), recvcount * static_cast<size_t>(comm->size), dtype, op);
    std::memcpy(recvbuff, all.data() + chunk * static_cast<size_t>(comm->rank), chunk);
  });
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t) {
  DType dtype;
  size_t bytes;
  if (!dtype_of(datatype, dtype, bytes)) return ncclInvalidArgument;
  return run(comm, "ncclAllGather", [&] {
    // NCCL allows the input to be this rank's chunk of the output; Gloo gets a copy then.
    const std::vector<char> input(static_cast<const char*>(sendbuff), static_cast<const char*>(sendbuff) + sendcount * bytes);
    mlr::dist::gloo_all_gather(comm->context, input.data(), recvbuff, input.size(), emulated_timeout());
  });
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t) {
  DType dtype;
  size_t bytes;
  if (!dtype_of(datatype, dtype, bytes) || comm == nullptr || root < 0 || root >= comm->size)
    return ncclInvalidArgument;
  return run(comm, "ncclBroadcast", [&] {
    if (comm->rank == root && sendbuff != recvbuff) std::memcpy(recvbuff, sendbuff, count * bytes);
    mlr::dist::gloo_broadcast(comm->context, recvbuff, count * bytes, root, emulated_timeout());
  });
}

}  // extern "C"

#endif  // MLR_CUDA_EMULATION && MLR_NCCL
