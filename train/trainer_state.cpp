#include "train/trainer_state.h"

#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "tensor/error.h"

namespace mlr {

namespace {

using nlohmann::json;

// Typed access into trainer_state.json; every failure names the file and the key path.
struct StateReader {
  const std::string& path;

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw Error(fmt::format("mlr-train --resume: {}: \"{}\" {}", path, key, what));
  }
  const json& member(const json& object, const std::string& key, const std::string& name) const {
    auto it = object.find(key);
    if (it == object.end()) fail(name, "is missing");
    return *it;
  }
  const json& object(const json& object, const std::string& key, const std::string& name) const {
    const json& v = member(object, key, name);
    if (!v.is_object()) fail(name, fmt::format("is a JSON {}, expected an object", v.type_name()));
    return v;
  }
  uint64_t u64(const json& v, const std::string& name) const {
    if (v.is_number_unsigned()) return v.get<uint64_t>();
    if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
    fail(name, fmt::format("is {}, expected a non-negative integer", v.dump()));
  }
  int64_t non_negative(const json& v, const std::string& name) const {
    const uint64_t u = u64(v, name);
    if (u > static_cast<uint64_t>(INT64_MAX)) fail(name, fmt::format("is {}, larger than a 64-bit integer", u));
    return static_cast<int64_t>(u);
  }
};

}  // namespace

TrainerState parse_trainer_state(const std::string& text, const std::string& path) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(fmt::format("mlr-train --resume: {}: invalid JSON at byte {}: {}", path, e.byte, e.what()));
  // A number too large for a double ("1e999") is not a parse_error but out_of_range.
  } catch (const json::exception& e) {
    throw Error(fmt::format("mlr-train --resume: {}: invalid JSON: {}", path, e.what()));
  }
  const StateReader r{path};
  if (!j.is_object()) throw Error(fmt::format("mlr-train --resume: {}: expected a JSON object, got {}", path, j.type_name()));
  TrainerState s;
  s.step = r.non_negative(r.member(j, "step", "step"), "step");
  s.optimizer = r.object(j, "optimizer", "optimizer");
  s.loss_scaler = r.object(j, "loss_scaler", "loss_scaler");
  s.loader = data::LoaderState::from_json(r.object(j, "loader", "loader").dump(), path);
  const json& rng = r.object(j, "rng", "rng");
  s.rng_seed = r.u64(r.member(rng, "seed", "rng.seed"), "rng.seed");
  s.rng_offset = r.u64(r.member(rng, "offset", "rng.offset"), "rng.offset");
  if (j.contains("tokenizer")) {
    const json& tok = r.object(j, "tokenizer", "tokenizer");
    for (const char* key : {"backend", "fingerprint"}) {
      const json& v = r.member(tok, key, std::string("tokenizer.") + key);
      if (!v.is_string()) r.fail(std::string("tokenizer.") + key, fmt::format("is {}, expected a string", v.dump()));
    }
    s.tokenizer_backend = tok.at("backend").get<std::string>();
    s.tokenizer_fingerprint = tok.at("fingerprint").get<std::string>();
  }
  if (j.contains("adapter_dropout_rng")) {
    auto& dropout = s.adapter_dropout_rng.emplace();
    for (const auto& [module, g] : r.object(j, "adapter_dropout_rng", "adapter_dropout_rng").items()) {
      const std::string name = "adapter_dropout_rng." + module;
      if (!g.is_array() || g.size() != 2) r.fail(name, fmt::format("is {}, expected [seed, offset]", g.dump()));
      dropout[module] = {r.u64(g[0], name + "[0]"), r.u64(g[1], name + "[1]")};
    }
  }
  if (j.contains("data_parallel")) {
    const auto& dp = r.object(j, "data_parallel", "data_parallel");
    s.world_size = static_cast<int64_t>(r.u64(r.member(dp, "world_size", "data_parallel.world_size"), "data_parallel.world_size"));
    s.global_rows =
        static_cast<int64_t>(r.u64(r.member(dp, "global_rows", "data_parallel.global_rows"), "data_parallel.global_rows"));
    if (s.world_size < 1 || s.world_size > (1 << 24) || s.global_rows < 1 || s.global_rows > (int64_t{1} << 40))
      r.fail("data_parallel", fmt::format("is {}, expected world_size >= 1 and global_rows >= 1", dp.dump()));
  }
  static const std::set<std::string> kTrainerKeys = {"step", "optimizer", "lr_schedule", "loss_scaler", "loader",
                                                      "rng", "adapter_dropout_rng", "tokenizer", "data_parallel"};
  for (const auto& [key, by_module] : j.items()) {
    if (kTrainerKeys.count(key)) continue;
    if (!by_module.is_object())
      r.fail(key, fmt::format("is a JSON {}, expected an object of adapter states by module path", by_module.type_name()));
    auto& entries = s.adapter_training_state[key];
    for (const auto& [module, value] : by_module.items()) entries[module] = value;
  }
  return s;
}

TrainerState read_trainer_state(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MLR_CHECK(in.good(), "mlr-train --resume: cannot read {}", path);
  std::ostringstream text;
  text << in.rdbuf();
  MLR_CHECK(!in.bad(), "mlr-train --resume: reading {} failed", path);
  return parse_trainer_state(text.str(), path);
}

}  // namespace mlr
