// tokenizer.model -> the tokenizer.json that transformers 5 builds for LlamaTokenizer, and the
// rewrite LlamaTokenizer applies to a sentencepiece-style tokenizer.json (llama/tokenizer_detail.h).
//
// transformers' conversion, as read from its code (convert_slow_tokenizer.SentencePieceExtractor,
// tokenization_utils_base.generate_merges, models/llama/tokenization_llama.py) and checked against
// it by tests/fixtures/tokenizer/shared_data_parity.json:
//   vocab    every piece -> its index, in model order;
//   merges   for each piece p, every split p = l + r (at character boundaries) with l and r in the
//            vocabulary; ranked by (index of p, characters in l), i.e. a lower piece index merges
//            first. Sentencepiece lists pieces by descending score, so this is its score order.
//   added    control pieces and the unk/bos/eos/pad tokens are special added tokens, user-defined
//            pieces plain added tokens, all matched on the raw text (normalized=false);
//   template BOS when add_bos_token, EOS when add_eos_token (both default false here);
//   the normalizer spec of the model (whitespace collapsing, dummy prefix) is not used: the
//   Metaspace pre-tokenizer of apply_llama_tokenizer replaces it.
#include <fmt/format.h>

#include <algorithm>
#include <unordered_map>

#include "llama/tokenizer_detail.h"
#include "llama/tokenizer_unicode.h"
#include "tensor/error.h"

namespace mlr::tokenizer_detail {

namespace {

using json = nlohmann::json;

// sentencepiece_model.proto: ModelProto.pieces (field 1) = SentencePiece {piece = 1 (string),
// score = 2 (float), type = 3 (enum; NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5,
// BYTE 6)}. Only these fields are read; the rest of the message is skipped by wire type.
struct Piece {
  std::string text;
  int type = 1;
};
enum PieceType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

class ProtoReader {
 public:
  ProtoReader(std::string_view data, const std::filesystem::path& path, size_t base = 0)
      : data_(data), path_(path), base_(base) {}
  bool done() const { return pos_ >= data_.size(); }

  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (done()) fail("truncated varint");
      const auto byte = static_cast<uint8_t>(data_[pos_++]);
      value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if (!(byte & 0x80)) return value;
    }
    fail("varint longer than 10 bytes");
  }
  // The next field: its number and wire type; for wire type 2 the payload in *bytes.
  std::pair<uint32_t, int> field(std::string_view* bytes, uint64_t* number_value) {
    const uint64_t key = varint();
    const auto number = static_cast<uint32_t>(key >> 3);
    const int wire = static_cast<int>(key & 7);
    switch (wire) {
      case 0: *number_value = varint(); break;
      case 1: skip(8); break;
      case 5:
        if (data_.size() - pos_ < 4) fail("truncated 32-bit field");
        *number_value = static_cast<uint8_t>(data_[pos_]) | static_cast<uint8_t>(data_[pos_ + 1]) << 8 |
                        static_cast<uint8_t>(data_[pos_ + 2]) << 16 |
                        static_cast<uint64_t>(static_cast<uint8_t>(data_[pos_ + 3])) << 24;
        pos_ += 4;
        break;
      case 2: {
        const uint64_t len = varint();
        if (len > data_.size() - pos_) fail(fmt::format("field {} of {} bytes runs past the end", number, len));
        *bytes = data_.substr(pos_, len);
        pos_ += len;
        break;
      }
      default: fail(fmt::format("unsupported protobuf wire type {}", wire));
    }
    return {number, wire};
  }
  size_t offset() const { return base_ + pos_; }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(fmt::format("tokenizer: {}: not a valid sentencepiece model: {} at byte {}", path_.string(), what,
                            base_ + pos_));
  }

 private:
  void skip(size_t n) {
    if (data_.size() - pos_ < n) fail("truncated field");
    pos_ += n;
  }
  std::string_view data_;
  const std::filesystem::path& path_;
  size_t base_, pos_ = 0;
};

std::vector<Piece> read_pieces(const std::filesystem::path& path, const std::string& contents) {
  std::vector<Piece> pieces;
  ProtoReader model(contents, path);
  while (!model.done()) {
    std::string_view bytes;
    uint64_t value = 0;
    const auto [number, wire] = model.field(&bytes, &value);
    if (number != 1) continue;
    if (wire != 2) model.fail("ModelProto.pieces is not a message");
    ProtoReader piece(bytes, path, model.offset() - bytes.size());
    Piece p;
    bool has_text = false;
    while (!piece.done()) {
      std::string_view text;
      uint64_t v = 0;
      const auto [n, w] = piece.field(&text, &v);
      if (n == 1 && w == 2) {
        p.text = std::string(text);
        has_text = true;
      } else if (n == 3 && w == 0) {
        p.type = static_cast<int>(v);
      }
    }
    if (!has_text || p.text.empty()) piece.fail(fmt::format("piece {} has no text", pieces.size()));
    if (p.type < kNormal || p.type > kByte) piece.fail(fmt::format("piece {} has unknown type {}", pieces.size(), p.type));
    pieces.push_back(std::move(p));
  }
  if (pieces.empty()) throw Error(fmt::format("tokenizer: {}: sentencepiece model has no pieces", path.string()));
  return pieces;
}

json added_token(int32_t id, const std::string& content, bool special) {
  return {{"id", id},          {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false},   {"normalized", false}, {"special", special}};
}

}  // namespace

bool is_llama_tokenizer_class(const TokenizerConfig& config) {
  if (!config.tokenizer_class) return false;
  const std::string& c = *config.tokenizer_class;
  return c == "LlamaTokenizer" || c == "LlamaTokenizerFast" || c == "CodeLlamaTokenizer" ||
         c == "CodeLlamaTokenizerFast";
}

void apply_llama_tokenizer(json& j, const TokenizerConfig& config) {
  const bool add_prefix_space = config.add_prefix_space.value_or(true);
  const char* scheme = !add_prefix_space ? "never" : config.legacy.value_or(false) ? "always" : "first";
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", scheme}, {"split", false}};
  json& model = j["model"];
  model["fuse_unk"] = true;
  model["byte_fallback"] = true;
  model["unk_token"] = nullptr;
  json decoders = json::array({{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                               {{"type", "ByteFallback"}},
                               {{"type", "Fuse"}}});
  if (add_prefix_space) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  j["decoder"] = {{"type", "Sequence"}, {"decoders", std::move(decoders)}};
}

json sentencepiece_to_tokenizer_json(const std::filesystem::path& model_path, const std::string& contents,
                                     TokenizerConfig& config) {
  const std::vector<Piece> pieces = read_pieces(model_path, contents);
  std::unordered_map<std::string_view, int32_t> index;
  index.reserve(pieces.size());
  json vocab = json::object();
  for (size_t i = 0; i < pieces.size(); ++i) {
    index.emplace(pieces[i].text, static_cast<int32_t>(i));
    vocab[pieces[i].text] = i;
  }

  // Merges: (piece index, characters in the left part) order.
  struct Merge {
    int32_t piece;
    uint32_t left_chars;
    std::string_view left, right;
  };
  std::vector<Merge> merges;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const std::string_view p = pieces[i].text;
    const unicode::CodePoints cps = unicode::decode_utf8(p);
    for (size_t k = 1; k < cps.cp.size(); ++k) {
      const std::string_view left = p.substr(0, cps.offset[k]), right = p.substr(cps.offset[k]);
      if (index.count(left) && index.count(right))
        merges.push_back({static_cast<int32_t>(i), static_cast<uint32_t>(k), left, right});
    }
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
    return a.piece != b.piece ? a.piece < b.piece : a.left_chars < b.left_chars;
  });
  json merge_list = json::array();
  for (const Merge& m : merges) merge_list.push_back(json::array({std::string(m.left), std::string(m.right)}));

  // Added tokens: pieces first, then the named special tokens, then tokenizer_config.json's
  // added_tokens_decoder (which may set lstrip/rstrip/normalized).
  std::vector<json> added;
  std::unordered_map<int32_t, size_t> added_at;
  const auto add = [&](json token) {
    const auto id = token["id"].get<int32_t>();
    if (auto it = added_at.find(id); it != added_at.end()) {
      added[it->second] = std::move(token);
      return;
    }
    added_at.emplace(id, added.size());
    added.push_back(std::move(token));
  };
  for (size_t i = 0; i < pieces.size(); ++i)
    if (pieces[i].type == kControl || pieces[i].type == kUserDefined)
      add(added_token(static_cast<int32_t>(i), pieces[i].text, pieces[i].type == kControl));
  // LlamaTokenizer's defaults (<unk>, <s>, </s>, no pad) unless the config names a token; the
  // resolved names are written back so that the tokenizer reports these ids.
  const auto named = [&](std::optional<std::string>& configured, const char* fallback,
                         const char* key) -> std::optional<int32_t> {
    if (!configured && !fallback) return std::nullopt;
    const std::string content = configured ? *configured : fallback;
    auto it = index.find(content);
    if (it == index.end()) {
      if (!configured) return std::nullopt;  // a default this model does not have
      throw Error(fmt::format("tokenizer: {}: {} '{}' is not a piece of the sentencepiece model {}",
                              config.path.string(), key, content, model_path.string()));
    }
    configured = content;
    add(added_token(it->second, content, true));
    return it->second;
  };
  named(config.unk_token, "<unk>", "unk_token");
  const auto bos = named(config.bos_token, "<s>", "bos_token");
  const auto eos = named(config.eos_token, "</s>", "eos_token");
  named(config.pad_token, nullptr, "pad_token");
  if (config.added_tokens_decoder.is_object()) {
    for (const auto& [key, entry] : config.added_tokens_decoder.items()) {
      int32_t id = -1;
      try {
        id = std::stoi(key);
      } catch (const std::exception&) {
      }
      MLR_CHECK(id >= 0 && entry.is_object() && entry.contains("content") && entry["content"].is_string(),
                "tokenizer: {}: added_tokens_decoder entry \"{}\" must map an id to an object with \"content\"",
                config.path.string(), key);
      const std::string content = entry["content"].get<std::string>();
      MLR_CHECK(static_cast<size_t>(id) < pieces.size() && pieces[id].text == content,
                "tokenizer: {}: added_tokens_decoder[{}] = '{}' is not piece {} of {} (adding tokens to a "
                "sentencepiece model is not supported)",
                config.path.string(), id, content, id, model_path.string());
      json token = added_token(id, content, entry.value("special", false));
      for (const char* flag : {"lstrip", "rstrip", "normalized", "single_word"})
        if (entry.contains(flag) && entry[flag].is_boolean()) token[flag] = entry[flag];
      add(std::move(token));
    }
  }

  json single = json::array(), specials = json::object();
  if (config.add_bos_token.value_or(false) && bos) {
    single.push_back({{"SpecialToken", {{"id", pieces[*bos].text}, {"type_id", 0}}}});
    specials[pieces[*bos].text] = {{"id", pieces[*bos].text}, {"ids", {*bos}}, {"tokens", {pieces[*bos].text}}};
  }
  single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  if (config.add_eos_token.value_or(false) && eos) {
    single.push_back({{"SpecialToken", {{"id", pieces[*eos].text}, {"type_id", 0}}}});
    specials[pieces[*eos].text] = {{"id", pieces[*eos].text}, {"ids", {*eos}}, {"tokens", {pieces[*eos].text}}};
  }

  json j = {{"added_tokens", added},
            {"post_processor", {{"type", "TemplateProcessing"}, {"single", single}, {"special_tokens", specials}}},
            {"model",
             {{"type", "BPE"}, {"vocab", std::move(vocab)}, {"merges", std::move(merge_list)}, {"ignore_merges", false}}}};
  apply_llama_tokenizer(j, config);
  return j;
}

}  // namespace mlr::tokenizer_detail
