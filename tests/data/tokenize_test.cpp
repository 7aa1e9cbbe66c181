// Tokenisation: the loss mask covers the target only (lm-evaluation-harness's _encode_pair
// boundary), BOS/EOS follow the tokenizer's configuration or the dataset's override, and
// fit_example truncates (counted by the caller) or reports an example with no target left.
#include <memory>

#include "data/readers.h"
#include "data/template.h"
#include "data/tokenize.h"
#include "tests/data/data_test_util.h"

using namespace mlr::data;
using namespace mlr::data::test;

namespace {

Example example(std::string prompt, std::string target) {
  Example e;
  e.prompt = std::move(prompt);
  e.target = std::move(target);
  return e;
}

// The text of the masked (mask == 1) and unmasked tokens under the byte tokenizer.
std::pair<std::string, std::string> split_by_mask(const TokenizedExample& t) {
  std::vector<int32_t> prompt, target;
  for (size_t i = 0; i < t.ids.size(); ++i) (t.mask[i] ? target : prompt).push_back(t.ids[i]);
  return {bytes_text(prompt), bytes_text(target)};
}

}  // namespace

TEST_CASE("tokenize: mask on the target, BOS and EOS") {
  const ByteTokenizer tok(/*adds_bos=*/true, /*adds_eos=*/false);
  const ResolvedSpecials specials = resolve_specials(tok, {});
  CHECK(specials.bos);
  CHECK(!specials.eos);
  const TokenizedExample t = tokenize_example(tok, example("Q: hi\nA:", " yes"), specials);
  REQUIRE(t.ids.size() == 1 + 8 + 4);
  CHECK(t.ids[0] == 1);
  CHECK(t.mask[0] == 0);
  CHECK(split_by_mask(t) == std::pair<std::string, std::string>{"Q: hi\nA:", " yes"});
  CHECK(std::vector<uint8_t>(t.mask.begin(), t.mask.end()) ==
        std::vector<uint8_t>{0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1});

  // EOS forced on, BOS forced off: EOS belongs to the target.
  const ResolvedSpecials eos_only = resolve_specials(tok, {.bos = Special::never, .eos = Special::always});
  const TokenizedExample e = tokenize_example(tok, example("ab", "c"), eos_only);
  CHECK(e.ids == std::vector<int32_t>{'a' + 3, 'b' + 3, 'c' + 3, 2});
  CHECK(e.mask == std::vector<uint8_t>{0, 0, 1, 1});

  // The prompt's trailing whitespace moves to the target (the harness's _encode_pair rule).
  const TokenizedExample w = tokenize_example(tok, example("Answer: ", "B"), resolve_specials(tok, {.bos = Special::never}));
  CHECK(split_by_mask(w) == std::pair<std::string, std::string>{"Answer:", " B"});
}

TEST_CASE("tokenize: chat history targets are trained on too") {
  const ByteTokenizer tok(false, false);
  Example e = example("U2|", "A2");
  e.history = {{"U1|", "A1"}};
  const TokenizedExample t = tokenize_example(tok, e, resolve_specials(tok, {}));
  CHECK(t.mask == std::vector<uint8_t>{0, 0, 0, 1, 1, 0, 0, 0, 1, 1});
}

TEST_CASE("tokenize: BOS/EOS settings") {
  CHECK(parse_special("auto") == Special::as_tokenizer);
  CHECK(parse_special("true") == Special::always);
  CHECK(parse_special("false") == Special::never);
  CHECK(error_of([] { parse_special("yes"); }).find("'yes' is not a BOS/EOS setting") != std::string::npos);

  class NoSpecials : public ByteTokenizer {
   public:
    std::optional<int32_t> eos_id() const override { return std::nullopt; }
  };
  const NoSpecials tok;
  CHECK(error_of([&] { resolve_specials(tok, {.eos = Special::always}); }).find("eos is on but the tokenizer") !=
        std::string::npos);
}

TEST_CASE("tokenize: real LLaMA tokenizer on a real MMLU question" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(shared_data_present(), "../shared/data is absent");
  MLR_SKIP_UNLESS(shared_tokenizer_present(), "../shared/models/llama-tokenizer is absent");
  const auto tok = mlr::load_tokenizer((kSharedModels / "llama-tokenizer" / "tokenizer.model").string());
  const ReadResult r = read_records(Format::mmlu, kSharedData / "mmlu" / "test" / "abstract_algebra_test.csv");
  const CompiledTemplate tmpl(default_template(Format::mmlu), Format::mmlu, "mmlu");
  const Example ex = tmpl.render(r.records[0], "x");
  const ResolvedSpecials specials = resolve_specials(*tok, {});
  CHECK(specials.bos);  // LlamaTokenizer adds BOS, not EOS
  CHECK(!specials.eos);
  const TokenizedExample t = tokenize_example(*tok, ex, specials);
  CHECK(t.ids[0] == 1);
  // The whole text is encoded once: without BOS, the ids are the tokenizer's own encoding.
  CHECK(std::vector<int32_t>(t.ids.begin() + 1, t.ids.end()) == tok->encode(ex.prompt + ex.target, false));
  std::vector<int32_t> target;
  for (size_t i = 0; i < t.ids.size(); ++i) {
    if (t.mask[i]) target.push_back(t.ids[i]);
  }
  REQUIRE(target.size() == 1);
  CHECK(tok->id_to_piece(target[0]) == "\xe2\x96\x81" "B");  // "▁B": the continuation " B"
  // Everything before the target is the prompt encoded alone.
  CHECK(t.ids.size() - 1 - 1 == tok->encode(ex.prompt, false).size());

  // Alpaca: the response starts after "### Response:\n"; EOS when asked for.
  const ReadResult a = read_records(Format::alpaca, kSharedData / "alpaca" / "alpaca_data_5000_subset.json");
  const CompiledTemplate at(default_template(Format::alpaca), Format::alpaca, "alpaca");
  const TokenizedExample ta = tokenize_example(*tok, at.render(a.records[0], "x"), resolve_specials(*tok, {.eos = Special::always}));
  CHECK(ta.ids.back() == 2);
  CHECK(ta.mask.back() == 1);
  std::vector<int32_t> response;
  for (size_t i = 0; i < ta.ids.size(); ++i) {
    if (ta.mask[i]) response.push_back(ta.ids[i]);
  }
  // The prompt's trailing "\n" moved to the target with the harness rule; the tokens are those of
  // the joint encoding either way.
  CHECK(tok->decode(response, true) == "\nNo");
}

TEST_CASE("tokenize: fit_example truncation") {
  // BOS p p p t t EOS
  const std::vector<int32_t> ids = {1, 10, 11, 12, 20, 21, 2};
  const std::vector<uint8_t> mask = {0, 0, 0, 0, 1, 1, 1};
  std::vector<int32_t> out;
  std::vector<uint8_t> out_mask;
  const auto fit = [&](int64_t max, Truncation side) {
    out.clear();
    out_mask.clear();
    return fit_example(ids, mask, max, side, 1, out, out_mask);
  };
  CHECK(fit(7, Truncation::right) == Fit::whole);
  CHECK(out == ids);
  CHECK(fit(5, Truncation::right) == Fit::truncated);
  CHECK(out == std::vector<int32_t>{1, 10, 11, 12, 20});
  CHECK(out_mask == std::vector<uint8_t>{0, 0, 0, 0, 1});
  CHECK(fit(4, Truncation::right) == Fit::no_target);  // the prompt alone fills the row
  CHECK(out.empty());
  CHECK(fit(4, Truncation::left) == Fit::truncated);
  CHECK(out == std::vector<int32_t>{1, 20, 21, 2});  // BOS kept, the prompt cut
  CHECK(out_mask == std::vector<uint8_t>{0, 1, 1, 1});
  CHECK(fit(5, Truncation::left) == Fit::truncated);
  CHECK(out == std::vector<int32_t>{1, 12, 20, 21, 2});
  CHECK(fit(1, Truncation::left) == Fit::truncated);
  CHECK(out == std::vector<int32_t>{2});
  CHECK(parse_truncation("left") == Truncation::left);
  CHECK(error_of([] { parse_truncation("middle"); }).find("'middle' is not a truncation side") != std::string::npos);
}

namespace {

// A long text of words, punctuation and line breaks (or, with `spaces` false, one endless word),
// the same for a seed.
std::string long_text(size_t bytes, uint32_t seed, bool spaces = true) {
  static const char* words[] = {"the",    "passage", "of",   "Ice",  "floats", "42",   "water,", "colder;",
                                "über",   "naïve",   "x+y=z", "(see", "below)", "--",   "a",      "\"quoted\""};
  std::string out;
  uint32_t state = seed;
  while (out.size() < bytes) {
    state = state * 1664525u + 1013904223u;
    if (!spaces) {
      out += "abcdefgh"[(state >> 24) % 8];
      continue;
    }
    out += words[(state >> 24) % 16];
    out += (state >> 8) % 29 == 0 ? "\n" : (state >> 8) % 31 == 0 ? "  " : " ";
  }
  return out;
}

// Windowed tokenization of a long example against the whole one: the first and last
// `row` tokens, their masks, and what fit_example keeps on either side are the same.
void check_windows_match_whole(const mlr::Tokenizer& tok, const Example& ex, const ResolvedSpecials& specials, int64_t row) {
  INFO("tokenizer ", tok.fingerprint(), ", prompt of ", ex.prompt.size(), " bytes, target of ", ex.target.size(), ", row ", row);
  const TokenizedExample whole = tokenize_example(tok, ex, specials);
  const TokenizedExample windowed = tokenize_example(tok, ex, specials, row);
  REQUIRE(windowed.windowed);
  CHECK(!whole.windowed);
  CHECK(windowed.ids.size() < whole.ids.size() / 4);
  const auto r = static_cast<size_t>(row);
  REQUIRE(windowed.ids.size() >= 2 * r);
  CHECK(std::vector<int32_t>(windowed.ids.begin(), windowed.ids.begin() + row) ==
        std::vector<int32_t>(whole.ids.begin(), whole.ids.begin() + row));
  CHECK(std::vector<int32_t>(windowed.ids.end() - row, windowed.ids.end()) ==
        std::vector<int32_t>(whole.ids.end() - row, whole.ids.end()));
  CHECK(std::vector<uint8_t>(windowed.mask.begin(), windowed.mask.begin() + row) ==
        std::vector<uint8_t>(whole.mask.begin(), whole.mask.begin() + row));
  CHECK(std::vector<uint8_t>(windowed.mask.end() - row, windowed.mask.end()) ==
        std::vector<uint8_t>(whole.mask.end() - row, whole.mask.end()));
  for (const Truncation side : {Truncation::right, Truncation::left}) {
    for (const int64_t max_tokens : {row, row / 2 + 1}) {
      std::vector<int32_t> ids_w, ids_a;
      std::vector<uint8_t> mask_w, mask_a;
      const int32_t bos = specials.bos ? specials.bos_id : -1;
      CHECK(fit_example(windowed.ids, windowed.mask, max_tokens, side, bos, ids_w, mask_w) ==
            fit_example(whole.ids, whole.mask, max_tokens, side, bos, ids_a, mask_a));
      CHECK(ids_w == ids_a);
      CHECK(mask_w == mask_a);
    }
  }
}

}  // namespace

TEST_CASE("tokenize: a text far longer than a row is tokenized in windows with the whole text's tokens") {
  const auto gpt2 = mlr::load_tokenizer((fs::path(MLR_SOURCE_DIR) / "tests" / "fixtures" / "tokenizer" / "gpt2").string());
  const ByteTokenizer bytes(true, false);
  for (const mlr::Tokenizer* tok : {static_cast<const mlr::Tokenizer*>(gpt2.get()), static_cast<const mlr::Tokenizer*>(&bytes)}) {
    const ResolvedSpecials specials = resolve_specials(*tok, {.bos = Special::always, .eos = Special::always});
    // A huge prompt and a short target; a huge target; chat turns around a huge message; a text
    // without spaces (cut inside a word).
    check_windows_match_whole(*tok, example(long_text(200000, 1) + "\nQuestion: is it?\nAnswer:", " yes"), specials, 256);
    check_windows_match_whole(*tok, example("Write:", " " + long_text(150000, 2)), specials, 128);
    Example chat = example("### Instruction:\n" + long_text(120000, 3) + "\n\n### Response:\n", long_text(30000, 4));
    chat.history = {{"### Instruction:\nhi\n\n### Response:\n", "hello"}};
    check_windows_match_whole(*tok, chat, specials, 200);
    check_windows_match_whole(*tok, example(long_text(100000, 5, /*spaces=*/false), "!"), specials, 100);
  }
  // Texts up to a few rows long are tokenized whole, as without a bound.
  const ResolvedSpecials specials = resolve_specials(bytes, {});
  const Example short_one = example(long_text(3000, 6), " no");
  CHECK(!tokenize_example(bytes, short_one, specials, 256).windowed);
  CHECK(tokenize_example(bytes, short_one, specials, 256).ids == tokenize_example(bytes, short_one, specials).ids);
}

TEST_CASE("tokenize: windows with the LLaMA sentencepiece tokenizer" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(shared_tokenizer_present(), "../shared/models/llama-tokenizer is absent");
  const auto tok = mlr::load_tokenizer((kSharedModels / "llama-tokenizer" / "tokenizer.model").string());
  const ResolvedSpecials specials = resolve_specials(*tok, {.eos = Special::always});
  check_windows_match_whole(*tok, example(long_text(200000, 7) + "\nQuestion: is it?\nAnswer:", " yes"), specials, 256);
  check_windows_match_whole(*tok, example("Say:", " " + long_text(100000, 8)), specials, 128);
  check_windows_match_whole(*tok, example(long_text(100000, 9, /*spaces=*/false), " B"), specials, 100);
}
