// Generation: greedy output against transformers' generate() on the fixture models, the KV cache
// against full forward passes, batching with left padding against single prompts, stopping on
// EOS and stop strings, and the sampling filters against hand-computed distributions.
#include <doctest/doctest.h>

#include "tests/llama/tiny_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "llama/chat_template.h"
#include "llama/generate.h"
#include "llama/safetensors.h"
#include "tensor/ops.h"

namespace fs = std::filesystem;
using namespace mlr;

namespace {

const fs::path kModels = fs::path(MLR_SOURCE_DIR) / "tests" / "fixtures" / "llama" / "models";

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Decodes id i as "<i>", so stop strings can be written in terms of ids.
class AngleTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(const std::string&, bool) const override { return {}; }
  std::string decode(const std::vector<int32_t>& ids, bool) const override {
    std::string s;
    for (int32_t id : ids) s += "<" + std::to_string(id) + ">";
    return s;
  }
  int32_t vocab_size() const override { return 50; }
  std::optional<int32_t> bos_id() const override { return {}; }
  std::optional<int32_t> eos_id() const override { return {}; }
  std::optional<int32_t> pad_id() const override { return {}; }
  bool adds_bos() const override { return false; }
  bool adds_eos() const override { return false; }
  std::string id_to_piece(int32_t id) const override { return std::to_string(id); }
  std::string fingerprint() const override { return "angle"; }
};

}  // namespace

TEST_CASE("generate: greedy tokens equal transformers' generate on every fixture model") {
  for (const std::string name : {"llama2_mha", "llama3_gqa", "qwen2_tied"}) {
    CAPTURE(name);
    auto model = LlamaForCausalLM::from_pretrained((kModels / name).string());
    model->eval();
    SafetensorsFile ref = SafetensorsFile::open((kModels / name / "reference.safetensors").string());
    Tensor expected = ref.get("generate.output_ids");
    GenerationConfig cfg;
    cfg.max_new_tokens = expected.size(1);
    GenerationOutput out = generate(*model, ref.get("generate.input_ids"), ref.get("generate.attention_mask"), cfg);
    CHECK(out.output_ids.to_vector<int64_t>() == expected.to_vector<int64_t>());
    CHECK(out.finish_reasons[0] == FinishReason::length);
  }
}

TEST_CASE("generate: cached decoding gives the logits of a full forward pass") {
  Generator gen(21);
  LlamaConfig config = tiny_config();
  config.rope_scaling.type = RopeScaling::Type::llama3;
  config.rope_scaling.factor = 8;
  config.rope_scaling.original_max_position_embeddings = 16;
  LlamaForCausalLM model(config, &gen);
  // Row 1 is left padded by two.
  std::vector<int64_t> ids = {5, 9, 14, 3, 8, 0, 0, 22, 41, 7};
  std::vector<int64_t> mask = {1, 1, 1, 1, 1, 0, 0, 1, 1, 1};
  std::vector<int64_t> next = {11, 12, 13, 30, 31, 32};  // three decoded tokens per row

  KVCache cache(config, 2, 8, DType::f32, Device::cpu());
  Tensor prefill = model.forward_cached(from_vector(ids, {2, 5}), from_vector<int64_t>({0, 1, 2, 3, 4, 1, 1, 0, 1, 2}, {2, 5}),
                                        from_vector(mask, {2, 5}), cache);
  std::vector<Tensor> step_logits;
  for (int s = 0; s < 3; ++s) {
    Tensor tok = from_vector<int64_t>({next[s], next[3 + s]}, {2, 1});
    Tensor pos = from_vector<int64_t>({5 + s, 3 + s}, {2, 1});
    step_logits.push_back(model.forward_cached(tok, pos, Tensor(), cache));
  }
  CHECK(cache.length == 8);
  CHECK(error_of([&] { model.forward_cached(from_vector<int64_t>({1, 1}, {2, 1}), from_vector<int64_t>({8, 6}, {2, 1}),
                                            Tensor(), cache); }).find("do not fit in the cache") != std::string::npos);

  // Row 0 alone, unpadded: 8 tokens in one forward pass.
  LlamaBatch full0;
  full0.input_ids = from_vector<int64_t>({5, 9, 14, 3, 8, 11, 12, 13}, {1, 8});
  Tensor l0 = model.forward(full0).logits.data();
  // Row 1 alone: its 3 real prompt tokens and 3 decoded ones.
  LlamaBatch full1;
  full1.input_ids = from_vector<int64_t>({22, 41, 7, 30, 31, 32}, {1, 6});
  Tensor l1 = model.forward(full1).logits.data();

  CHECK(max_abs_diff(prefill.select(0, 0), l0.select(0, 0).narrow(0, 0, 5)) < 1e-5);
  CHECK(max_abs_diff(prefill.select(0, 1).narrow(0, 2, 3), l1.select(0, 0).narrow(0, 0, 3)) < 1e-5);
  for (int s = 0; s < 3; ++s) {
    CHECK(max_abs_diff(step_logits[s].select(0, 0).select(0, 0), l0.select(0, 0).select(0, 5 + s)) < 1e-5);
    CHECK(max_abs_diff(step_logits[s].select(0, 1).select(0, 0), l1.select(0, 0).select(0, 3 + s)) < 1e-5);
  }
}

TEST_CASE("generate: a batch of left-padded prompts generates what each prompt does alone") {
  Generator gen(22);
  LlamaForCausalLM model(tiny_config(), &gen);
  std::vector<std::vector<int64_t>> prompts = {{4, 8, 15, 16, 23, 42}, {7}, {30, 31, 32}};
  GenerationConfig cfg;
  cfg.max_new_tokens = 7;
  for (bool sample : {false, true}) {
    CAPTURE(sample);
    cfg.do_sample = sample;
    cfg.temperature = 0.8;
    cfg.top_k = 20;
    cfg.top_p = 0.9;
    GenerationOutput batched = generate(model, prompts, cfg);
    REQUIRE(batched.tokens.size() == 3);
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (sample) {
        // Draws are per (step, row): a row alone gets row 0's draws, so only row 0 can be compared.
        if (i != 0) continue;
      }
      GenerationOutput alone = generate(model, std::vector<std::vector<int64_t>>{prompts[i]}, cfg);
      CHECK(alone.tokens[0] == batched.tokens[i]);
      CHECK(batched.tokens[i].size() == 7);
    }
  }
  // The same seed gives the same sample; another seed (almost surely) another.
  cfg.do_sample = true;
  cfg.top_k = 0;
  cfg.top_p = 1.0;
  cfg.temperature = 2.0;
  auto a = generate(model, prompts, cfg), b = generate(model, prompts, cfg);
  cfg.seed = 99;
  auto c = generate(model, prompts, cfg);
  CHECK(a.tokens == b.tokens);
  CHECK(a.tokens != c.tokens);
}

TEST_CASE("generate: EOS and stop strings end a row; finished rows are padded") {
  Generator gen(23);
  LlamaForCausalLM model(tiny_config(), &gen);
  std::vector<std::vector<int64_t>> prompts = {{4, 8, 15}, {16, 23, 42, 9}};
  GenerationConfig cfg;
  cfg.max_new_tokens = 6;
  cfg.pad_token_id = 49;
  GenerationOutput free_run = generate(model, prompts, cfg);
  const auto& row0 = free_run.tokens[0];
  REQUIRE(row0.size() == 6);

  // Row 0's third token as EOS: row 0 stops there, row 1 runs on (unless it meets it first).
  cfg.eos_token_ids = {row0[2]};
  GenerationOutput eos = generate(model, prompts, cfg);
  const auto first_eos = std::find(row0.begin(), row0.end(), row0[2]) - row0.begin();
  CHECK(eos.tokens[0] == std::vector<int64_t>(row0.begin(), row0.begin() + first_eos + 1));
  CHECK(eos.finish_reasons[0] == FinishReason::eos);
  const auto& row1 = free_run.tokens[1];
  const bool row1_meets = std::find(row1.begin(), row1.end(), row0[2]) != row1.end();
  if (!row1_meets) {
    CHECK(eos.tokens[1] == row1);
    CHECK(eos.output_ids.shape() == Shape{2, 6});
    std::vector<int64_t> out = eos.output_ids.to_vector<int64_t>();
    for (int64_t s = first_eos + 1; s < 6; ++s) CHECK(out[static_cast<size_t>(s)] == 49);
  }

  // A stop string spanning two tokens: "<a><b>" with a, b row 1's second and third tokens.
  AngleTokenizer tok;
  GenerationConfig stop;
  stop.max_new_tokens = 6;
  stop.tokenizer = &tok;
  stop.stop_strings = {"<" + std::to_string(row1[1]) + "><" + std::to_string(row1[2]) + ">"};
  GenerationOutput s = generate(model, prompts, stop);
  CHECK(s.finish_reasons[1] == FinishReason::stop_string);
  CHECK(s.tokens[1] == std::vector<int64_t>(row1.begin(), row1.begin() + 3));

  // Everything finished after one step: the output has one column.
  GenerationConfig all;
  all.max_new_tokens = 6;
  all.eos_token_ids = {row0[0], row1[0]};
  GenerationOutput one = generate(model, prompts, all);
  CHECK(one.output_ids.shape() == Shape{2, 1});

  CHECK(error_of([&] { generate(model, prompts, stop = GenerationConfig{.stop_strings = {"x"}}); })
            .find("stop_strings need a tokenizer") != std::string::npos);
  Tensor right_padded = from_vector<int64_t>({1, 2, 0}, {1, 3});
  CHECK(error_of([&] { generate(model, right_padded, from_vector<int64_t>({1, 1, 0}, {1, 3}), GenerationConfig{}); })
            .find("must be left padded") != std::string::npos);
}

TEST_CASE("sampling: temperature, top-k and top-p filters and the inverse CDF") {
  // logits log(p) for p = 0.1, 0.2, 0.3, 0.4: temperature 1 gives p back.
  std::vector<float> logits = {std::log(0.1f), std::log(0.2f), std::log(0.3f), std::log(0.4f)};
  auto p = sampling_probabilities(logits, 1.0, 0, 1.0);
  CHECK(p[0] == doctest::Approx(0.1).epsilon(1e-6));
  CHECK(p[3] == doctest::Approx(0.4).epsilon(1e-6));
  // Temperature 2: p_i proportional to sqrt(p_i).
  p = sampling_probabilities(logits, 2.0, 0, 1.0);
  const double z = std::sqrt(0.1) + std::sqrt(0.2) + std::sqrt(0.3) + std::sqrt(0.4);
  CHECK(p[1] == doctest::Approx(std::sqrt(0.2) / z).epsilon(1e-6));
  // top-k 2: 0.3 and 0.4 renormalised.
  p = sampling_probabilities(logits, 1.0, 2, 1.0);
  CHECK(p[0] == 0);
  CHECK(p[1] == 0);
  CHECK(p[2] == doctest::Approx(3.0 / 7).epsilon(1e-6));
  // top-p 0.65: ascending cumulative 0.1, 0.3, 0.6 -> the tokens at <= 0.35 go (0.1, 0.2), 0.3 and 0.4 stay.
  p = sampling_probabilities(logits, 1.0, 0, 0.65);
  CHECK(p[1] == 0);
  CHECK(p[2] == doctest::Approx(3.0 / 7).epsilon(1e-6));
  // top-p 0.3: only the most likely token stays.
  p = sampling_probabilities(logits, 1.0, 0, 0.3);
  CHECK(p[3] == doctest::Approx(1.0));
  // top-k ties are kept.
  p = sampling_probabilities({1.f, 2.f, 2.f, 0.f}, 1.0, 1, 1.0);
  CHECK(p[1] == doctest::Approx(0.5));
  CHECK(p[2] == doctest::Approx(0.5));

  std::vector<double> probs = {0.1, 0.0, 0.5, 0.4};
  CHECK(sample_from(probs, 0.0) == 0);
  CHECK(sample_from(probs, 0.0999) == 0);
  CHECK(sample_from(probs, 0.1) == 2);
  CHECK(sample_from(probs, 0.65) == 3);
  CHECK(sample_from(probs, 0.999999999) == 3);
  CHECK(error_of([&] { sampling_probabilities(logits, 0.0, 0, 1.0); }).find("temperature must be positive") !=
        std::string::npos);
  CHECK(error_of([&] { sampling_probabilities(logits, 1.0, 0, 0.0); }).find("top_p must be in (0, 1]") !=
        std::string::npos);
}

namespace {

const fs::path kGenerate = fs::path(MLR_SOURCE_DIR) / "tests" / "fixtures" / "llama" / "generate";

nlohmann::json generate_reference() {
  std::ifstream in(kGenerate / "reference.json");
  REQUIRE(in);
  return nlohmann::json::parse(in);
}

// Streams `tokens` through an IncrementalDecoder; every piece must be whole UTF-8.
std::string stream_text(const Tokenizer& tok, int32_t context, const std::vector<int64_t>& tokens,
                        const std::vector<std::string>& stops = {}) {
  IncrementalDecoder decoder(tok, {context}, stops);
  std::string out;
  auto whole_utf8 = [](const std::string& s) {
    for (size_t i = 0; i < s.size();) {
      const unsigned char c = static_cast<unsigned char>(s[i]);
      const size_t n = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
      if (i + n > s.size()) return false;
      i += n;
    }
    return true;
  };
  for (int64_t t : tokens) {
    const std::string piece = decoder.push(t);
    CHECK(whole_utf8(piece));
    out += piece;
  }
  out += decoder.finish();
  CHECK(out == decoder.text());
  return out;
}

}  // namespace

TEST_CASE("generate: text, EOS list and padding on the generate fixture equal transformers' generate") {
  const nlohmann::json ref = generate_reference();
  auto model = LlamaForCausalLM::from_pretrained((kGenerate / "model").string());
  model->eval();
  auto tok = load_tokenizer((kGenerate / "model").string());
  // generation_config.json's list of EOS ids and its pad id win over config.json's single EOS.
  const CheckpointGenerationIds ids = checkpoint_generation_ids((kGenerate / "model").string(), tok.get());
  CHECK(ids.eos_token_ids == ref["eos_token_ids"].get<std::vector<int64_t>>());
  CHECK(ids.pad_token_id == ref["pad_token_id"].get<int64_t>());

  GenerationConfig cfg;
  cfg.max_new_tokens = ref["max_new_tokens"];
  cfg.eos_token_ids = ids.eos_token_ids;
  cfg.pad_token_id = ids.pad_token_id;
  for (const char* name : {"base", "chat"}) {
    CAPTURE(name);
    const nlohmann::json& c = ref[name];
    std::vector<std::vector<int64_t>> prompts;
    if (std::string(name) == "chat") {
      auto chat = load_chat_template((kGenerate / "model").string());
      REQUIRE(chat);
      const std::string text = chat->chat_template.apply({{"system", c["system"]}, {"user", c["prompt"]}}, true,
                                                         chat->bos_token, chat->eos_token);
      CHECK(text == c["rendered"].get<std::string>());
      auto encoded = tok->encode(text, false);
      prompts.emplace_back(encoded.begin(), encoded.end());
    } else {
      for (const auto& p : c["prompts"]) {
        auto encoded = tok->encode(p.get<std::string>(), true);
        prompts.emplace_back(encoded.begin(), encoded.end());
      }
    }
    const GenerationOutput out = generate(*model, prompts, cfg);
    for (size_t i = 0; i < prompts.size(); ++i) {
      CAPTURE(i);
      const nlohmann::json& row = c["rows"][i];
      CHECK(prompts[i] == row["prompt_ids"].get<std::vector<int64_t>>());
      CHECK(out.tokens[i] == row["tokens"].get<std::vector<int64_t>>());
      const bool stopped = std::find(ids.eos_token_ids.begin(), ids.eos_token_ids.end(), out.tokens[i].back()) !=
                           ids.eos_token_ids.end();
      CHECK(out.finish_reasons[i] == (stopped ? FinishReason::eos : FinishReason::length));
      CHECK(stream_text(*tok, static_cast<int32_t>(prompts[i].back()), out.tokens[i]) == row["text"].get<std::string>());
    }
  }
}

TEST_CASE("incremental decoding: whole characters, word-start spaces and stop strings") {
  // Byte-level BPE: characters of 2, 3 and 4 bytes split over byte tokens come out whole.
  auto bytes = load_tokenizer((kGenerate / "model").string());
  const std::string text = "caf\xC3\xA9 \xE4\xB8\x96\xE7\x95\x8C \xF0\x9F\x99\x82 ok";
  auto ids = bytes->encode("x " + text, false);
  REQUIRE(ids.size() > 4);
  std::vector<int64_t> rest(ids.begin() + 1, ids.end());
  CHECK(stream_text(*bytes, ids[0], rest) == bytes->decode(ids, true).substr(bytes->decode({ids[0]}, true).size()));
  CHECK(stream_text(*bytes, ids[0], rest) == " " + text);

  // Sentencepiece-style BPE: the first word's "▁" is a space after the prompt's last token.
  auto spm = load_tokenizer((fs::path(MLR_SOURCE_DIR) / "tests" / "fixtures" / "tokenizer" / "spbpe" / "llama_class").string());
  auto sp_ids = spm->encode("Hello world again", false);
  REQUIRE(sp_ids.size() >= 3);
  std::vector<int64_t> sp_rest(sp_ids.begin() + 1, sp_ids.end());
  const std::string whole = spm->decode(sp_ids, true), first = spm->decode({sp_ids[0]}, true);
  CHECK(stream_text(*spm, sp_ids[0], sp_rest) == whole.substr(first.size()));
  CHECK(stream_text(*spm, sp_ids[0], sp_rest).find(" again") != std::string::npos);

  // A stop string ends the text before it; a tail that may begin one waits.
  AngleTokenizer angle;
  IncrementalDecoder d(angle, {}, {"<3><4>"});
  CHECK(d.push(1) == "<1>");
  CHECK(d.push(3) == "");  // "<3>" may begin the stop string
  CHECK(d.push(5) == "<3><5>");
  CHECK(d.push(3) == "");
  CHECK(d.push(4) == "");
  CHECK(d.stopped());
  CHECK(d.push(7) == "");
  CHECK(d.text() == "<1><3><5>");
  IncrementalDecoder held(angle, {}, {"<3><4>"});
  held.push(3);
  CHECK(held.finish() == "<3>");
}
