// Tensor handle: shape utilities, views, copies, creation and printing.
#include "tensor/tensor.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <cmath>
#include <ostream>
#include <sstream>

#include "tensor/dispatch.h"

namespace mlr {

// ---------------------------------------------------------------- shape utilities

std::string shape_str(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    strides[d] = s;
    s *= std::max<int64_t>(shape[d], 1);
  }
  return strides;
}

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  int64_t n = std::max<int64_t>(ndim, 1);  // a 0-d tensor accepts dim 0 / -1
  MLR_CHECK(dim >= -n && dim < n, "{}: dimension {} out of range for a {}-d tensor", op, dim, ndim);
  return dim < 0 ? dim + n : dim;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    MLR_CHECK(da == db || da == 1 || db == 1, "{}: shapes {} and {} cannot be broadcast (dimension {}: {} vs {})", op,
              shape_str(a), shape_str(b), i, da, db);
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// ---------------------------------------------------------------- handle

Tensor::Tensor(std::shared_ptr<Storage> storage, Shape shape, Shape strides, int64_t offset, DType dtype)
    : storage_(std::move(storage)), shape_(std::move(shape)), strides_(std::move(strides)), offset_(offset),
      dtype_(dtype) {
  MLR_CHECK(shape_.size() == strides_.size(), "tensor: shape {} and strides {} differ in rank", shape_str(shape_),
            shape_str(strides_));
  for (int64_t s : shape_) MLR_CHECK(s >= 0, "tensor: negative size in shape {}", shape_str(shape_));
}

int64_t Tensor::size(int64_t d) const { return shape_[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return strides_[wrap_dim(d, dim(), "stride")]; }
Device Tensor::device() const { return storage_ ? storage_->device() : Device::cpu(); }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t d = dim() - 1; d >= 0; --d) {
    if (shape_[d] == 1) continue;
    if (strides_[d] != expected) return false;
    expected *= shape_[d];
  }
  return true;
}

void* Tensor::data_ptr() const {
  MLR_CHECK(defined(), "data_ptr(): tensor is undefined");
  return static_cast<char*>(storage_->data()) + offset_ * static_cast<int64_t>(element_size());
}

template <typename T>
T Tensor::item() const {
  MLR_CHECK(numel() == 1, "item(): tensor of shape {} has {} elements, expected 1", shape_str(shape_), numel());
  return to_vector<T>()[0];
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  MLR_CHECK(defined(), "to_vector(): tensor is undefined");
  Tensor host = to(Device::cpu(), dtype_of<T>::value).contiguous();
  const T* p = host.data<T>();
  return std::vector<T>(p, p + host.numel());
}

// ---------------------------------------------------------------- views

namespace {
Shape infer_shape(Shape shape, int64_t numel, const char* op, const Shape& from) {
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      MLR_CHECK(infer < 0, "{}: more than one -1 in shape {}", op, shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      MLR_CHECK(shape[i] >= 0, "{}: invalid size {} in shape {}", op, shape[i], shape_str(shape));
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    MLR_CHECK(known != 0 && numel % known == 0, "{}: cannot view shape {} ({} elements) as {}", op, shape_str(from),
              numel, shape_str(shape));
    shape[infer] = numel / known;
  }
  MLR_CHECK(shape_numel(shape) == numel, "{}: cannot view shape {} ({} elements) as {} ({} elements)", op,
            shape_str(from), numel, shape_str(shape), shape_numel(shape));
  return shape;
}

// Strides for viewing (shape, strides) as new_shape without a copy, or empty if impossible.
// Each run of old dimensions that is contiguous in memory can be re-split freely.
std::optional<Shape> view_strides(const Shape& shape, const Shape& strides, const Shape& new_shape) {
  Shape new_strides(new_shape.size());
  if (shape_numel(shape) == 0 || shape.empty()) {
    return contiguous_strides(new_shape);
  }
  int64_t view_d = static_cast<int64_t>(new_shape.size()) - 1;
  int64_t chunk_base_stride = strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    tensor_numel *= shape[d];
    if (d == 0 || (shape[d - 1] != 1 && strides[d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d] == 1)) {
        new_strides[view_d] = view_numel * chunk_base_stride;
        view_numel *= new_shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (d > 0) {
        chunk_base_stride = strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return new_strides;
}
}  // namespace

Tensor Tensor::view(Shape shape) const {
  shape = infer_shape(std::move(shape), numel(), "view", shape_);
  auto strides = view_strides(shape_, strides_, shape);
  MLR_CHECK(strides.has_value(), "view: shape {} with strides {} cannot be viewed as {} without a copy (use reshape)",
            shape_str(shape_), shape_str(strides_), shape_str(shape));
  return Tensor(storage_, shape, *strides, offset_, dtype_);
}

Tensor Tensor::reshape(Shape shape) const {
  shape = infer_shape(std::move(shape), numel(), "reshape", shape_);
  if (auto strides = view_strides(shape_, strides_, shape)) return Tensor(storage_, shape, *strides, offset_, dtype_);
  return contiguous().view(shape);
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  if (dim() == 0) return reshape({1});
  start_dim = wrap_dim(start_dim, dim(), "flatten");
  end_dim = wrap_dim(end_dim, dim(), "flatten");
  MLR_CHECK(start_dim <= end_dim, "flatten: start_dim {} after end_dim {}", start_dim, end_dim);
  Shape s(shape_.begin(), shape_.begin() + start_dim);
  int64_t n = 1;
  for (int64_t d = start_dim; d <= end_dim; ++d) n *= shape_[d];
  s.push_back(n);
  s.insert(s.end(), shape_.begin() + end_dim + 1, shape_.end());
  return reshape(s);
}

Tensor Tensor::permute(const std::vector<int64_t>& order) const {
  MLR_CHECK(static_cast<int64_t>(order.size()) == dim(), "permute: order [{}] has {} entries for a {}-d tensor",
            fmt::join(order, ", "), order.size(), dim());
  Shape s(dim()), st(dim());
  std::vector<bool> seen(dim(), false);
  for (int64_t i = 0; i < dim(); ++i) {
    int64_t d = wrap_dim(order[i], dim(), "permute");
    MLR_CHECK(!seen[d], "permute: dimension {} repeated in [{}]", d, fmt::join(order, ", "));
    seen[d] = true;
    s[i] = shape_[d];
    st[i] = strides_[d];
  }
  return Tensor(storage_, s, st, offset_, dtype_);
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  d0 = wrap_dim(d0, dim(), "transpose");
  d1 = wrap_dim(d1, dim(), "transpose");
  Shape s = shape_, st = strides_;
  std::swap(s[d0], s[d1]);
  std::swap(st[d0], st[d1]);
  return Tensor(storage_, s, st, offset_, dtype_);
}

Tensor Tensor::t() const {
  MLR_CHECK(dim() == 2, "t(): expected a 2-d tensor, got shape {}", shape_str(shape_));
  return transpose(0, 1);
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  d = wrap_dim(d, dim(), "narrow");
  MLR_CHECK(start >= 0 && length >= 0 && start + length <= shape_[d],
            "narrow: range [{}, {}) out of bounds for dimension {} of size {} (shape {})", start, start + length, d,
            shape_[d], shape_str(shape_));
  Shape s = shape_;
  s[d] = length;
  return Tensor(storage_, s, strides_, offset_ + start * strides_[d], dtype_);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, dim(), "slice");
  MLR_CHECK(step > 0, "slice: step must be positive, got {}", step);
  int64_t n = shape_[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape s = shape_, st = strides_;
  s[d] = (end - start + step - 1) / step;
  st[d] = strides_[d] * step;
  return Tensor(storage_, s, st, offset_ + start * strides_[d], dtype_);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  int64_t n = shape_[d];
  MLR_CHECK(index >= -n && index < n, "select: index {} out of range for dimension {} of size {}", index, d, n);
  if (index < 0) index += n;
  Shape s = shape_, st = strides_;
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  return Tensor(storage_, s, st, offset_ + index * strides_[d], dtype_);
}

Tensor Tensor::expand(Shape shape) const {
  MLR_CHECK(shape.size() >= shape_.size(), "expand: cannot expand shape {} to fewer dimensions {}", shape_str(shape_),
            shape_str(shape));
  size_t lead = shape.size() - shape_.size();
  Shape st(shape.size(), 0);
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      MLR_CHECK(shape[i] >= 0, "expand: size -1 not allowed for a new leading dimension in {}", shape_str(shape));
      continue;
    }
    int64_t old = shape_[i - lead];
    if (shape[i] == -1) shape[i] = old;
    if (old == shape[i]) {
      st[i] = strides_[i - lead];
    } else {
      MLR_CHECK(old == 1, "expand: shape {} cannot be expanded to {} (dimension {}: {} is not 1)", shape_str(shape_),
                shape_str(shape), i, old);
      st[i] = 0;
    }
  }
  return Tensor(storage_, shape, st, offset_, dtype_);
}

Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, dim(), "squeeze");
  if (dim() == 0 || shape_[d] != 1) return *this;
  Shape s = shape_, st = strides_;
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  return Tensor(storage_, s, st, offset_, dtype_);
}

Tensor Tensor::squeeze() const {
  Shape s, st;
  for (int64_t d = 0; d < dim(); ++d)
    if (shape_[d] != 1) {
      s.push_back(shape_[d]);
      st.push_back(strides_[d]);
    }
  return Tensor(storage_, s, st, offset_, dtype_);
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape s = shape_, st = strides_;
  int64_t stride = d < dim() ? strides_[d] * shape_[d] : 1;
  s.insert(s.begin() + d, 1);
  st.insert(st.begin() + d, stride);
  return Tensor(storage_, s, st, offset_, dtype_);
}

Tensor Tensor::as_strided(Shape shape, Shape strides, int64_t offset) const {
  MLR_CHECK(shape.size() == strides.size(), "as_strided: shape {} and strides {} differ in rank", shape_str(shape),
            shape_str(strides));
  // Bounds: the furthest element must lie inside the storage.
  int64_t last = offset;
  for (size_t i = 0; i < shape.size(); ++i) {
    MLR_CHECK(strides[i] >= 0, "as_strided: negative stride in {}", shape_str(strides));
    if (shape[i] == 0) return Tensor(storage_, shape, strides, offset, dtype_);
    last += (shape[i] - 1) * strides[i];
  }
  MLR_CHECK(offset >= 0 && (last + 1) * static_cast<int64_t>(element_size()) <=
                               static_cast<int64_t>(storage_->nbytes()),
            "as_strided: view of shape {} strides {} offset {} reaches past the storage of {} bytes",
            shape_str(shape), shape_str(strides), offset, storage_->nbytes());
  return Tensor(storage_, shape, strides, offset, dtype_);
}

// ---------------------------------------------------------------- copies

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape_, options());
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(DType dtype) const { return to(device(), dtype); }
Tensor Tensor::to(Device device) const { return to(device, dtype_); }

Tensor Tensor::to(Device dev, DType dtype) const {
  MLR_CHECK(defined(), "to(): tensor is undefined");
  if (dev == device() && dtype == dtype_) return *this;
  Tensor out = empty(shape_, {dtype, dev});
  out.copy_(*this);
  return out;
}

Tensor& Tensor::copy_(const Tensor& src) {
  MLR_CHECK(defined() && src.defined(), "copy_: undefined tensor");
  Tensor s = src.expand(shape_);
  if (numel() == 0) return *this;
  if (s.device() == device()) {
    MLR_DISPATCH(device(), copy, *this, s);
    return *this;
  }
  // Across devices: make the source contiguous in the destination's dtype on its own device, move
  // the bytes, then copy into this (possibly strided) destination on its device.
  Tensor staged = empty(shape_, {dtype_, s.device()});
  MLR_DISPATCH(s.device(), copy, staged, s);
  if (is_contiguous()) {
    copy_bytes(data_ptr(), device(), staged.data_ptr(), staged.device(), nbytes());
  } else {
    Tensor landed = empty(shape_, {dtype_, device()});
    copy_bytes(landed.data_ptr(), device(), staged.data_ptr(), staged.device(), nbytes());
    MLR_DISPATCH(device(), copy, *this, landed);
  }
  return *this;
}

Tensor& Tensor::fill_(double value) {
  MLR_CHECK(defined(), "fill_: tensor is undefined");
  if (numel() > 0) MLR_DISPATCH(device(), fill, *this, value);
  return *this;
}

// ---------------------------------------------------------------- creation

Tensor empty(const Shape& shape, TensorOptions o) {
  for (int64_t s : shape) MLR_CHECK(s >= 0, "empty: negative size in shape {}", shape_str(shape));
  size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(o.dtype);
  return Tensor(std::make_shared<Storage>(nbytes, o.device), shape, contiguous_strides(shape), 0, o.dtype);
}
Tensor zeros(const Shape& shape, TensorOptions o) { return full(shape, 0.0, o); }
Tensor ones(const Shape& shape, TensorOptions o) { return full(shape, 1.0, o); }
Tensor full(const Shape& shape, double value, TensorOptions o) {
  Tensor t = empty(shape, o);
  t.fill_(value);
  return t;
}
Tensor scalar_tensor(double value, TensorOptions o) { return full({}, value, o); }
Tensor empty_like(const Tensor& t) { return empty(t.shape(), t.options()); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.options()); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), t.options()); }

Tensor arange(double start, double end, double step, TensorOptions o) {
  MLR_CHECK(step != 0, "arange: step must be non-zero");
  MLR_CHECK((end - start) / step >= 0 || start == end, "arange: step {} does not lead from {} to {}", step, start, end);
  int64_t n = static_cast<int64_t>(std::ceil((end - start) / step));
  std::vector<double> v(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) v[i] = start + static_cast<double>(i) * step;
  return from_vector(v, {n}, o);
}
Tensor arange(int64_t end, TensorOptions o) { return arange(0.0, static_cast<double>(end), 1.0, o); }

template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, TensorOptions o) {
  MLR_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape),
            "from_vector: {} values do not fill shape {} ({} elements)", values.size(), shape_str(shape),
            shape_numel(shape));
  Tensor host = empty(shape, {dtype_of<T>::value, Device::cpu()});
  if (!values.empty()) {
    if constexpr (std::is_same_v<T, bool>) {
      bool* p = host.data<bool>();
      for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
    } else {
      std::memcpy(host.data_ptr(), values.data(), values.size() * sizeof(T));
    }
  }
  return host.to(o.device, o.dtype);
}

#define MLR_INSTANTIATE(T)                                                                  \
  template T Tensor::item<T>() const;                                                       \
  template std::vector<T> Tensor::to_vector<T>() const;                                     \
  template Tensor from_vector<T>(const std::vector<T>&, const Shape&, TensorOptions);
MLR_INSTANTIATE(float)
MLR_INSTANTIATE(double)
MLR_INSTANTIATE(bf16)
MLR_INSTANTIATE(f16)
MLR_INSTANTIATE(int32_t)
MLR_INSTANTIATE(int64_t)
MLR_INSTANTIATE(bool)
#undef MLR_INSTANTIATE

// ---------------------------------------------------------------- printing

namespace {
std::string format_value(double v, DType t) {
  if (t == DType::boolean) return v != 0 ? "true" : "false";
  if (is_integral(t)) return fmt::format("{}", static_cast<int64_t>(v));
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  double a = std::fabs(v);
  if (a != 0 && (a >= 1e5 || a < 1e-4)) return fmt::format("{:.4e}", v);
  return fmt::format("{:.4f}", v);
}

void print_rec(std::ostringstream& os, const std::vector<double>& vals, const Shape& shape, const Shape& strides,
               size_t d, int64_t base, DType t, int indent, bool summarise) {
  if (d == shape.size()) {
    os << format_value(vals[base], t);
    return;
  }
  const int64_t n = shape[d];
  const int64_t edge = 3;
  os << "[";
  for (int64_t i = 0; i < n; ++i) {
    if (summarise && n > 2 * edge && i == edge) {
      os << (d + 1 == shape.size() ? "..., " : "...,\n" + std::string(indent + 1, ' '));
      i = n - edge;
    }
    print_rec(os, vals, shape, strides, d + 1, base + i * strides[d], t, indent + 1, summarise);
    if (i + 1 < n) os << (d + 1 == shape.size() ? ", " : ",\n" + std::string(indent + 1, ' '));
  }
  os << "]";
}
}  // namespace

std::string Tensor::to_string() const {
  if (!defined()) return "tensor(undefined)";
  std::vector<double> vals = to_vector<double>();
  std::ostringstream os;
  os << "tensor(";
  print_rec(os, vals, shape_, contiguous_strides(shape_), 0, 0, dtype_, 7, numel() > 1000);
  os << ", shape=" << shape_str(shape_) << ", dtype=" << dtype_name(dtype_) << ", device=" << device().str() << ")";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.to_string(); }

}  // namespace mlr
