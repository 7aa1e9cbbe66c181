// mlr::Error: the one exception type of the library. Every check that fails throws it with a
// message that names the operation and the values at fault, e.g.
//   mlr: matmul: shapes [2, 3] and [4, 5] do not match (inner dimensions 3 and 4)
// It lives in base/ so that the layer below tensor/ reports errors the same way.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stdexcept>
#include <string>

namespace mlr {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error("mlr: " + message) {}
  // what() without its "mlr: ", for nesting it in another Error's message.
  std::string message() const { return std::string(what()).substr(5); }
};

}  // namespace mlr

// MLR_CHECK(cond, "fmt string", args...): throw mlr::Error with the formatted message if !cond.
#define MLR_CHECK(cond, ...)                                  \
  do {                                                        \
    if (!(cond)) throw ::mlr::Error(::fmt::format(__VA_ARGS__)); \
  } while (0)
