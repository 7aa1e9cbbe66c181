// Learning-rate schedules: constant, linear and cosine decay, each after a linear warmup, with a
// floor. `step` is the 0-based index of the optimizer update about to be made, so update s uses
// lr(s), as transformers' get_*_schedule_with_warmup do through torch's LambdaLR:
//
//   W = warmup_steps, T = total_steps, r = min_lr_ratio
//   warmup (s < W):  factor = s / W                               (0 at the first update)
//   after warmup:    p = clamp((s - W) / max(1, T - W), 0, 1)       (progress of the decay)
//     constant:      factor = 1
//     linear:        factor = r + (1 - r) * (1 - p)
//     cosine:        factor = r + (1 - r) * 0.5 * (1 + cos(pi * p))
//   lr(s) = base_lr * factor(s)
//
// With r = 0 these are transformers' schedules up to step T (linear: (T - s) / (T - W); cosine:
// num_cycles 0.5); past T, p is clamped so the lr stays at the floor instead of following the
// cosine back up. With r > 0 cosine is get_cosine_with_min_lr_schedule_with_warmup.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace mlr {

enum class LrScheduleKind { constant, linear, cosine };

const char* lr_schedule_kind_name(LrScheduleKind kind);
// "constant", "linear", "cosine"; throws mlr::Error naming the value otherwise.
LrScheduleKind parse_lr_schedule_kind(const std::string& name);

struct LrSchedule {
  LrScheduleKind kind = LrScheduleKind::constant;
  double base_lr = 1e-3;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;  // required (> warmup_steps) for linear and cosine
  double min_lr_ratio = 0.0;

  // Throws mlr::Error naming the field at fault (negative warmup, total_steps <= warmup_steps for
  // a decaying schedule, ratio outside [0, 1], non-positive or non-finite base_lr).
  void validate() const;
  // The multiplier of base_lr at update `step` (>= 0).
  double factor(int64_t step) const;
  double lr(int64_t step) const { return base_lr * factor(step); }

  // The schedule is a pure function of the step, so its state is its configuration.
  nlohmann::json state_dict() const;
  // Validates the fields (see validate) and replaces this schedule's configuration.
  void load_state_dict(const nlohmann::json& state);
};

}  // namespace mlr
