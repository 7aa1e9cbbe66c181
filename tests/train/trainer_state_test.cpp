// trainer_state.json as --resume reads it: a valid state comes back field by field; every malformed
// one is an mlr::Error naming the file and the key (never a JSON library exception).
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "tests/test_support.h"
#include "train/trainer_state.h"

using namespace mlr;
using nlohmann::json;

namespace {

json valid_state() {
  return json::parse(R"({
    "step": 3,
    "optimizer": {"format": "mlr.adamw", "version": 1},
    "lr_schedule": {"kind": "constant"},
    "loss_scaler": {"scale": 1.0},
    "loader": {"version": 1, "step": 3, "mixture_step": 5, "drawn": [2, 3], "truncated": 0, "dropped": 1,
               "fingerprint": "0123456789abcdef"},
    "rng": {"seed": 18446744073709551615, "offset": 96},
    "adapter_dropout_rng": {"model.layers.0.self_attn.q_proj": [5, 12]},
    "smora_total_counts": {"model.layers.0.self_attn.q_proj": [3, 0, 1]},
    "data_parallel": {"world_size": 2, "rows_per_rank": 4, "global_rows": 8}
  })");
}

TrainerState parse(const json& j) { return parse_trainer_state(j.dump(), "ckpt/trainer_state.json"); }

}  // namespace

TEST_CASE("trainer state: every field of a valid file") {
  const TrainerState s = parse(valid_state());
  CHECK(s.step == 3);
  CHECK(s.optimizer.at("format") == "mlr.adamw");
  CHECK(s.loss_scaler.at("scale") == 1.0);
  CHECK(s.loader.step == 3);
  CHECK(s.loader.mixture.step == 5);
  CHECK(s.loader.mixture.drawn == std::vector<int64_t>{2, 3});
  CHECK(s.loader.dropped == 1);
  CHECK(s.rng_seed == UINT64_MAX);
  CHECK(s.rng_offset == 96);
  REQUIRE(s.adapter_dropout_rng.has_value());
  CHECK(s.adapter_dropout_rng->at("model.layers.0.self_attn.q_proj") == std::pair<uint64_t, uint64_t>{5, 12});
  REQUIRE(s.adapter_training_state.count("smora_total_counts"));
  CHECK(s.adapter_training_state.at("smora_total_counts").at("model.layers.0.self_attn.q_proj") == json{3, 0, 1});
  CHECK(s.world_size == 2);
  CHECK(s.global_rows == 8);
  CHECK(s.adapter_training_state.count("data_parallel") == 0);

  json plain = valid_state();
  plain.erase("adapter_dropout_rng");
  plain.erase("smora_total_counts");
  plain.erase("data_parallel");
  const TrainerState p = parse(plain);
  CHECK(p.global_rows == 0);
  CHECK_FALSE(p.adapter_dropout_rng.has_value());
  CHECK(p.adapter_training_state.empty());
}

TEST_CASE("trainer state: malformed files name the file and the key") {
  CHECK_ERROR_CONTAINS(parse_trainer_state("{\"step\": 3,", "ckpt/trainer_state.json"),
                       "ckpt/trainer_state.json: invalid JSON at byte");
  CHECK_ERROR_CONTAINS(parse_trainer_state("[1]", "ckpt/trainer_state.json"), "expected a JSON object, got array");
  auto with = [](auto edit) {
    json j = valid_state();
    edit(j);
    return j;
  };
  CHECK_ERROR_CONTAINS(parse(with([](json& j) { j.erase("step"); })), "ckpt/trainer_state.json: \"step\" is missing");
  CHECK_ERROR_CONTAINS(parse(with([](json& j) { j["step"] = -1; })), "\"step\" is -1, expected a non-negative integer");
  CHECK_ERROR_CONTAINS(parse(with([](json& j) { j["step"] = 2.5; })), "\"step\" is 2.5");
  CHECK_ERROR_CONTAINS(parse(with([](json& j) { j["step"] = 18446744073709551615ull; })), "larger than a 64-bit");
  CHECK_ERROR_CONTAINS(parse(with([](json& j) { j["optimizer"] = "adamw"; })),
                       "\"optimizer\" is a JSON string, expected an object");
  CHECK_ERROR_CONTAINS(parse(with([](json& j) { j.erase("loss_scaler"); })), "\"loss_scaler\" is missing");
  CHECK_ERROR_CONTAINS(parse(with([](json& j) { j["rng"].erase("offset"); })), "\"rng.offset\" is missing");
  CHECK_ERROR_CONTAINS(parse(with([](json& j) { j["rng"]["seed"] = "1"; })), "\"rng.seed\" is \"1\"");
  CHECK_ERROR_CONTAINS(parse(with([](json& j) { j["adapter_dropout_rng"]["m"] = {1}; })),
                       "\"adapter_dropout_rng.m\" is [1], expected [seed, offset]");
  CHECK_ERROR_CONTAINS(parse(with([](json& j) { j["smora_total_counts"] = {1, 2}; })),
                       "\"smora_total_counts\" is a JSON array, expected an object of adapter states");
  CHECK_ERROR_CONTAINS(parse(with([](json& j) { j["data_parallel"].erase("global_rows"); })),
                       "\"data_parallel.global_rows\" is missing");
  CHECK_ERROR_CONTAINS(parse(with([](json& j) { j["data_parallel"]["world_size"] = 0; })),
                       "expected world_size >= 1 and global_rows >= 1");
  CHECK_ERROR_CONTAINS(parse(with([](json& j) { j["loader"]["drawn"] = "x"; })),
                       "ckpt/trainer_state.json: loader state \"drawn\" is \"x\", expected a list of counts");
}

TEST_CASE("trainer state: a number too large for a double is an error naming the file") {
  // Found by fuzz/checkpoint_state_fuzz.cpp's sibling targets: nlohmann::json throws out_of_range,
  // not parse_error, for such a number.
  CHECK_ERROR_CONTAINS(parse_trainer_state("{\"step\": 188888888888E88888888888888}", "ckpt/trainer_state.json"),
                       "ckpt/trainer_state.json: invalid JSON: [json.exception.out_of_range.406] number overflow");
}
