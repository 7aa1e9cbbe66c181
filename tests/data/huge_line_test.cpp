// Memory and time stay bounded on a huge input: one 32 MB JSONL line (a BoolQ passage) is read,
// rendered and tokenized only as far as a row of seq_len tokens can use it. The work runs in a
// child process so that its peak resident memory (getrusage of the child) is its own, not a high
// mark left by other test cases; the bound is a small multiple of the line, where tokenizing the
// whole field took over 19 GB. Wall times are printed, not asserted (a loaded machine is slow).
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "data/cache.h"
#include "data/loader.h"
#include "tests/data/data_test_util.h"

using namespace mlr::data;
using namespace mlr::data::test;

namespace {

constexpr size_t kPassageBytes = size_t{32} << 20;
constexpr int64_t kSeqLen = 512;

int64_t resident_bytes() {
  long pages = 0, resident = 0;
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f != nullptr) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return static_cast<int64_t>(resident) * ::sysconf(_SC_PAGESIZE);
}

// What the child found, one "key=value" per line.
std::string prepare_and_load(const fs::path& file, const fs::path& cache) {
  const auto tok = mlr::load_tokenizer((fs::path(MLR_SOURCE_DIR) / "tests" / "fixtures" / "tokenizer" / "gpt2").string());
  DatasetSpec spec;
  spec.name = "boolq";
  spec.format = Format::boolq;
  spec.path = file;
  spec.tmpl = default_template(Format::boolq);
  const auto start = std::chrono::steady_clock::now();
  auto ds = prepare_dataset(spec, *tok, {.dir = cache, .threads = 1, .max_row_tokens = kSeqLen});
  const double prepare_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::string out = fmt::format("examples={}\nlength1={}\nprepare_seconds={:.2f}\n", ds->size(), ds->length(1), prepare_seconds);

  LoaderOptions o;
  o.batch_rows = 2;
  o.pack.seq_len = kSeqLen;
  o.pack.packed = false;
  o.prefetch = 0;
  const std::vector<MixtureSource> sources = {{.name = "boolq", .size = ds->size()}};
  Loader right({ds}, sources, MixtureOptions{.mode = MixMode::weights, .seed = 1}, o);
  std::string error;
  for (int i = 0; i < 4 && error.empty(); ++i) error = error_of([&] { right.next(); });
  out += "right_error=" + error + "\n";

  o.truncation = Truncation::left;
  Loader left({ds}, sources, MixtureOptions{.mode = MixMode::weights, .seed = 1}, o);
  const Batch b = left.next();
  for (size_t k = 0; k < b.example_index.size(); ++k) {
    if (b.example_index[k] != 1) continue;
    const auto row = static_cast<size_t>(b.example_row[k]) * static_cast<size_t>(kSeqLen);
    std::vector<int32_t> target;
    for (size_t t = row; t < row + static_cast<size_t>(kSeqLen); ++t)
      if (b.labels[t] != -100) target.push_back(b.labels[t]);
    out += fmt::format("left_length={}\nleft_target={}\n", b.example_length[k], tok->decode(target, false));
  }
  const double total_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out + fmt::format("total_seconds={:.2f}\n", total_seconds);
}

std::string value_of(const std::string& report, const std::string& key) {
  const size_t at = report.find(key + "=");
  if (at == std::string::npos) return "";
  const size_t begin = at + key.size() + 1;
  return report.substr(begin, report.find('\n', begin) - begin);
}

}  // namespace

TEST_CASE("data: a 32 MB JSONL line is tokenized only as far as a row can use it, in bounded memory") {
  TempDir tmp;
  const fs::path file = tmp.path / "boolq.jsonl";
  {
    // Words and sentences, so the tokenizer has real work; the passage is valid JSON text.
    std::string passage;
    passage.reserve(kPassageBytes + 64);
    for (uint32_t i = 0; passage.size() < kPassageBytes; ++i)
      passage += fmt::format("Sentence {} of the passage says that ice floats on water. ", i * 2654435761u % 100000);
    std::ofstream out(file, std::ios::binary);
    out << R"({"question": "is the sky blue", "passage": "The sky is blue.", "label": "true"})" "\n";
    out << R"({"question": "does ice float on water", "passage": ")" << passage << R"(", "label": "true"})" "\n";
  }
  const int64_t line_bytes = static_cast<int64_t>(fs::file_size(file));

  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  std::fflush(nullptr);
  const int64_t resident_at_fork = resident_bytes();
  const auto start = std::chrono::steady_clock::now();
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(pipe_fds[0]);
    std::string report;
    try {
      report = prepare_and_load(file, tmp.path / "cache");
    } catch (const std::exception& e) {
      report = std::string("exception=") + e.what() + "\n";
    }
    const ssize_t written = ::write(pipe_fds[1], report.data(), report.size());
    ::_exit(written == static_cast<ssize_t>(report.size()) ? 0 : 1);
  }
  ::close(pipe_fds[1]);
  std::string report;
  char buffer[4096];
  for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0;) report.append(buffer, static_cast<size_t>(n));
  ::close(pipe_fds[0]);
  int status = 0;
  rusage usage{};
  REQUIRE(::wait4(child, &status, 0, &usage) == child);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  INFO("child report:\n", report);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  CHECK(value_of(report, "exception").empty());

  const int64_t peak_growth = static_cast<int64_t>(usage.ru_maxrss) * 1024 - resident_at_fork;
  MESSAGE(fmt::format("{:.1f} MB line: peak RSS growth {:.1f} MB ({:.1f}x the line), prepare {} s, prepare + two loaders {} s, "
                      "child wall {:.2f} s",
                      static_cast<double>(line_bytes) / 1e6, static_cast<double>(peak_growth) / 1e6,
                      static_cast<double>(peak_growth) / static_cast<double>(line_bytes), value_of(report, "prepare_seconds"),
                      value_of(report, "total_seconds"), seconds));
  CHECK(peak_growth < 8 * line_bytes);

  CHECK(value_of(report, "examples") == "2");
  // The huge example holds its head and tail windows, not 8M tokens.
  CHECK(std::stoll(value_of(report, "length1")) < 64 * kSeqLen);
  CHECK(std::stoll(value_of(report, "length1")) > 2 * kSeqLen);
  // Right truncation keeps the passage's start: no target, the error names the file and line.
  CHECK(value_of(report, "right_error").find("boolq.jsonl:2: dataset 'boolq'") != std::string::npos);
  CHECK(value_of(report, "right_error").find("no target token within seq_len 512") != std::string::npos);
  // Left truncation keeps the end: a full row whose target is the answer.
  CHECK(value_of(report, "left_length") == "512");
  CHECK(value_of(report, "left_target") == " yes");
}
