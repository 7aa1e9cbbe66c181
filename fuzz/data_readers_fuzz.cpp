// The dataset readers (JSONL, JSON arrays and the SuperGLUE/MMLU layouts, data/readers*.cpp) and
// the RFC 4180 CSV parser under the MMLU reader (data/csv.cpp). The first byte picks the format
// and skip_bad; the rest is the file.
#include <cstddef>
#include <cstdint>
#include <string>

#include "data/csv.h"
#include "data/readers.h"
#include "fuzz/fuzz_support.h"

namespace {
constexpr mlr::data::Format kFormats[] = {
    mlr::data::Format::alpaca, mlr::data::Format::prompt_completion, mlr::data::Format::chat,
    mlr::data::Format::gsm8k,  mlr::data::Format::mmlu,              mlr::data::Format::boolq,
    mlr::data::Format::cb,     mlr::data::Format::copa,              mlr::data::Format::multirc,
    mlr::data::Format::rte,    mlr::data::Format::wic,               mlr::data::Format::wsc};
constexpr size_t kFormatCount = sizeof(kFormats) / sizeof(kFormats[0]);
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mlr;
  if (size == 0) return 0;
  const data::Format format = kFormats[data[0] % kFormatCount];
  data::ReadOptions options;
  options.skip_bad = (data[0] / kFormatCount) % 2 == 1;
  const std::string_view text = fuzz::as_text(data + 1, size - 1);

  if (format == data::Format::mmlu) {
    fuzz::expect_clean_rejection([&] { (void)data::parse_csv(text, "fuzz.csv"); });
  }
  // The file name matters: MMLU takes the subject from "<subject>_<split>.csv"; a JSON array is
  // accepted in any file of the alpaca format.
  const std::string name = format == data::Format::mmlu ? "high_school_physics_test.csv" : "rows.jsonl";
  const auto path = fuzz::scratch().write(name, text);
  fuzz::expect_clean_rejection([&] {
    const data::ReadResult result = data::read_records(format, path, options);
    for (const data::Record& record : result.records) {
      for (const std::string& field : data::format_fields(format)) (void)record.field(field);
    }
  });
  return 0;
}
