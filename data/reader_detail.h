// Internals shared by the reader files: file reading, JSONL / JSON-array iteration with file:line
// errors, and typed field access that says what was found and what was expected.
#pragma once

#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "data/readers.h"

namespace mlr::data::detail {

using nlohmann::json;

// Thrown by row parsers for a malformed row; the iteration adds "data: <file>:<line>: ".
struct BadRow : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string read_file(const std::filesystem::path& path);

// Collects rows and bad-row accounting for one read.
struct ReadContext {
  const ReadOptions& options;
  ReadResult& result;
  // Records a bad row: throws mlr::Error "data: <file>:<line>: <what>", or counts it under skip_bad.
  void bad(const std::string& file, int64_t line, const std::string& what);
};

// Calls row(object, line) for every JSON value in a file: each non-blank line of a JSONL file, or
// each element of a top-level JSON array when allow_array and the file starts with '['. A row that
// is not valid UTF-8 or not valid JSON, or for which row() throws BadRow, goes to ctx.bad().
void for_each_json_row(const std::filesystem::path& path, int32_t file_index, ReadContext& ctx, bool allow_array,
                       const std::function<void(const json&, int64_t line)>& row);

// Typed access. Each throws BadRow with e.g. `field "label" is a string ("yes"), expected a boolean`.
const json& get(const json& object, const char* key);
std::string get_string(const json& object, const char* key);
std::string get_string_or(const json& object, const char* key, std::string fallback);
int64_t get_int(const json& object, const char* key);
// A boolean label: JSON true/false, the strings "true"/"false" (any case) or the numbers 0/1.
int get_bool_label(const json& object, const char* key);
// A class label: one of `names` (its index) or an index into names.
int get_class_label(const json& object, const char* key, const std::vector<std::string>& names);
// The label value as text, for the template field "label".
std::string label_text(const json& value);

// Readers, one per family (readers_json.cpp, readers_superglue.cpp, readers_mmlu.cpp).
void read_alpaca(const std::filesystem::path& path, int32_t file, ReadContext& ctx);
void read_prompt_completion(const std::filesystem::path& path, int32_t file, ReadContext& ctx);
void read_chat(const std::filesystem::path& path, int32_t file, ReadContext& ctx);
void read_gsm8k(const std::filesystem::path& path, int32_t file, ReadContext& ctx);
void read_superglue(Format format, const std::filesystem::path& path, int32_t file, ReadContext& ctx);
void read_mmlu(const std::filesystem::path& path, int32_t file, ReadContext& ctx);

}  // namespace mlr::data::detail
