// Checkpointable state of the training machinery (optimizer, LR schedule, loss scaler, gradient
// accumulation): named tensors plus a JSON object of scalars. A training checkpoint stores the
// tensors in a safetensors file and the JSON next to it; loading hands both back unchanged.
#pragma once

#include <map>
#include <string>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "tensor/tensor.h"

namespace mlr {

struct TrainingState {
  std::map<std::string, Tensor> tensors;
  nlohmann::json scalars = nlohmann::json::object();
};

namespace detail {

// Reads scalars[key] as T, throwing mlr::Error naming `what` (the owner, e.g. "AdamW state") and
// the key when it is missing or of the wrong JSON type.
template <typename T>
T json_field(const nlohmann::json& scalars, const char* key, const char* what) {
  MLR_CHECK(scalars.is_object(), "{}: expected a JSON object, got {}", what, scalars.type_name());
  auto it = scalars.find(key);
  MLR_CHECK(it != scalars.end(), "{}: missing field \"{}\"", what, key);
  // The JSON library casts a number like 2.5 or 1e300 to an integer (truncating, or undefined).
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
    MLR_CHECK(!it->is_number_float(), "{}: field \"{}\" is {}, expected an integer", what, key, it->dump());
  try {
    return it->template get<T>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: field \"{}\" has the wrong type ({}): {}", what, key, it->type_name(), e.what()));
  }
}

}  // namespace detail
}  // namespace mlr
