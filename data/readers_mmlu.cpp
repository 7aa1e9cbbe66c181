// MMLU in the original hendrycks layout: one headerless CSV per subject and split,
// "<subject>_<split>.csv", columns question, A, B, C, D, answer (a letter A-D).
#include <fmt/format.h>

#include "data/csv.h"
#include "data/reader_detail.h"
#include "data/text.h"
#include "tensor/error.h"

namespace mlr::data::detail {

namespace fs = std::filesystem;

namespace {

// "high_school_us_history_test.csv" -> "high school us history".
std::string mmlu_subject(const fs::path& path) {
  std::string stem = path.stem().string();
  for (const char* split : {"_dev", "_val", "_test", "_train", "_auxiliary_train"}) {
    const std::string suffix = split;
    if (stem.size() > suffix.size() && stem.compare(stem.size() - suffix.size(), suffix.size(), suffix) == 0) {
      stem.resize(stem.size() - suffix.size());
      break;
    }
  }
  for (char& c : stem) {
    if (c == '_') c = ' ';
  }
  return stem;
}

}  // namespace

void read_mmlu(const fs::path& path, int32_t file, ReadContext& ctx) {
  const std::string name = path.string();
  const std::string subject = mmlu_subject(path);
  // A CSV syntax error (an unclosed quote, a stray quote) stops the file: rows after it cannot be
  // delimited reliably, so it is not skippable.
  const std::vector<CsvRecord> rows = parse_csv(read_file(path), name);
  for (const CsvRecord& row : rows) {
    const auto& f = row.fields;
    if (f.size() != 6) {
      ctx.bad(name, row.line, fmt::format("the row has {} fields, expected 6 (question, A, B, C, D, answer)", f.size()));
      continue;
    }
    size_t bad_field = 0, bad_at = std::string::npos;
    for (; bad_field < f.size() && (bad_at = find_invalid_utf8(f[bad_field])) == std::string::npos; ++bad_field) {
    }
    if (bad_at != std::string::npos) {
      ctx.bad(name, row.line, fmt::format("field {} is not valid UTF-8 (byte 0x{:02x} at offset {} of the field)", bad_field + 1,
                                          static_cast<uint8_t>(f[bad_field][bad_at]), bad_at));
      continue;
    }
    const std::string& answer = f[5];
    if (answer.size() != 1 || answer[0] < 'A' || answer[0] > 'D') {
      ctx.bad(name, row.line, fmt::format("answer \"{}\" is not one of A, B, C, D", answer));
      continue;
    }
    Record r;
    r.set("question", f[0]);
    r.set("A", f[1]);
    r.set("B", f[2]);
    r.set("C", f[3]);
    r.set("D", f[4]);
    r.set("answer", answer);
    r.set("subject", subject);
    r.label = answer[0] - 'A';
    r.file = file;
    r.line = row.line;
    ctx.result.records.push_back(std::move(r));
  }
}

}  // namespace mlr::data::detail
