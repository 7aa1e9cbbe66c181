#include "data/csv.h"

#include "data/text.h"
#include "tensor/error.h"

namespace mlr::data {

std::vector<CsvRecord> parse_csv(std::string_view text, const std::string& name) {
  std::vector<CsvRecord> records;
  size_t i = 0;
  int64_t line = 1;
  size_t line_start = 0;  // byte offset where the current line starts (for columns)
  const auto column = [&](size_t pos) { return static_cast<int64_t>(utf8_length(text.substr(line_start, pos - line_start))) + 1; };
  // Consumes one line break (CRLF, LF or CR) at text[i], if there is one.
  const auto eat_newline = [&]() -> bool {
    if (i < text.size() && (text[i] == '\n' || text[i] == '\r')) {
      if (text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      ++i;
      ++line;
      line_start = i;
      return true;
    }
    return false;
  };

  while (i < text.size()) {
    if (eat_newline()) continue;  // a blank line holds no record (as Python's csv module reads it)
    CsvRecord record;
    record.line = line;
    while (true) {  // one field per iteration
      std::string field;
      if (i < text.size() && text[i] == '"') {
        const int64_t open_line = line;
        const size_t open_pos = i, open_line_start = line_start;
        ++i;
        while (true) {
          MLR_CHECK(i < text.size(), "data: {}:{}:{}: quoted field is not closed before the end of the file", name,
                    open_line, utf8_length(text.substr(open_line_start, open_pos - open_line_start)) + 1);
          const char c = text[i];
          if (c == '"') {
            if (i + 1 < text.size() && text[i + 1] == '"') {
              field += '"';
              i += 2;
              continue;
            }
            ++i;
            break;
          }
          if (c == '\n' || c == '\r') {
            // Line breaks inside quotes are data; keep them byte for byte but count lines.
            if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') {
              field += "\r\n";
              i += 2;
            } else {
              field += c;
              ++i;
            }
            ++line;
            line_start = i;
            continue;
          }
          field += c;
          ++i;
        }
        MLR_CHECK(i >= text.size() || text[i] == ',' || text[i] == '\n' || text[i] == '\r',
                  "data: {}:{}:{}: unexpected character '{}' after the closing quote of a quoted field (expected ',' or "
                  "the end of the line)",
                  name, line, column(i), preview(text.substr(i, 1)));
      } else {
        const size_t start = i;
        // A quote inside an unquoted field is kept as data, as Python's csv module reads it: the
        // released MMLU val/college_medicine_val.csv has one (row 6, "...Will to Truth?\"").
        while (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r') ++i;
        field.assign(text.substr(start, i - start));
      }
      record.fields.push_back(std::move(field));
      if (i < text.size() && text[i] == ',') {
        ++i;
        continue;
      }
      break;
    }
    eat_newline();
    records.push_back(std::move(record));
  }
  return records;
}

}  // namespace mlr::data
