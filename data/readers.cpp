// The format registry, the row iteration shared by the JSON readers, and typed field access.
#include <algorithm>
#include <array>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "data/reader_detail.h"
#include "data/text.h"
#include "tensor/error.h"

namespace mlr::data {

namespace fs = std::filesystem;

namespace {

struct FormatInfo {
  Format format;
  std::string_view name;
  std::vector<std::string> fields;
};

const std::vector<FormatInfo>& formats() {
  static const std::vector<FormatInfo> table = {
      {Format::alpaca, "alpaca", {"instruction", "input", "output"}},
      {Format::prompt_completion, "prompt_completion", {"prompt", "completion"}},
      {Format::chat, "chat", {"role", "content", "first"}},
      {Format::gsm8k, "gsm8k", {"question", "answer"}},
      {Format::mmlu, "mmlu", {"question", "A", "B", "C", "D", "answer", "subject"}},
      {Format::boolq, "boolq", {"passage", "question", "label"}},
      {Format::cb, "cb", {"premise", "hypothesis", "label"}},
      {Format::copa, "copa", {"premise", "choice1", "choice2", "question", "connector", "label"}},
      {Format::multirc, "multirc", {"paragraph", "question", "answer", "label"}},
      {Format::rte, "rte", {"premise", "hypothesis", "label"}},
      {Format::wic,
       "wic",
       {"word", "sentence1", "sentence2", "start1", "end1", "start2", "end2", "sentence1_word", "sentence2_word",
        "label"}},
      {Format::wsc, "wsc", {"text", "span1_index", "span2_index", "span1_text", "span2_text", "passage", "label"}},
  };
  return table;
}

const FormatInfo& info(Format format) {
  for (const auto& f : formats()) {
    if (f.format == format) return f;
  }
  throw Error("data: unknown format enum value");
}

}  // namespace

Format parse_format(std::string_view name) {
  std::vector<std::string_view> names;
  for (const auto& f : formats()) {
    if (f.name == name) return f.format;
    names.push_back(f.name);
  }
  throw Error(fmt::format("data: unknown dataset format '{}' (known: {})", name, fmt::join(names, ", ")));
}

std::string_view format_name(Format format) { return info(format).name; }
const std::vector<std::string>& format_fields(Format format) { return info(format).fields; }

const std::string* Record::field(std::string_view name) const {
  for (const auto& [key, value] : fields) {
    if (key == name) return &value;
  }
  return nullptr;
}

std::vector<fs::path> source_files(Format format, const fs::path& path) {
  std::error_code ec;
  MLR_CHECK(fs::exists(path, ec), "data: {}: no such file or directory", path.string());
  if (!fs::is_directory(path, ec)) return {path};
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(path)) {
    if (!entry.is_regular_file()) continue;
    const std::string ext = entry.path().extension().string();
    const bool match = format == Format::mmlu ? ext == ".csv" : (ext == ".jsonl" || ext == ".json");
    if (match) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  MLR_CHECK(!files.empty(), "data: {}: the directory has no {} files for format {}", path.string(),
            format == Format::mmlu ? "*.csv" : "*.jsonl or *.json", format_name(format));
  return files;
}

ReadResult read_records(Format format, const fs::path& path, const ReadOptions& options) {
  ReadResult result;
  detail::ReadContext ctx{options, result};
  const std::vector<fs::path> files = source_files(format, path);
  for (size_t i = 0; i < files.size(); ++i) {
    const auto& file = files[i];
    const auto index = static_cast<int32_t>(i);
    result.files.push_back(file.string());
    switch (format) {
      case Format::alpaca: detail::read_alpaca(file, index, ctx); break;
      case Format::prompt_completion: detail::read_prompt_completion(file, index, ctx); break;
      case Format::chat: detail::read_chat(file, index, ctx); break;
      case Format::gsm8k: detail::read_gsm8k(file, index, ctx); break;
      case Format::mmlu: detail::read_mmlu(file, index, ctx); break;
      default: detail::read_superglue(format, file, index, ctx); break;
    }
  }
  return result;
}

std::string general_detokenize(std::string_view s) {
  std::string out = replace_all(s, " n't", "n't");
  out = replace_all(out, " )", ")");
  out = replace_all(out, "( ", "(");
  out = replace_all(out, "\" ", "\"");
  out = replace_all(out, " \"", "\"");
  // re.sub(r" (['.,])", r"\1", s): drop a space before ' . or ,
  std::string result;
  result.reserve(out.size());
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == ' ' && i + 1 < out.size() && (out[i + 1] == '\'' || out[i + 1] == '.' || out[i + 1] == ',')) continue;
    result += out[i];
  }
  return result;
}

std::string wsc_passage(std::string_view text, int64_t span2_index, std::string_view span2_text) {
  // pre = " ".join(text.split()[:span2_index]); post = text[len(pre) + len(span2_text) + 1:]
  const auto words = split_whitespace(text);
  const size_t n = std::min<size_t>(words.size(), static_cast<size_t>(std::max<int64_t>(span2_index, 0)));
  std::string pre;
  for (size_t i = 0; i < n; ++i) {
    if (i > 0) pre += ' ';
    pre += words[i];
  }
  const auto start = static_cast<int64_t>(utf8_length(pre) + utf8_length(span2_text) + 1);
  const std::string post = utf8_slice(text, start, static_cast<int64_t>(utf8_length(text)));
  return general_detokenize(pre + " *" + std::string(span2_text) + "*" + post);
}

namespace detail {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  MLR_CHECK(in.good(), "data: {}: cannot open the file", path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  MLR_CHECK(!in.bad(), "data: {}: read error", path.string());
  return ss.str();
}

void ReadContext::bad(const std::string& file, int64_t line, const std::string& what) {
  const std::string message = fmt::format("data: {}:{}: {}", file, line, what);
  if (!options.skip_bad) throw Error(message);
  ++result.n_bad;
  if (result.bad_messages.size() < 5) result.bad_messages.push_back(message);
}

namespace {

// nlohmann's message without its prefix and position: "[json.exception.parse_error.101] parse
// error at line 1, column 17: <detail>" -> "<detail>".
std::string parse_error_detail(const json::parse_error& e) {
  const std::string what = e.what();
  const size_t at = what.find("parse error");
  const size_t colon = what.find(": ", at == std::string::npos ? 0 : at);
  return colon == std::string::npos ? what : what.substr(colon + 2);
}

// The byte at text[offset] is not valid UTF-8: name it and its column on its line.
std::string describe_bad_utf8(std::string_view text, size_t offset) {
  const size_t line_start = offset == 0 ? 0 : text.rfind('\n', offset - 1) + 1;  // npos + 1 == 0
  return fmt::format("not valid UTF-8 (byte 0x{:02x} at column {})", static_cast<uint8_t>(text[offset]),
                     utf8_length(text.substr(line_start, offset - line_start)) + 1);
}

// Byte ranges of the elements of a top-level JSON array (string-aware bracket matching). A
// structural problem throws BadRow with the offset where it was found in *error_offset.
std::vector<std::pair<size_t, size_t>> split_json_array(std::string_view text, size_t* error_offset) {
  std::vector<std::pair<size_t, size_t>> elements;
  size_t i = 0;
  const auto skip_ws = [&] {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t')) ++i;
  };
  const auto fail = [&](const std::string& what) {
    *error_offset = i;
    throw BadRow(what);
  };
  skip_ws();
  if (i < text.size() && text[i] == '\xEF') i += 3;  // UTF-8 byte order mark
  skip_ws();
  if (i >= text.size() || text[i] != '[') fail("expected '[' starting a JSON array");
  ++i;
  skip_ws();
  if (i < text.size() && text[i] == ']') {
    ++i;
  } else {
    while (true) {
      skip_ws();
      const size_t start = i;
      int depth = 0;
      bool in_string = false;
      for (; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
          if (c == '\\') {
            ++i;
          } else if (c == '"') {
            in_string = false;
          }
          continue;
        }
        if (c == '"') {
          in_string = true;
        } else if (c == '{' || c == '[') {
          ++depth;
        } else if (c == '}' || c == ']') {
          if (depth == 0) break;
          --depth;
        } else if (c == ',' && depth == 0) {
          break;
        }
      }
      if (i >= text.size()) {
        *error_offset = start;
        throw BadRow("the JSON array is not closed before the end of the file (truncated file?)");
      }
      size_t end = i;
      while (end > start && (text[end - 1] == ' ' || text[end - 1] == '\n' || text[end - 1] == '\r' || text[end - 1] == '\t')) --end;
      if (end == start) fail("expected a value in the JSON array");
      elements.emplace_back(start, end);
      if (text[i] == ',') {
        ++i;
        continue;
      }
      if (text[i] == ']') {
        ++i;
        break;
      }
      fail(fmt::format("unexpected '{}' in the JSON array", text[i]));
    }
  }
  skip_ws();
  if (i < text.size()) fail("unexpected text after the end of the JSON array");
  return elements;
}

}  // namespace

void for_each_json_row(const fs::path& path, int32_t file_index, ReadContext& ctx, bool allow_array,
                       const std::function<void(const json&, int64_t line)>& row) {
  const std::string text = read_file(path);
  const std::string name = path.string();
  const size_t first = text.find_first_not_of(" \t\r\n");
  // row_offset: where the row starts in the file; an array element spans several lines, so its
  // parse errors are placed by their absolute offset, a JSONL row's by column.
  const auto parse_row = [&](std::string_view row_text, int64_t line, size_t row_offset, bool array_element) {
    const size_t bad = find_invalid_utf8(row_text);
    if (bad != std::string_view::npos) {
      const int64_t bad_line = array_element ? line_of_offset(text, row_offset + bad) : line;
      return ctx.bad(name, bad_line, describe_bad_utf8(text, row_offset + bad));
    }
    json value;
    try {
      value = json::parse(row_text);
    } catch (const json::parse_error& e) {
      const size_t at = e.byte > 0 ? e.byte - 1 : 0;
      if (!array_element) return ctx.bad(name, line, fmt::format("broken JSON at column {}: {}", at + 1, parse_error_detail(e)));
      return ctx.bad(name, line_of_offset(text, row_offset + at), fmt::format("broken JSON: {}", parse_error_detail(e)));
    } catch (const json::exception& e) {  // a number too large for a double ("1e999") is out_of_range
      const std::string what = e.what();
      const size_t tag_end = what.find("] ");
      return ctx.bad(name, line, fmt::format("broken JSON: {}", tag_end == std::string::npos ? what : what.substr(tag_end + 2)));
    }
    try {
      if (!value.is_object()) throw BadRow(fmt::format("the row is {}, expected a JSON object", value.type_name()));
      const size_t before = ctx.result.records.size();
      row(value, line);
      for (size_t k = before; k < ctx.result.records.size(); ++k) {
        ctx.result.records[k].file = file_index;
        ctx.result.records[k].line = line;
      }
    } catch (const BadRow& e) {
      ctx.bad(name, line, e.what());
    }
  };

  if (allow_array && first != std::string::npos && text[first] == '[') {
    // One JSON array: each element is a row, located by the line where it starts. A structural
    // error in the array cannot be skipped (nothing after it can be trusted).
    size_t error_offset = 0;
    std::vector<std::pair<size_t, size_t>> elements;
    try {
      elements = split_json_array(text, &error_offset);
    } catch (const BadRow& e) {
      throw Error(fmt::format("data: {}:{}: {}", name, line_of_offset(text, error_offset), e.what()));
    }
    int64_t line = 1;
    size_t counted = 0;
    for (const auto& [start, end] : elements) {
      line += std::count(text.begin() + static_cast<std::ptrdiff_t>(counted), text.begin() + static_cast<std::ptrdiff_t>(start), '\n');
      counted = start;
      parse_row(std::string_view(text).substr(start, end - start), line, start, true);
    }
    return;
  }

  int64_t line = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    ++line;
    std::string_view row_text(text.data() + pos, end - pos);
    const size_t row_offset = pos;
    pos = end + 1;
    if (!row_text.empty() && row_text.back() == '\r') row_text.remove_suffix(1);
    if (row_text.find_first_not_of(" \t") == std::string_view::npos) continue;  // blank line
    parse_row(row_text, line, row_offset, false);
  }
}

namespace {

std::string describe_value(const json& value) {
  switch (value.type()) {
    case json::value_t::string: return fmt::format("a string (\"{}\")", preview(value.get_ref<const std::string&>()));
    case json::value_t::boolean: return fmt::format("a boolean ({})", value.get<bool>());
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: return fmt::format("a number ({})", value.dump());
    case json::value_t::null: return "null";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    default: return value.type_name();
  }
}

}  // namespace

const json& get(const json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end()) throw BadRow(fmt::format("field \"{}\" is missing", key));
  return *it;
}

std::string get_string(const json& object, const char* key) {
  const json& v = get(object, key);
  if (!v.is_string()) throw BadRow(fmt::format("field \"{}\" is {}, expected a string", key, describe_value(v)));
  return v.get<std::string>();
}

std::string get_string_or(const json& object, const char* key, std::string fallback) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  return get_string(object, key);
}

int64_t get_int(const json& object, const char* key) {
  const json& v = get(object, key);
  if (!v.is_number_integer()) throw BadRow(fmt::format("field \"{}\" is {}, expected an integer", key, describe_value(v)));
  return v.get<int64_t>();
}

int get_bool_label(const json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end()) {
    throw BadRow(fmt::format("field \"{}\" is missing (an unlabelled split, such as a test split, cannot be trained on)", key));
  }
  const json& v = *it;
  if (v.is_boolean()) return v.get<bool>() ? 1 : 0;
  if (v.is_number_integer() && (v.get<int64_t>() == 0 || v.get<int64_t>() == 1)) return static_cast<int>(v.get<int64_t>());
  if (v.is_string()) {
    std::string s = v.get<std::string>();
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (s == "true") return 1;
    if (s == "false") return 0;
  }
  throw BadRow(fmt::format("field \"{}\" is {}, expected a boolean", key, describe_value(v)));
}

int get_class_label(const json& object, const char* key, const std::vector<std::string>& names) {
  const auto it = object.find(key);
  if (it == object.end()) {
    throw BadRow(fmt::format("field \"{}\" is missing (an unlabelled split, such as a test split, cannot be trained on)", key));
  }
  const json& v = *it;
  if (v.is_string()) {
    const auto s = v.get<std::string>();
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == s) return static_cast<int>(i);
    }
  } else if (v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < static_cast<int64_t>(names.size())) {
    return static_cast<int>(v.get<int64_t>());
  }
  throw BadRow(fmt::format("field \"{}\" is {}, expected one of {} (or its index)", key, describe_value(v),
                           fmt::join(names, ", ")));
}

std::string label_text(const json& value) { return value.is_string() ? value.get<std::string>() : value.dump(); }

}  // namespace detail

}  // namespace mlr::data
