// Random tensors from the Philox generator (tensor/philox.h). Element i of a draw depends only on
// (seed, offset, i), so a seed gives the same numbers on the CPU and on CUDA.
#include <cmath>

#include "tensor/dispatch.h"
#include "tensor/tensor.h"

namespace mlr {

namespace {
thread_local GeneratorRecorder* innermost_recorder = nullptr;
}  // namespace

uint64_t Generator::reserve(uint64_t counters) {
  for (GeneratorRecorder* r = innermost_recorder; r; r = r->enclosing_) r->note_draw(state_);
  const uint64_t o = state_->offset;
  state_->offset += counters;
  return o;
}

GeneratorRecorder::GeneratorRecorder() : enclosing_(innermost_recorder) { innermost_recorder = this; }

GeneratorRecorder::~GeneratorRecorder() { innermost_recorder = enclosing_; }

void GeneratorRecorder::note_draw(const std::shared_ptr<GeneratorState>& state) {
  // A segment draws from a handful of generators: a linear scan beats any index.
  for (const Entry& e : entries_)
    if (!e.state.owner_before(state) && !state.owner_before(e.state)) return;
  entries_.push_back({state, *state});
}

GeneratorReplay::GeneratorReplay(const std::vector<GeneratorRecorder::Entry>& recorded) {
  for (const GeneratorRecorder::Entry& e : recorded) {
    std::shared_ptr<GeneratorState> state = e.state.lock();
    if (!state) continue;  // its Generator is gone, so nothing can draw from it
    restore_.emplace_back(state, *state);
    *state = e.at_first_draw;
  }
}

GeneratorReplay::~GeneratorReplay() {
  for (auto& [state, before] : restore_) *state = before;
}

Generator& default_generator() {
  static Generator gen(0);
  return gen;
}

void manual_seed(uint64_t seed) { default_generator().set_state(seed, 0); }

Tensor& uniform_(Tensor& t, double low, double high, Generator& gen) {
  MLR_CHECK(t.is_floating_point(), "uniform_: dtype {} is not floating", dtype_name(t.dtype()));
  MLR_CHECK(low <= high, "uniform_: low {} > high {}", low, high);
  uint64_t n = static_cast<uint64_t>(t.numel());
  uint64_t offset = gen.reserve((n + 3) / 4);
  if (n == 0) return t;
  Tensor dst = t.is_contiguous() ? t : empty(t.shape(), t.options());
  MLR_DISPATCH(t.device(), random_uniform, dst, gen.seed(), offset, low, high);
  if (!dst.shares_storage(t)) t.copy_(dst);
  return t;
}

Tensor& normal_(Tensor& t, double mean, double std, Generator& gen) {
  MLR_CHECK(t.is_floating_point(), "normal_: dtype {} is not floating", dtype_name(t.dtype()));
  MLR_CHECK(std >= 0, "normal_: std {} is negative", std);
  uint64_t n = static_cast<uint64_t>(t.numel());
  uint64_t offset = gen.reserve((n + 1) / 2);
  if (n == 0) return t;
  Tensor dst = t.is_contiguous() ? t : empty(t.shape(), t.options());
  MLR_DISPATCH(t.device(), random_normal, dst, gen.seed(), offset, mean, std);
  if (!dst.shares_storage(t)) t.copy_(dst);
  return t;
}

Tensor rand(const Shape& shape, Generator& gen, TensorOptions o) {
  Tensor t = empty(shape, o);
  return uniform_(t, 0.0, 1.0, gen);
}

Tensor randn(const Shape& shape, Generator& gen, TensorOptions o) {
  Tensor t = empty(shape, o);
  return normal_(t, 0.0, 1.0, gen);
}

Tensor& kaiming_uniform_(Tensor& t, double a, Generator& gen) {
  MLR_CHECK(t.dim() >= 2, "kaiming_uniform_: needs at least 2 dimensions to compute fan_in, got shape {}",
            shape_str(t.shape()));
  int64_t fan_in = t.size(1);
  for (int64_t d = 2; d < t.dim(); ++d) fan_in *= t.size(d);
  MLR_CHECK(fan_in > 0, "kaiming_uniform_: fan_in is 0 for shape {}", shape_str(t.shape()));
  double gain = std::sqrt(2.0 / (1.0 + a * a));
  double bound = gain * std::sqrt(3.0 / static_cast<double>(fan_in));
  return uniform_(t, -bound, bound, gen);
}

}  // namespace mlr
