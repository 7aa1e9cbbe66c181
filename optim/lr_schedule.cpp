#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "optim/state.h"
#include "tensor/error.h"

namespace mlr {

const char* lr_schedule_kind_name(LrScheduleKind kind) {
  switch (kind) {
    case LrScheduleKind::constant: return "constant";
    case LrScheduleKind::linear: return "linear";
    case LrScheduleKind::cosine: return "cosine";
  }
  return "?";
}

LrScheduleKind parse_lr_schedule_kind(const std::string& name) {
  if (name == "constant") return LrScheduleKind::constant;
  if (name == "linear") return LrScheduleKind::linear;
  if (name == "cosine") return LrScheduleKind::cosine;
  throw Error(fmt::format("lr schedule: unknown kind \"{}\" (expected constant, linear or cosine)", name));
}

void LrSchedule::validate() const {
  MLR_CHECK(std::isfinite(base_lr) && base_lr > 0, "lr schedule: base_lr must be positive and finite, got {}",
            base_lr);
  MLR_CHECK(warmup_steps >= 0, "lr schedule: warmup_steps must be >= 0, got {}", warmup_steps);
  MLR_CHECK(min_lr_ratio >= 0 && min_lr_ratio <= 1, "lr schedule: min_lr_ratio must lie in [0, 1], got {}",
            min_lr_ratio);
  if (kind != LrScheduleKind::constant) {
    MLR_CHECK(total_steps > warmup_steps,
              "lr schedule: {} decay needs total_steps > warmup_steps, got total_steps {} and warmup_steps {}",
              lr_schedule_kind_name(kind), total_steps, warmup_steps);
  }
}

double LrSchedule::factor(int64_t step) const {
  MLR_CHECK(step >= 0, "lr schedule: step must be >= 0, got {}", step);
  if (step < warmup_steps) return static_cast<double>(step) / static_cast<double>(warmup_steps);
  if (kind == LrScheduleKind::constant) return 1.0;
  const double progress = std::clamp(static_cast<double>(step - warmup_steps) /
                                         static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps)),
                                     0.0, 1.0);
  const double decay = kind == LrScheduleKind::linear ? 1.0 - progress
                                                      : 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  return min_lr_ratio + (1.0 - min_lr_ratio) * decay;
}

nlohmann::json LrSchedule::state_dict() const {
  return {{"kind", lr_schedule_kind_name(kind)},
          {"base_lr", base_lr},
          {"warmup_steps", warmup_steps},
          {"total_steps", total_steps},
          {"min_lr_ratio", min_lr_ratio}};
}

void LrSchedule::load_state_dict(const nlohmann::json& state) {
  const char* what = "lr schedule state";
  LrSchedule loaded;
  loaded.kind = parse_lr_schedule_kind(detail::json_field<std::string>(state, "kind", what));
  loaded.base_lr = detail::json_field<double>(state, "base_lr", what);
  loaded.warmup_steps = detail::json_field<int64_t>(state, "warmup_steps", what);
  loaded.total_steps = detail::json_field<int64_t>(state, "total_steps", what);
  loaded.min_lr_ratio = detail::json_field<double>(state, "min_lr_ratio", what);
  loaded.validate();
  *this = loaded;
}

}  // namespace mlr
