// Tensor: a cheap handle onto shared storage, with shape, strides (in elements), offset (in
// elements), dtype and device. Views (view, permute, narrow, expand, ...) share storage: a write
// through a view is seen by its base. A default-constructed Tensor is "undefined".
//
// Tensors have no notion of gradients; autograd/ wraps them.
#pragma once

#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tensor/device.h"
#include "tensor/dtype.h"

namespace mlr {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& shape);  // "[2, 3]"
int64_t shape_numel(const Shape& shape);
Shape contiguous_strides(const Shape& shape);
// Wraps a possibly negative dimension index into [0, ndim); throws naming `op` if out of range.
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op);
// Broadcast two shapes numpy-style; throws naming `op` when they are incompatible.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

struct TensorOptions {
  DType dtype = DType::f32;
  Device device = Device::cpu();
  TensorOptions() = default;
  TensorOptions(DType t) : dtype(t) {}                 // NOLINT: implicit for brevity: zeros(s, DType::f64)
  TensorOptions(Device d) : device(d) {}               // NOLINT
  TensorOptions(DType t, Device d) : dtype(t), device(d) {}
};

class Tensor {
 public:
  Tensor() = default;
  Tensor(std::shared_ptr<Storage> storage, Shape shape, Shape strides, int64_t offset, DType dtype);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t offset() const { return offset_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const;
  int64_t stride(int64_t d) const;
  int64_t numel() const { return shape_numel(shape_); }
  DType dtype() const { return dtype_; }
  Device device() const;
  size_t element_size() const { return dtype_size(dtype_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * element_size(); }
  bool is_contiguous() const;
  bool is_floating_point() const { return is_floating(dtype_); }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  bool shares_storage(const Tensor& other) const { return storage_ && storage_ == other.storage_; }
  TensorOptions options() const { return {dtype_, device()}; }

  // Address of the first element (storage base + offset).
  void* data_ptr() const;
  // Typed pointer; throws if T is not the host type of dtype().
  template <typename T> T* data() const {
    MLR_CHECK(dtype_of<T>::value == dtype_, "data<{}>(): tensor has dtype {}", dtype_name(dtype_of<T>::value),
              dtype_name(dtype_));
    return static_cast<T*>(data_ptr());
  }
  // The single element of a one-element tensor, converted to T (copied from the device if needed).
  template <typename T> T item() const;
  // All elements in row-major order, converted to T, on the host.
  template <typename T> std::vector<T> to_vector() const;

  // ---- views: share storage ----
  Tensor view(Shape shape) const;      // one dimension may be -1; needs compatible strides
  Tensor reshape(Shape shape) const;   // a view when possible, else a contiguous copy
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor permute(const std::vector<int64_t>& order) const;
  Tensor transpose(int64_t dim0, int64_t dim1) const;
  Tensor t() const;                    // 2-D transpose
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;  // python-like bounds
  Tensor select(int64_t dim, int64_t index) const;  // drops the dimension
  Tensor expand(Shape shape) const;    // -1 keeps a size; new leading dimensions allowed
  Tensor broadcast_to(const Shape& shape) const { return expand(shape); }
  Tensor squeeze(int64_t dim) const;
  Tensor squeeze() const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor as_strided(Shape shape, Shape strides, int64_t offset) const;

  // ---- copies ----
  Tensor contiguous() const;  // this if already contiguous
  Tensor clone() const;       // always a fresh contiguous copy
  Tensor to(DType dtype) const;      // this if already that dtype
  Tensor to(Device device) const;    // this if already on that device
  Tensor to(Device device, DType dtype) const;
  Tensor cpu() const { return to(Device::cpu()); }
  Tensor cuda(int index = 0) const { return to(Device::cuda(index)); }

  // ---- in place ----
  Tensor& copy_(const Tensor& src);  // src broadcast to this shape; dtype and device converted
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }

  // Readable multi-line printing: values (summarised past 1000 elements), then shape, dtype, device.
  std::string to_string() const;

 private:
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Shape strides_;
  int64_t offset_ = 0;
  DType dtype_ = DType::f32;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// ---- creation ----
Tensor empty(const Shape& shape, TensorOptions options = {});
Tensor zeros(const Shape& shape, TensorOptions options = {});
Tensor ones(const Shape& shape, TensorOptions options = {});
Tensor full(const Shape& shape, double value, TensorOptions options = {});
Tensor scalar_tensor(double value, TensorOptions options = {});  // 0-dimensional
Tensor arange(double start, double end, double step = 1.0, TensorOptions options = {DType::i64});
Tensor arange(int64_t end, TensorOptions options = {DType::i64});
Tensor empty_like(const Tensor& t);
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);

// From host values; the dtype is that of T unless options says otherwise (values are converted).
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, TensorOptions options = {dtype_of<T>::value});
// 1-D tensor from a braced list: tensor({1.f, 2.f, 3.f})
template <typename T>
Tensor tensor(std::initializer_list<T> values, TensorOptions options = {dtype_of<T>::value}) {
  return from_vector(std::vector<T>(values), {static_cast<int64_t>(values.size())}, options);
}

// ---- random numbers: Philox4x32-10, counter-based, so CPU and CUDA give identical numbers ----
// A Generator is (seed, offset). A call that draws n numbers consumes ceil(n/4) counters for
// uniform and ceil(n/2) for normal, and element i of the output depends only on (seed, offset, i),
// not on the device or the number of threads.
// The (seed, offset) pair lives in a shared GeneratorState that the Generator owns: a
// GeneratorRecorder (below) holds it weakly, so a record never dangles when its Generator is
// destroyed. A copy is an independent stream that starts where the original stands; assignment
// copies the values and keeps the target's identity.
struct GeneratorState {
  uint64_t seed = 0;
  uint64_t offset = 0;
};

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : state_(std::make_shared<GeneratorState>(GeneratorState{seed, 0})) {}
  Generator(const Generator& other) : state_(std::make_shared<GeneratorState>(*other.state_)) {}
  Generator& operator=(const Generator& other) {
    *state_ = *other.state_;
    return *this;
  }
  uint64_t seed() const { return state_->seed; }
  uint64_t offset() const { return state_->offset; }
  void set_state(uint64_t seed, uint64_t offset) { *state_ = {seed, offset}; }
  // Returns the current offset and advances it by `counters`; the recorders active on this thread
  // see the state before the draw.
  uint64_t reserve(uint64_t counters);

 private:
  std::shared_ptr<GeneratorState> state_;
};

// Records, while alive, the state that each Generator had when it first drew on this thread
// (recorders nest: every active one sees every draw). Activation checkpointing uses it to replay
// a segment's random numbers exactly, whichever generators the segment draws from.
class GeneratorRecorder {
 public:
  struct Entry {
    std::weak_ptr<GeneratorState> state;  // expired when the Generator is gone
    GeneratorState at_first_draw;
  };
  GeneratorRecorder();
  ~GeneratorRecorder();
  GeneratorRecorder(const GeneratorRecorder&) = delete;
  GeneratorRecorder& operator=(const GeneratorRecorder&) = delete;
  // In order of first draw.
  const std::vector<Entry>& entries() const { return entries_; }
  void note_draw(const std::shared_ptr<GeneratorState>& state);

 private:
  friend class Generator;  // walks the chain of active recorders
  std::vector<Entry> entries_;
  GeneratorRecorder* enclosing_;
};

// Sets every recorded generator that still exists to its state at first draw; the destructor
// puts each back to the state it had when the replay began.
class GeneratorReplay {
 public:
  explicit GeneratorReplay(const std::vector<GeneratorRecorder::Entry>& recorded);
  ~GeneratorReplay();
  GeneratorReplay(const GeneratorReplay&) = delete;
  GeneratorReplay& operator=(const GeneratorReplay&) = delete;

 private:
  std::vector<std::pair<std::shared_ptr<GeneratorState>, GeneratorState>> restore_;
};

Generator& default_generator();
void manual_seed(uint64_t seed);

Tensor rand(const Shape& shape, Generator& gen, TensorOptions options = {});   // U[0, 1)
Tensor randn(const Shape& shape, Generator& gen, TensorOptions options = {});  // N(0, 1)
Tensor& uniform_(Tensor& t, double low, double high, Generator& gen);
Tensor& normal_(Tensor& t, double mean, double std, Generator& gen);
// Kaiming-uniform as torch.nn.init.kaiming_uniform_ (leaky_relu gain, fan_in mode):
//   fan_in = size(1) * prod(size(2:)),  gain = sqrt(2 / (1 + a^2)),  bound = gain * sqrt(3 / fan_in)
Tensor& kaiming_uniform_(Tensor& t, double a, Generator& gen);

}  // namespace mlr
