// AdamW against torch.optim.AdamW: the trajectories of tests/fixtures/optim/adamw_torch.json
// (scripts/fixtures/make_adamw_fixtures.py) replayed with the same initial values, gradients,
// groups and schedules; every parameter after every step, and the final moments, must agree
// within 1e-6 relative in f32.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "optim/adamw.h"
#include "optim/lr_schedule.h"

using namespace mlr;
using nlohmann::json;

namespace {

json load_fixture() {
  const std::string path = MLR_SOURCE_DIR "/tests/fixtures/optim/adamw_torch.json";
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), "missing fixture ", path, " (run scripts/fixtures/make_adamw_fixtures.py)");
  std::stringstream text;
  text << in.rdbuf();
  return json::parse(text.str());
}

Tensor f32_tensor(const json& values, const Shape& shape) {
  return from_vector(values.get<std::vector<float>>(), shape, DType::f32);
}

struct Agreement {
  double max_rel = 0;     // max |ours - torch| / |torch| over elements with |torch| >= 1e-3
  double max_abs = 0;     // max |ours - torch| over all elements
  int64_t elements = 0;
  int64_t bit_equal = 0;
};

// Relative error, with |torch| floored at 1e-3 so values crossing zero do not divide by ~0.
void compare(const Tensor& ours, const json& expected, Agreement& agreement, const std::string& what) {
  const std::vector<float> got = ours.to_vector<float>();
  const auto want = expected.get<std::vector<float>>();
  REQUIRE(got.size() == want.size());
  for (size_t k = 0; k < got.size(); ++k) {
    const double diff = std::abs(static_cast<double>(got[k]) - static_cast<double>(want[k]));
    const double rel = diff / std::max(1e-3, std::abs(static_cast<double>(want[k])));
    agreement.max_rel = std::max(agreement.max_rel, rel);
    agreement.max_abs = std::max(agreement.max_abs, diff);
    agreement.elements += 1;
    agreement.bit_equal += got[k] == want[k] ? 1 : 0;
    if (rel > 1e-6) {
      FAIL_CHECK(what, " element ", k, ": ours ", got[k], ", torch ", want[k], " (relative error ", rel, ")");
      return;
    }
  }
}

}  // namespace

TEST_CASE("AdamW matches torch.optim.AdamW step by step (f32)") {
  const json fixture = load_fixture();
  REQUIRE(fixture.at("cases").size() >= 4);
  for (const json& c : fixture.at("cases")) {
    const std::string case_name = c.at("name").get<std::string>();
    INFO("case ", case_name);
    std::vector<ParamGroup> groups;
    std::vector<std::vector<const json*>> param_fixtures;
    for (const json& g : c.at("groups")) {
      ParamGroup group;
      group.name = fmt::format("group{}", groups.size());
      group.options = {g.at("lr").get<double>(), g.at("beta1").get<double>(), g.at("beta2").get<double>(),
                       g.at("eps").get<double>(), g.at("weight_decay").get<double>()};
      param_fixtures.emplace_back();
      for (const json& p : g.at("params")) {
        const Shape shape = p.at("shape").get<Shape>();
        group.params.push_back(Variable::leaf(f32_tensor(p.at("init"), shape), true, p.at("name").get<std::string>()));
        param_fixtures.back().push_back(&p);
      }
      groups.push_back(std::move(group));
    }
    AdamW opt(groups);
    std::optional<LrSchedule> schedule;
    if (!c.at("schedule").is_null()) {
      const json& s = c.at("schedule");
      schedule = LrSchedule{parse_lr_schedule_kind(s.at("kind").get<std::string>()), 1.0,
                            s.at("warmup_steps").get<int64_t>(), s.at("total_steps").get<int64_t>(),
                            s.at("min_lr_ratio").get<double>()};
      schedule->validate();
    }

    Agreement agreement;
    const int64_t steps = c.at("steps").get<int64_t>();
    for (int64_t step = 0; step < steps; ++step) {
      if (schedule) opt.set_lr_factor(schedule->factor(step));
      for (size_t g = 0; g < groups.size(); ++g) {
        const double torch_lr = c.at("lr_per_step").at(step).at(g).get<double>();
        CHECK(opt.group_lr(g) == doctest::Approx(torch_lr).epsilon(1e-15));
        for (size_t i = 0; i < groups[g].params.size(); ++i) {
          Variable p = groups[g].params[i];
          const json& grad = param_fixtures[g][i]->at("grads").at(step);
          p.set_grad(grad.is_null() ? Tensor() : f32_tensor(grad, p.shape()));
        }
      }
      opt.step();
      for (size_t g = 0; g < groups.size(); ++g) {
        for (size_t i = 0; i < groups[g].params.size(); ++i) {
          const json& p = *param_fixtures[g][i];
          compare(groups[g].params[i].data(), p.at("after").at(step), agreement,
                  fmt::format("step {} parameter '{}'", step, p.at("name").get<std::string>()));
        }
      }
    }
    const TrainingState state = opt.state_dict();
    for (size_t g = 0; g < groups.size(); ++g) {
      for (size_t i = 0; i < groups[g].params.size(); ++i) {
        const json& p = *param_fixtures[g][i];
        const std::string name = p.at("name").get<std::string>();
        CHECK(opt.step_count(g, i) == p.at("step").get<int64_t>());
        compare(state.tensors.at(name + ".exp_avg"), p.at("exp_avg"), agreement, name + ".exp_avg");
        compare(state.tensors.at(name + ".exp_avg_sq"), p.at("exp_avg_sq"), agreement, name + ".exp_avg_sq");
      }
    }
    MESSAGE(case_name, ": ", agreement.elements, " values, ", agreement.bit_equal,
            " bit-identical, max relative error ", agreement.max_rel, ", max absolute error ", agreement.max_abs);
  }
}
