// Inputs the fuzz targets (fuzz/) found to reach undefined behaviour or escape the readers' error
// handling, kept as tests: each is now an error naming the file and the line or field.
#include <doctest/doctest.h>

#include <string>

#include "data/config.h"
#include "data/loader.h"
#include "data/mixture.h"
#include "data/readers.h"
#include "tests/test_support.h"

using namespace mlr::data;

namespace {
std::string state_with(const std::string& field, const std::string& value) {
  std::string text = R"({"version": 1, "step": 3, "mixture_step": 5, "drawn": [2, 3], "truncated": 0, "dropped": 1,
                         "fingerprint": "0123456789abcdef"})";
  const size_t at = text.find("\"" + field + "\": ") + field.size() + 4;
  const size_t end = text.find_first_of(",}", field == "drawn" ? text.find(']', at) : at);
  return text.replace(at, end - at, value);
}
}  // namespace

TEST_CASE("loader state: counts must be non-negative integers") {
  CHECK(LoaderState::from_json(state_with("step", "3"), "s.json").mixture.drawn == std::vector<int64_t>{2, 3});
  // version 1e300 was cast to int (undefined behaviour).
  CHECK_ERROR_CONTAINS(LoaderState::from_json(state_with("version", "1e300"), "s.json"),
                       "s.json: loader state version 1e+300 is not 1");
  CHECK_ERROR_CONTAINS(LoaderState::from_json(state_with("step", "2.5"), "s.json"),
                       "s.json: loader state \"step\" is 2.5, expected a count");
  CHECK_ERROR_CONTAINS(LoaderState::from_json(state_with("drawn", "[1, -4]"), "s.json"), "\"drawn\" is -4");
  CHECK_ERROR_CONTAINS(LoaderState::from_json(state_with("drawn", "{}"), "s.json"), "expected a list of counts");
}

TEST_CASE("mixture: a restored state whose counts overflow is an error") {
  MixtureSampler sampler({{"a", 3}, {"b", 5}}, MixtureOptions{});
  // The sum of these counts overflowed int64 (signed overflow) before it was compared with step.
  CHECK_ERROR_CONTAINS(sampler.restore(MixtureState{0, {INT64_MAX, 1}}), "sum past 2^53 draws");
  sampler.restore(MixtureState{5, {2, 3}});
  CHECK(sampler.state().step == 5);
}

TEST_CASE("readers: a number too large for a double is a bad row, named by file and line") {
  // fuzz_data_readers: nlohmann::json throws out_of_range (not parse_error) for such a number, and
  // it escaped the row handling.
  TempDir tmp;
  const auto file = tmp.write("rows.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n"
                                            "{\"prompt\": 2222E2222111111113111110598, \"completion\": \"b\"}\n");
  CHECK_ERROR_CONTAINS(read_records(Format::prompt_completion, file), "rows.jsonl:2: broken JSON: number overflow");
  ReadOptions skip;
  skip.skip_bad = true;
  const ReadResult result = read_records(Format::prompt_completion, file, skip);
  CHECK(result.records.size() == 1);
  CHECK(result.n_bad == 1);
}

TEST_CASE("data config: a list or mapping used as a key is an error naming the line") {
  CHECK_ERROR_CONTAINS(parse_data_config("datasets: []\n? [a]\n", "mix.yaml", "/d"),
                       "mix.yaml:2: a key of the document is a list or mapping, expected a name");
}
