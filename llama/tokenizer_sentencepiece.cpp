// SentencePiece tokenizer (LLaMA 1/2, TinyLlama, llama2.c models): tokenizer.model through
// libsentencepiece, with BOS/EOS behaviour from tokenizer_config.json.
//
// Rules:
//  - encode(text) is sentencepiece's Encode; text that looks like a control token ("<s>") is
//    encoded as ordinary text, as the sentencepiece library does.
//  - encode(text, true) prepends BOS when add_bos_token (default true, as LlamaTokenizer) and
//    appends EOS when add_eos_token (default false).
//  - BOS/EOS/pad/unk ids are the model's own, unless tokenizer_config.json names a token, which
//    must then be a piece of the model.
//  - decode(ids, skip_special=true) drops control tokens (BOS, EOS, pad) and unk; with
//    skip_special=false a control token appears as its piece text and the ids between are decoded
//    by sentencepiece run by run.
#include <sentencepiece_processor.h>

#include <fmt/format.h>

#include "llama/tokenizer_detail.h"
#include "tensor/error.h"

namespace mlr::tokenizer_detail {

namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::filesystem::path& model_path, TokenizerConfig config)
      : path_(model_path.string()) {
    const std::string contents = read_file(model_path);
    sentencepiece::util::Status status;
    try {
      status = sp_.LoadFromSerializedProto(contents);
    } catch (const std::exception& e) {  // libsentencepiece throws from its trie builder on some inputs
      throw Error(fmt::format("tokenizer: {}: not a valid sentencepiece model ({})", path_, e.what()));
    }
    MLR_CHECK(status.ok(), "tokenizer: {}: not a valid sentencepiece model ({})", path_, status.ToString());
    MLR_CHECK(sp_.GetPieceSize() > 0, "tokenizer: {}: sentencepiece model has no pieces", path_);

    bos_ = resolve(config.bos_token, sp_.bos_id(), "bos_token", config);
    eos_ = resolve(config.eos_token, sp_.eos_id(), "eos_token", config);
    pad_ = resolve(config.pad_token, sp_.pad_id(), "pad_token", config);
    add_bos_ = config.add_bos_token.value_or(true) && bos_.has_value();
    add_eos_ = config.add_eos_token.value_or(false) && eos_.has_value();
    fingerprint_ = make_fingerprint("spm", fnv1a64(config.contents, fnv1a64(contents)));
  }

  std::vector<int32_t> encode(const std::string& text, bool add_special) const override {
    std::vector<int> ids;
    const auto status = sp_.Encode(text, &ids);
    MLR_CHECK(status.ok(), "tokenizer: {}: sentencepiece encode failed: {}", path_, status.ToString());
    std::vector<int32_t> out;
    out.reserve(ids.size() + 2);
    if (add_special && add_bos_) out.push_back(*bos_);
    out.insert(out.end(), ids.begin(), ids.end());
    if (add_special && add_eos_) out.push_back(*eos_);
    return out;
  }

  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override {
    std::string out;
    std::vector<int> run;
    const auto flush = [&] {
      if (run.empty()) return;
      std::string text;
      const auto status = sp_.Decode(run, &text);
      MLR_CHECK(status.ok(), "tokenizer: {}: sentencepiece decode failed: {}", path_, status.ToString());
      out += text;
      run.clear();
    };
    for (int32_t id : ids) {
      MLR_CHECK(id >= 0 && id < vocab_size(), "tokenizer: {}: decode: id {} is outside the vocabulary [0, {})",
                path_, id, vocab_size());
      const bool control = sp_.IsControl(id);
      if (skip_special && (control || sp_.IsUnknown(id))) continue;
      if (control) {
        flush();
        out += sp_.IdToPiece(id);
      } else {
        run.push_back(id);
      }
    }
    flush();
    return out;
  }

  int32_t vocab_size() const override { return sp_.GetPieceSize(); }
  std::optional<int32_t> bos_id() const override { return bos_; }
  std::optional<int32_t> eos_id() const override { return eos_; }
  std::optional<int32_t> pad_id() const override { return pad_; }
  bool adds_bos() const override { return add_bos_; }
  bool adds_eos() const override { return add_eos_; }
  std::string id_to_piece(int32_t id) const override {
    MLR_CHECK(id >= 0 && id < vocab_size(), "tokenizer: {}: id {} is outside the vocabulary [0, {})", path_, id,
              vocab_size());
    return sp_.IdToPiece(id);
  }
  std::string fingerprint() const override { return fingerprint_; }
  TokenizerBackend backend() const override { return TokenizerBackend::sentencepiece; }

 private:
  // The configured token's id (it must be a piece of the model), else the model's own id.
  std::optional<int32_t> resolve(const std::optional<std::string>& token, int model_id, const char* key,
                                 const TokenizerConfig& config) const {
    if (token) {
      const int id = sp_.PieceToId(*token);
      MLR_CHECK(!sp_.IsUnknown(id) || *token == sp_.IdToPiece(id),
                "tokenizer: {}: {} '{}' is not a piece of the sentencepiece model {}", config.path.string(), key,
                *token, path_);
      return id;
    }
    if (model_id >= 0) return model_id;
    return std::nullopt;
  }

  std::string path_;
  sentencepiece::SentencePieceProcessor sp_;
  std::optional<int32_t> bos_, eos_, pad_;
  bool add_bos_ = false, add_eos_ = false;
  std::string fingerprint_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_sentencepiece(const std::filesystem::path& model_path, TokenizerConfig config) {
  return std::make_unique<SentencePieceTokenizer>(model_path, std::move(config));
}

}  // namespace mlr::tokenizer_detail
