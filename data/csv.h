// An RFC 4180 CSV parser: fields separated by ',', records by CRLF, LF or CR; a field that starts
// with '"' is quoted and may contain commas, line breaks and doubled quotes ("" -> "). Text after
// a closing quote, or a quoted field left open at the end of the file, is an error naming the
// file, line and column. A quote inside an unquoted field is data (as Python's csv module reads
// it; the released MMLU files rely on that). The last
// record may or may not end with a line break; blank lines hold no record. Fields are bytes: the
// caller checks their encoding (so that a bad row can be skipped).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mlr::data {

struct CsvRecord {
  std::vector<std::string> fields;
  int64_t line = 0;  // 1-based line where the record starts
};

// Parses `text`; `name` is used in error messages ("name:line:column: ...").
std::vector<CsvRecord> parse_csv(std::string_view text, const std::string& name);

}  // namespace mlr::data
