// BPE from tokenizer.json, in its two flavours: byte-level (GPT-2, LLaMA 3; the pipeline is
// described in llama/bpe.h) and sentencepiece-style (LLaMA 1/2, Mistral: pieces spell a space as
// "▁", characters missing from the vocabulary fall back to <0xNN> byte tokens).
//
// What is read, and the rule for each part (anything else is an error naming the file):
//  model            type "BPE"; vocab {token: id}; merges as "a b" strings or [a, b] pairs, rank =
//                   position (a repeated pair keeps its last rank, as `tokenizers` does); unk_token,
//                   fuse_unk, ignore_merges; byte_fallback (sentencepiece-style only).
//                   continuing_subword_prefix and end_of_word_suffix are not supported (they belong
//                   to other BPE flavours); dropout is ignored (it only randomises training-time
//                   encodings).
//  added_tokens     matched verbatim, leftmost-longest; lstrip/rstrip take the whitespace beside
//                   the token into it; normalized=false tokens are matched on the raw text,
//                   normalized=true ones after the normalizer (their content normalized too).
//                   single_word is not supported.
//  normalizer       null, NFC, Prepend, Replace (a String pattern), or a Sequence of them.
//  pre_tokenizer    byte-level: Split (a known regex, behavior Isolated), Digits, ByteLevel (last),
//                   Sequence; ByteLevel's add_prefix_space applies to every piece, as in
//                   `tokenizers`. sentencepiece-style: null or Metaspace (spaces become the
//                   replacement; prepend_scheme "always" prefixes every piece not starting with it,
//                   "first" only the piece at the start of the text, "never" none; split=true cuts
//                   before each replacement).
//  post_processor   TemplateProcessing: the special tokens before $A / after $A of the "single"
//                   template are added by encode(text, true); ByteLevel and null add nothing.
//  decoder          byte-level: ByteLevel: characters back to bytes (a token with a character
//                   outside the byte map, such as an added token containing a space, contributes
//                   its UTF-8 as is), then invalid UTF-8 replaced by U+FFFD. sentencepiece-style:
//                   a Sequence of Replace (String pattern), ByteFallback (a run of <0xNN> tokens
//                   becomes its UTF-8, or one U+FFFD per byte when invalid), Fuse and Strip, or
//                   Metaspace; the decoded tokens are concatenated.
//  tokenizer_config.json (optional): bos_token / eos_token / pad_token name the ids. Its
//                   add_bos_token / add_eos_token are not read here: transformers 5 ignores them
//                   when a tokenizer.json exists (the loader clears them); a tokenizer.model
//                   converted by the loader carries them in its template already.
#include <fmt/format.h>

#include <array>
#include <mutex>
#include <queue>
#include <shared_mutex>
#include <unordered_map>

#include "llama/bpe.h"
#include "llama/tokenizer_detail.h"
#include "llama/tokenizer_unicode.h"
#include "tensor/error.h"

namespace mlr::tokenizer_detail {

namespace {

using json = nlohmann::json;

// GPT-2's reversible byte <-> printable character map: the printable Latin-1 bytes ('!'..'~',
// '¡'..'¬', '®'..'ÿ') stand for themselves, the other 68 bytes take U+0100.. in byte order
// (so ' ' -> 'Ġ', '\n' -> 'Ċ').
struct ByteMap {
  static constexpr char32_t kChars = 0x144;  // every mapped character is below this
  std::array<char32_t, 256> to_char{};
  std::array<int16_t, kChars> to_byte{};
  ByteMap() {
    to_byte.fill(-1);
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_char[b] = printable ? static_cast<char32_t>(b) : next++;
      to_byte[to_char[b]] = static_cast<int16_t>(b);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

// The bytes a byte-level token string stands for, or nullopt if it has a character outside the
// map (or is not valid UTF-8).
std::optional<std::string> token_bytes(std::string_view token) {
  const unicode::CodePoints cps = unicode::decode_utf8(token);
  std::string out;
  out.reserve(cps.cp.size());
  for (char32_t c : cps.cp) {  // (invalid UTF-8 decodes to U+FFFD, outside the map)
    if (c >= ByteMap::kChars || byte_map().to_byte[c] < 0) return std::nullopt;
    out.push_back(static_cast<char>(byte_map().to_byte[c]));
  }
  return out;
}

// Heterogeneous lookup, so a std::string_view finds a std::string key without a copy.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

// ---- JSON access: every failure names the file and the key ------------------------------------

class JsonFile {
 public:
  explicit JsonFile(std::string path) : path_(std::move(path)) {}
  const std::string& path() const { return path_; }

  template <typename... Args>
  [[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) const {
    throw Error(fmt::format("tokenizer: {}: {}", path_, fmt::format(f, std::forward<Args>(args)...)));
  }
  // obj[key], or null when obj lacks it.
  const json* find(const json& obj, const char* key) const {
    if (!obj.is_object()) return nullptr;
    auto it = obj.find(key);
    return (it == obj.end() || it->is_null()) ? nullptr : &*it;
  }
  const json& require(const json& obj, const char* key, std::string_view where) const {
    const json* v = find(obj, key);
    if (!v) fail("missing \"{}{}\"", where, key);
    return *v;
  }
  bool boolean(const json& obj, const char* key, bool fallback, std::string_view where) const {
    const json* v = find(obj, key);
    if (!v) return fallback;
    if (!v->is_boolean()) fail("\"{}{}\" must be true or false, got {}", where, key, v->dump());
    return v->get<bool>();
  }
  std::string string(const json& obj, const char* key, std::string_view where) const {
    const json& v = require(obj, key, where);
    if (!v.is_string()) fail("\"{}{}\" must be a string, got {}", where, key, v.dump());
    return v.get<std::string>();
  }
  int32_t id(const json& v, std::string_view what) const {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX)
      fail("{} must be a non-negative 32-bit integer, got {}", what, v.dump());
    return static_cast<int32_t>(v.get<int64_t>());
  }

 private:
  std::string path_;
};

// ---- Added tokens -------------------------------------------------------------------------------

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false, lstrip = false, rstrip = false, normalized = false;
};

// A piece of text after splitting out added tokens: id >= 0 for a matched token.
struct Segment {
  std::string_view text;
  int32_t id;
};

// Leftmost-longest verbatim matching of a set of added tokens (what `tokenizers` does with an
// Aho-Corasick automaton). Tokens are bucketed by first byte, longest first.
class AddedTokenSplitter {
 public:
  void add(const AddedToken& t) {
    auto& bucket = by_first_byte_[static_cast<uint8_t>(t.content[0])];
    bucket.push_back(t);
    std::stable_sort(bucket.begin(), bucket.end(),
                     [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
    empty_ = false;
  }
  bool empty() const { return empty_; }

  void split(std::string_view text, std::vector<Segment>& out) const {
    if (empty_) {
      if (!text.empty()) out.push_back({text, -1});
      return;
    }
    size_t done = 0;  // text before this is already in out
    for (size_t pos = 0; pos < text.size();) {
      const AddedToken* match = nullptr;
      for (const AddedToken& t : by_first_byte_[static_cast<uint8_t>(text[pos])])
        if (text.substr(pos).starts_with(t.content)) {
          match = &t;
          break;
        }
      if (!match) {
        ++pos;
        continue;
      }
      size_t start = pos, stop = pos + match->content.size();
      if (match->lstrip)
        while (start > done) {
          size_t prev = start - 1;
          while (prev > done && (static_cast<uint8_t>(text[prev]) & 0xC0) == 0x80) --prev;
          if (!unicode::is_whitespace(first_code_point(text.substr(prev, start - prev)))) break;
          start = prev;
        }
      if (match->rstrip)
        while (stop < text.size()) {
          const size_t len = std::max<size_t>(unicode::utf8_sequence_length(text.substr(stop)), 1);
          if (!unicode::is_whitespace(first_code_point(text.substr(stop, len)))) break;
          stop += len;
        }
      if (done < start) out.push_back({text.substr(done, start - done), -1});
      out.push_back({text.substr(start, stop - start), match->id});
      done = pos = stop;
    }
    if (done < text.size()) out.push_back({text.substr(done), -1});
  }

 private:
  static char32_t first_code_point(std::string_view s) {
    const unicode::CodePoints cps = unicode::decode_utf8(s);
    return cps.cp.empty() ? unicode::kInvalid : cps.cp[0];
  }
  std::array<std::vector<AddedToken>, 256> by_first_byte_;
  bool empty_ = true;
};

// ---- Pre-tokenizer description --------------------------------------------------------------------

struct PreTokenizerStep {
  enum class Kind { kSplit, kDigits, kByteLevel } kind;
  bpe::SplitPattern pattern = bpe::SplitPattern::kGpt2;  // kSplit
  bool individual_digits = false;                        // kDigits
  bool add_prefix_space = false, use_regex = false;      // kByteLevel
};

// Flattens the pre_tokenizer JSON (nested Sequences included) into steps, rejecting what we
// cannot run.
void flatten_pre_tokenizer(const json& p, const JsonFile& f, std::vector<PreTokenizerStep>& steps) {
  const std::string type = f.string(p, "type", "pre_tokenizer.");
  if (type == "Sequence") {
    const json& list = f.require(p, "pretokenizers", "pre_tokenizer.");
    if (!list.is_array()) f.fail("\"pre_tokenizer.pretokenizers\" must be an array");
    for (const json& q : list) flatten_pre_tokenizer(q, f, steps);
  } else if (type == "ByteLevel") {
    // `tokenizers` defaults: add_prefix_space true, use_regex true.
    steps.push_back({PreTokenizerStep::Kind::kByteLevel, {}, false,
                     f.boolean(p, "add_prefix_space", true, "pre_tokenizer."),
                     f.boolean(p, "use_regex", true, "pre_tokenizer.")});
  } else if (type == "Digits") {
    steps.push_back({PreTokenizerStep::Kind::kDigits, {}, f.boolean(p, "individual_digits", false, "pre_tokenizer.")});
  } else if (type == "Split") {
    const json& pattern = f.require(p, "pattern", "pre_tokenizer.Split.");
    const json* regex = f.find(pattern, "Regex");
    if (!regex || !regex->is_string())
      f.fail("pre_tokenizer Split: only {{\"Regex\": ...}} patterns are supported, got {}", pattern.dump());
    const auto known = bpe::recognise_pattern(regex->get<std::string>());
    if (!known)
      f.fail("pre_tokenizer Split: unknown regex pattern {} (supported: the GPT-2, LLaMA-3 and Qwen2 patterns)",
             regex->dump());
    const json* behavior = f.find(p, "behavior");
    if (behavior && *behavior != "Isolated")
      f.fail("pre_tokenizer Split: behavior {} is not supported (only \"Isolated\")", behavior->dump());
    if (f.boolean(p, "invert", false, "pre_tokenizer.Split.")) f.fail("pre_tokenizer Split: invert=true is not supported");
    steps.push_back({PreTokenizerStep::Kind::kSplit, *known});
  } else {
    f.fail("pre_tokenizer type \"{}\" is not supported (supported: ByteLevel, Split, Digits, Sequence)", type);
  }
}

// ---- Sentencepiece-style pieces -------------------------------------------------------------------

// A normalizer step of the sentencepiece-style pipeline (NFC is also accepted by the byte-level one).
struct NormalizerStep {
  enum class Kind { kNfc, kPrepend, kReplace } kind;
  std::string text, replacement;  // kPrepend: text; kReplace: text -> replacement
};

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  for (size_t pos = 0;;) {
    const size_t hit = from.empty() ? std::string_view::npos : s.find(from, pos);
    if (hit == std::string_view::npos) {
      out.append(s.substr(pos));
      return out;
    }
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
}

enum class PrependScheme { kAlways, kFirst, kNever };

struct Metaspace {
  std::string replacement = "\u2581";
  PrependScheme prepend = PrependScheme::kAlways;
  bool split = true;
};

PrependScheme prepend_scheme(const json& p, const JsonFile& f, std::string_view where) {
  if (const json* scheme = f.find(p, "prepend_scheme")) {
    if (*scheme == "always") return PrependScheme::kAlways;
    if (*scheme == "first") return PrependScheme::kFirst;
    if (*scheme == "never") return PrependScheme::kNever;
    f.fail("\"{}prepend_scheme\" must be \"always\", \"first\" or \"never\", got {}", where, scheme->dump());
  }
  // Files written before prepend_scheme existed carry add_prefix_space instead.
  return f.boolean(p, "add_prefix_space", true, where) ? PrependScheme::kAlways : PrependScheme::kNever;
}

std::string single_character(const json& obj, const char* key, const JsonFile& f, std::string_view where) {
  const std::string s = f.string(obj, key, where);
  if (unicode::decode_utf8(s).cp.size() != 1) f.fail("\"{}{}\" must be one character, got {}", where, key, json(s).dump());
  return s;
}

// A decoder step of the sentencepiece-style pipeline, applied to the list of token strings.
struct DecoderStep {
  enum class Kind { kReplace, kByteFallback, kFuse, kStrip, kMetaspace } kind;
  std::string text, replacement;  // kReplace: text -> replacement; kStrip: text is the character;
                                  // kMetaspace: text is the replacement character
  int start = 0, stop = 0;        // kStrip
  bool prepend = false;           // kMetaspace: the first token's replacement characters vanish
};

// "<0xNN>" (hex digits of either case) -> the byte, as the ByteFallback decoder reads it.
std::optional<uint8_t> byte_token_value(std::string_view t) {
  if (t.size() != 6 || !t.starts_with("<0x") || t[5] != '>') return std::nullopt;
  const auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  const int hi = hex(t[3]), lo = hex(t[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<uint8_t>(hi * 16 + lo);
}

void apply_decoder_step(const DecoderStep& step, std::vector<std::string>& tokens) {
  switch (step.kind) {
    case DecoderStep::Kind::kReplace:
      for (std::string& t : tokens) t = replace_all(t, step.text, step.replacement);
      return;
    case DecoderStep::Kind::kByteFallback: {
      std::vector<std::string> out;
      std::string bytes;
      size_t run = 0;
      const auto flush = [&] {
        if (run == 0) return;
        if (unicode::utf8_lossy(bytes) == bytes) {
          out.push_back(bytes);
        } else {
          for (size_t i = 0; i < run; ++i) out.emplace_back("\xEF\xBF\xBD");  // U+FFFD per byte
        }
        bytes.clear();
        run = 0;
      };
      for (std::string& t : tokens) {
        if (auto b = byte_token_value(t)) {
          bytes.push_back(static_cast<char>(*b));
          ++run;
          continue;
        }
        flush();
        out.push_back(std::move(t));
      }
      flush();
      tokens = std::move(out);
      return;
    }
    case DecoderStep::Kind::kFuse: {
      std::string all;
      for (const std::string& t : tokens) all += t;
      tokens.assign(1, std::move(all));
      return;
    }
    case DecoderStep::Kind::kStrip:
      for (std::string& t : tokens) {
        size_t begin = 0, end = t.size();
        for (int i = 0; i < step.start && t.compare(begin, step.text.size(), step.text) == 0; ++i) begin += step.text.size();
        for (int i = 0; i < step.stop && end >= begin + step.text.size() &&
                        t.compare(end - step.text.size(), step.text.size(), step.text) == 0;
             ++i)
          end -= step.text.size();
        t = t.substr(begin, end - begin);
      }
      return;
    case DecoderStep::Kind::kMetaspace:
      for (size_t i = 0; i < tokens.size(); ++i)
        tokens[i] = replace_all(tokens[i], step.text, i == 0 && step.prepend ? "" : " ");
      return;
  }
}

// ---- The tokenizer ----------------------------------------------------------------------------

class Bpe final : public Tokenizer {
 public:
  Bpe(const std::filesystem::path& path, const std::string& contents, const json& j, BpeKind kind,
      TokenizerConfig config)
      : file_(path.string()), kind_(kind) {
    try {
      load(j, config);
    } catch (const json::exception& e) {  // a shape the checks above did not foresee
      file_.fail("unexpected JSON structure: {}", e.what());
    }
    fingerprint_ = make_fingerprint(kind == BpeKind::kByteLevel ? "bpe" : "spbpe",
                                    fnv1a64(config.contents, fnv1a64(contents)));
  }

  std::vector<int32_t> encode(const std::string& text, bool add_special) const override {
    std::vector<int32_t> out;
    if (add_special) out = prefix_;
    std::vector<Segment> segments;
    raw_tokens_.split(text, segments);
    for (const Segment& s : segments) {
      if (s.id >= 0) out.push_back(s.id);
      else encode_normalizable(s.text, s.text.data() == text.data(), out);
    }
    if (add_special) out.insert(out.end(), suffix_.begin(), suffix_.end());
    return out;
  }

  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override {
    if (kind_ == BpeKind::kSentencePiece) {
      std::vector<std::string> tokens;
      tokens.reserve(ids.size());
      for (int32_t id : ids) {
        check_id(id, "decode");
        if (!(skip_special && special_[id])) tokens.push_back(id_to_token_[id]);
      }
      for (const DecoderStep& step : decoder_) apply_decoder_step(step, tokens);
      std::string out;
      for (const std::string& t : tokens) out += t;
      return out;
    }
    std::string bytes;
    for (int32_t id : ids) {
      check_id(id, "decode");
      if (skip_special && special_[id]) continue;
      bytes += decoded_[id];
    }
    return unicode::utf8_lossy(bytes);
  }

  int32_t vocab_size() const override { return static_cast<int32_t>(id_to_token_.size()); }
  std::optional<int32_t> bos_id() const override { return bos_; }
  std::optional<int32_t> eos_id() const override { return eos_; }
  std::optional<int32_t> pad_id() const override { return pad_; }
  bool adds_bos() const override { return !prefix_.empty(); }
  bool adds_eos() const override { return !suffix_.empty(); }
  std::string id_to_piece(int32_t id) const override {
    check_id(id, "id_to_piece");
    return id_to_token_[id];
  }
  std::string fingerprint() const override { return fingerprint_; }

 private:
  void check_id(int32_t id, const char* what) const {
    if (id < 0 || id >= vocab_size()) file_.fail("{}: id {} is outside the vocabulary [0, {})", what, id, vocab_size());
  }

  // ---- loading ----

  void load(const json& j, const TokenizerConfig& config) {
    if (!j.is_object()) file_.fail("expected a JSON object at the top level");
    const json& model = file_.require(j, "model", "");
    if (!model.is_object()) file_.fail("\"model\" must be an object");
    const std::string type = file_.string(model, "type", "model.");
    if (type != "BPE") file_.fail("model.type is \"{}\"; only \"BPE\" is supported", type);
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      const json* v = file_.find(model, key);
      if (v && !(v->is_string() && v->get<std::string>().empty()))
        file_.fail("model.{} = {} is not supported by the byte-level BPE", key, v->dump());
    }
    byte_fallback_ = file_.boolean(model, "byte_fallback", false, "model.");
    if (byte_fallback_ && kind_ == BpeKind::kByteLevel)
      file_.fail("model.byte_fallback=true together with a ByteLevel pre-tokenizer is not supported");
    ignore_merges_ = file_.boolean(model, "ignore_merges", false, "model.");
    fuse_unk_ = file_.boolean(model, "fuse_unk", false, "model.");

    load_vocab(model);
    load_merges(model);
    if (const json* unk = file_.find(model, "unk_token")) {
      if (!unk->is_string()) file_.fail("\"model.unk_token\" must be a string, got {}", unk->dump());
      auto it = vocab_.find(unk->get<std::string>());
      if (it == vocab_.end()) file_.fail("model.unk_token {} is not in model.vocab", unk->dump());
      unk_id_ = it->second;
    }
    load_normalizer(j);
    load_added_tokens(j);
    load_pre_tokenizer(j);
    if (const json* post = file_.find(j, "post_processor")) load_post_processor(*post);
    load_decoder(j);
    apply_config(config);

    // Decoding tables, and the token of each byte: its byte-level character, or the <0xNN>
    // piece a sentencepiece-style BPE falls back on.
    if (kind_ == BpeKind::kByteLevel) {
      decoded_.resize(id_to_token_.size());
      for (size_t id = 0; id < id_to_token_.size(); ++id)
        decoded_[id] = token_bytes(id_to_token_[id]).value_or(id_to_token_[id]);
    }
    for (int b = 0; b < 256; ++b) {
      std::string c;
      if (kind_ == BpeKind::kByteLevel) unicode::append_utf8(c, byte_map().to_char[b]);
      else c = fmt::format("<0x{:02X}>", b);
      auto it = vocab_.find(c);
      byte_id_[b] = it == vocab_.end() ? -1 : it->second;
    }
  }

  void set_token(int32_t id, const std::string& token) {
    if (static_cast<size_t>(id) >= id_to_token_.size()) {
      id_to_token_.resize(static_cast<size_t>(id) + 1);
      special_.resize(static_cast<size_t>(id) + 1, false);
    }
    id_to_token_[id] = token;
  }

  void load_vocab(const json& model) {
    const json& vocab = file_.require(model, "vocab", "model.");
    if (!vocab.is_object()) file_.fail("\"model.vocab\" must be an object mapping token to id");
    vocab_.reserve(vocab.size());
    for (const auto& [token, id_json] : vocab.items()) {
      const int32_t id = file_.id(id_json, fmt::format("model.vocab[{}]", json(token).dump()));
      vocab_.emplace(token, id);
      set_token(id, token);
      if (kind_ == BpeKind::kByteLevel)
        if (auto bytes = token_bytes(token)) vocab_by_bytes_.emplace(std::move(*bytes), id);
    }
    if (vocab_.empty()) file_.fail("\"model.vocab\" is empty");
  }

  void load_merges(const json& model) {
    const json* merges = file_.find(model, "merges");
    if (!merges) return;  // a vocabulary without merges encodes byte by byte
    if (!merges->is_array()) file_.fail("\"model.merges\" must be an array");
    merges_.reserve(merges->size());
    int32_t rank = 0;
    for (const json& m : *merges) {
      std::string a, b;
      if (m.is_string()) {  // "a b"
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
          file_.fail("merge {} ({}) is not two tokens separated by one space", rank, m.dump());
        a = s.substr(0, space);
        b = s.substr(space + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {  // [a, b]
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        file_.fail("merge {} must be \"a b\" or [\"a\", \"b\"], got {}", rank, m.dump());
      }
      const auto id_of = [&](const std::string& t) {
        auto it = vocab_.find(t);
        if (it == vocab_.end()) file_.fail("merge {} ({}) refers to token {} which is not in model.vocab", rank, m.dump(), json(t).dump());
        return it->second;
      };
      const int32_t left = id_of(a), right = id_of(b), merged = id_of(a + b);
      merges_[pair_key(left, right)] = {rank, merged};  // a repeated pair keeps its last rank
      ++rank;
    }
  }

  // The text a Replace normalizer or decoder looks for (a {"String": ...} pattern; regexes are
  // not supported).
  std::string replace_pattern(const json& replace, const char* what) const {
    const json* pattern = file_.find(replace, "pattern");
    const json* literal = pattern ? file_.find(*pattern, "String") : nullptr;
    if (!literal || !literal->is_string())
      file_.fail("{} Replace: only {{\"String\": ...}} patterns are supported, got {}", what,
                 pattern ? pattern->dump() : "nothing");
    return literal->get<std::string>();
  }

  void load_normalizer(const json& j) {
    if (const json* n = file_.find(j, "normalizer")) add_normalizer(*n);
  }
  void add_normalizer(const json& n) {
    const std::string type = file_.string(n, "type", "normalizer.");
    if (type == "NFC") {
      normalizer_.push_back({NormalizerStep::Kind::kNfc, {}, {}});
    } else if (type == "Prepend") {
      normalizer_.push_back({NormalizerStep::Kind::kPrepend, file_.string(n, "prepend", "normalizer.Prepend."), {}});
    } else if (type == "Replace") {
      normalizer_.push_back({NormalizerStep::Kind::kReplace, replace_pattern(n, "normalizer"),
                             file_.string(n, "content", "normalizer.Replace.")});
    } else if (type == "Sequence") {
      const json& list = file_.require(n, "normalizers", "normalizer.");
      if (!list.is_array()) file_.fail("\"normalizer.normalizers\" must be an array");
      for (const json& m : list) add_normalizer(m);
    } else {
      file_.fail("normalizer \"{}\" is not supported (supported: NFC, Prepend, Replace, Sequence)", type);
    }
  }

  std::string normalize(std::string_view text) const {
    std::string s(text);
    for (const NormalizerStep& step : normalizer_) {
      switch (step.kind) {
        case NormalizerStep::Kind::kNfc: s = unicode::nfc(s); break;
        case NormalizerStep::Kind::kPrepend:
          if (!s.empty()) s.insert(0, step.text);
          break;
        case NormalizerStep::Kind::kReplace: s = replace_all(s, step.text, step.replacement); break;
      }
    }
    return s;
  }

  void load_added_tokens(const json& j) {
    const json* list = file_.find(j, "added_tokens");
    if (!list) return;
    if (!list->is_array()) file_.fail("\"added_tokens\" must be an array");
    for (const json& t : *list) {
      AddedToken a;
      a.id = file_.id(file_.require(t, "id", "added_tokens[]."), "added_tokens[].id");
      a.content = file_.string(t, "content", "added_tokens[].");
      if (a.content.empty()) file_.fail("added token {} has empty content", a.id);
      a.special = file_.boolean(t, "special", false, "added_tokens[].");
      a.lstrip = file_.boolean(t, "lstrip", false, "added_tokens[].");
      a.rstrip = file_.boolean(t, "rstrip", false, "added_tokens[].");
      a.normalized = file_.boolean(t, "normalized", !a.special, "added_tokens[].");
      if (file_.boolean(t, "single_word", false, "added_tokens[]."))
        file_.fail("added token {} ({}): single_word=true is not supported", a.id, json(a.content).dump());
      set_token(a.id, a.content);
      special_[a.id] = a.special;
      added_by_content_[a.content] = a.id;
      if (a.normalized) {
        a.content = normalize(a.content);  // matched against normalized text
        if (a.content.empty()) file_.fail("added token {} is empty once normalized", a.id);
        normalized_tokens_.add(a);
      } else {
        raw_tokens_.add(a);
      }
    }
  }

  void load_pre_tokenizer(const json& j) {
    const json* p = file_.find(j, "pre_tokenizer");
    if (kind_ == BpeKind::kSentencePiece) {
      if (!p) return;
      const std::string type = file_.string(*p, "type", "pre_tokenizer.");
      if (type != "Metaspace")
        file_.fail("pre_tokenizer \"{}\" is not supported in a sentencepiece-style BPE (only Metaspace or none)", type);
      Metaspace m;
      m.replacement = single_character(*p, "replacement", file_, "pre_tokenizer.");
      m.prepend = prepend_scheme(*p, file_, "pre_tokenizer.");
      m.split = file_.boolean(*p, "split", true, "pre_tokenizer.");
      metaspace_ = m;
      return;
    }
    if (!p) file_.fail("missing \"pre_tokenizer\" (a byte-level BPE needs a ByteLevel pre-tokenizer)");
    std::vector<PreTokenizerStep> steps;
    flatten_pre_tokenizer(*p, file_, steps);
    if (steps.empty() || steps.back().kind != PreTokenizerStep::Kind::kByteLevel)
      file_.fail("pre_tokenizer must end with ByteLevel (this is not a byte-level BPE)");
    byte_level_ = steps.back();
    steps.pop_back();
    for (const auto& s : steps)
      if (s.kind == PreTokenizerStep::Kind::kByteLevel) file_.fail("pre_tokenizer has ByteLevel before its last step");
    steps_ = std::move(steps);
  }

  // Collects what the "single" template of a TemplateProcessing adds around $A.
  void load_post_processor(const json& p) {
    const std::string type = file_.string(p, "type", "post_processor.");
    if (type == "ByteLevel") return;  // only adjusts offsets
    if (type == "Sequence") {
      const json& list = file_.require(p, "processors", "post_processor.");
      if (!list.is_array()) file_.fail("\"post_processor.processors\" must be an array");
      for (const json& q : list) load_post_processor(q);
      return;
    }
    if (type != "TemplateProcessing")
      file_.fail("post_processor \"{}\" is not supported (supported: TemplateProcessing, ByteLevel, Sequence)", type);
    const json& single = file_.require(p, "single", "post_processor.");
    if (!single.is_array()) file_.fail("\"post_processor.single\" must be an array");
    const json* specials = file_.find(p, "special_tokens");
    bool seen_sequence = false;
    for (const json& piece : single) {
      if (file_.find(piece, "Sequence")) {
        seen_sequence = true;
        continue;
      }
      const json& sp = file_.require(piece, "SpecialToken", "post_processor.single[].");
      const std::string name = file_.string(sp, "id", "post_processor.single[].SpecialToken.");
      const json* entry = specials ? file_.find(*specials, name.c_str()) : nullptr;
      if (!entry) file_.fail("post_processor: template token {} is not in special_tokens", json(name).dump());
      const json& ids = file_.require(*entry, "ids", "post_processor.special_tokens[].");
      if (!ids.is_array()) file_.fail("post_processor.special_tokens[{}].ids must be an array", json(name).dump());
      for (const json& id : ids) (seen_sequence ? suffix_ : prefix_).push_back(file_.id(id, "post_processor id"));
    }
  }

  void add_decoder(const json& d) {
    const std::string type = file_.string(d, "type", "decoder.");
    if (type == "Sequence") {
      const json& list = file_.require(d, "decoders", "decoder.");
      if (!list.is_array()) file_.fail("\"decoder.decoders\" must be an array");
      for (const json& e : list) add_decoder(e);
    } else if (type == "Replace") {
      decoder_.push_back({DecoderStep::Kind::kReplace, replace_pattern(d, "decoder"),
                          file_.string(d, "content", "decoder.Replace.")});
    } else if (type == "ByteFallback") {
      decoder_.push_back({DecoderStep::Kind::kByteFallback, {}, {}});
    } else if (type == "Fuse") {
      decoder_.push_back({DecoderStep::Kind::kFuse, {}, {}});
    } else if (type == "Strip") {
      DecoderStep step{DecoderStep::Kind::kStrip, single_character(d, "content", file_, "decoder.Strip."), {}};
      const auto count = [&](const char* key) {
        const json* v = file_.find(d, key);
        if (!v) return 0;
        if (!v->is_number_integer() || v->get<int64_t>() < 0 || v->get<int64_t>() > 1000)
          file_.fail("\"decoder.Strip.{}\" must be a small non-negative integer, got {}", key, v->dump());
        return static_cast<int>(v->get<int64_t>());
      };
      step.start = count("start");
      step.stop = count("stop");
      decoder_.push_back(step);
    } else if (type == "Metaspace") {
      DecoderStep step{DecoderStep::Kind::kMetaspace, single_character(d, "replacement", file_, "decoder."), {}};
      step.prepend = prepend_scheme(d, file_, "decoder.") != PrependScheme::kNever;
      decoder_.push_back(step);
    } else {
      file_.fail("decoder \"{}\" is not supported in a sentencepiece-style BPE "
                 "(supported: Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence)", type);
    }
  }

  void load_decoder(const json& j) {
    const json* d = file_.find(j, "decoder");
    if (kind_ == BpeKind::kSentencePiece) {
      if (d) add_decoder(*d);
      return;
    }
    if (!d) file_.fail("missing \"decoder\" (expected ByteLevel)");
    const std::string type = file_.string(*d, "type", "decoder.");
    if (type != "ByteLevel") file_.fail("decoder \"{}\" is not supported (only ByteLevel)", type);
  }

  // BOS/EOS/pad ids from tokenizer_config.json, falling back on the template's single tokens.
  void apply_config(const TokenizerConfig& config) {
    for (int32_t id : prefix_) check_id(id, "post_processor");
    for (int32_t id : suffix_) check_id(id, "post_processor");
    const auto resolve = [&](const std::optional<std::string>& token, const char* key) -> std::optional<int32_t> {
      if (!token) return std::nullopt;
      if (auto it = added_by_content_.find(*token); it != added_by_content_.end()) return it->second;
      if (auto it = vocab_.find(*token); it != vocab_.end()) return it->second;
      throw Error(fmt::format("tokenizer: {}: {} {} is not a token of {}", config.path.string(), key,
                              json(*token).dump(), file_.path()));
    };
    bos_ = resolve(config.bos_token, "bos_token");
    eos_ = resolve(config.eos_token, "eos_token");
    pad_ = resolve(config.pad_token, "pad_token");
    if (!bos_ && prefix_.size() == 1) bos_ = prefix_[0];
    if (!eos_ && suffix_.size() == 1) eos_ = suffix_[0];
    // skip_special drops the configured specials as well as added tokens marked special.
    for (const auto& id : {bos_, eos_, pad_})
      if (id) special_[*id] = true;
  }

  // ---- encoding ----

  // text starts the input at_start (what Metaspace's prepend_scheme "first" asks).
  void encode_normalizable(std::string_view text, bool at_start, std::vector<int32_t>& out) const {
    std::string normalized;
    if (!normalizer_.empty()) {
      normalized = normalize(text);
      text = normalized;
    }
    if (normalized_tokens_.empty()) return encode_plain(text, at_start, out);
    std::vector<Segment> segments;
    normalized_tokens_.split(text, segments);
    for (const Segment& s : segments) {
      if (s.id >= 0) out.push_back(s.id);
      else encode_plain(s.text, at_start && s.text.data() == text.data(), out);
    }
  }

  void encode_plain(std::string_view text, bool at_start, std::vector<int32_t>& out) const {
    if (kind_ == BpeKind::kSentencePiece) return encode_metaspace(text, at_start, out);
    std::vector<std::string_view> pieces{text}, next;
    for (const PreTokenizerStep& step : steps_) {
      next.clear();
      for (std::string_view p : pieces) {
        if (step.kind == PreTokenizerStep::Kind::kSplit) bpe::split_by_pattern(p, step.pattern, next);
        else bpe::split_digits(p, step.individual_digits, next);
      }
      std::swap(pieces, next);
    }
    std::string prefixed;
    std::vector<std::string_view> words;
    for (std::string_view p : pieces) {
      if (byte_level_.add_prefix_space && !p.starts_with(' ')) {
        prefixed.assign(1, ' ');
        prefixed.append(p);
        p = prefixed;
      }
      if (!byte_level_.use_regex) {
        encode_word(p, out);
        continue;
      }
      words.clear();
      bpe::split_by_pattern(p, bpe::SplitPattern::kGpt2, words);
      for (std::string_view w : words) encode_word(w, out);
    }
  }

  // The Metaspace pre-tokenizer (when there is one), then BPE on each piece.
  void encode_metaspace(std::string_view text, bool at_start, std::vector<int32_t>& out) const {
    if (!metaspace_) return encode_word(text, out);
    const Metaspace& m = *metaspace_;
    std::string s = replace_all(text, " ", m.replacement);
    const bool prepend = m.prepend == PrependScheme::kAlways || (m.prepend == PrependScheme::kFirst && at_start);
    if (prepend && !s.starts_with(m.replacement)) s.insert(0, m.replacement);
    if (!m.split) return encode_word(s, out);
    const std::string_view all(s);
    size_t begin = 0;
    for (size_t hit = all.find(m.replacement, 1); hit != std::string_view::npos; hit = all.find(m.replacement, hit + 1)) {
      encode_word(all.substr(begin, hit - begin), out);
      begin = hit;
    }
    encode_word(all.substr(begin), out);
  }

  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  // One pre-token (raw bytes; the byte-level characters are implied) -> ids.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const {
    if (word.empty()) return;
    if (ignore_merges_) {
      const StringMap<int32_t>& whole = kind_ == BpeKind::kByteLevel ? vocab_by_bytes_ : vocab_;
      if (auto it = whole.find(word); it != whole.end()) {
        out.push_back(it->second);
        return;
      }
    }
    const bool cacheable = word.size() < kMaxCachedWord;
    if (cacheable) {
      std::shared_lock lock(cache_mutex_);
      if (auto it = cache_.find(word); it != cache_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    const size_t first = out.size();
    merge_word(word, out);
    if (cacheable) {
      std::unique_lock lock(cache_mutex_);
      if (cache_.size() < kCacheCapacity) cache_.emplace(word, std::vector<int32_t>(out.begin() + first, out.end()));
    }
  }

  // The symbols BPE starts from. Byte-level: one per byte. Sentencepiece-style: one per character
  // in the vocabulary; a character that is not becomes its <0xNN> byte tokens under byte_fallback
  // (when all exist). What is left becomes unk_token (consecutive ones fused under fuse_unk) or,
  // without unk_token, is dropped. As in `tokenizers`, a pending unk is emitted only when the next
  // character found in the vocabulary (or the end) comes, so it follows byte-fallback tokens
  // that came after it.
  void initial_symbols(std::string_view word, std::vector<int32_t>& ids) const {
    std::optional<int32_t> pending_unk;
    const auto unknown = [&] {
      if (!unk_id_) return;
      if (pending_unk && fuse_unk_) return;
      if (pending_unk) ids.push_back(*pending_unk);
      pending_unk = unk_id_;
    };
    if (kind_ == BpeKind::kByteLevel) {
      for (char c : word) {
        const int32_t id = byte_id_[static_cast<uint8_t>(c)];
        if (id < 0) {
          unknown();
          continue;
        }
        if (pending_unk) ids.push_back(*std::exchange(pending_unk, std::nullopt));
        ids.push_back(id);
      }
    } else {
      for (size_t pos = 0; pos < word.size();) {
        const size_t len = std::max<size_t>(unicode::utf8_sequence_length(word.substr(pos)), 1);
        const std::string_view c = word.substr(pos, len);
        pos += len;
        if (auto it = vocab_.find(c); it != vocab_.end()) {
          if (pending_unk) ids.push_back(*std::exchange(pending_unk, std::nullopt));
          ids.push_back(it->second);
          continue;
        }
        if (byte_fallback_ && std::all_of(c.begin(), c.end(), [&](char b) { return byte_id_[static_cast<uint8_t>(b)] >= 0; })) {
          for (char b : c) ids.push_back(byte_id_[static_cast<uint8_t>(b)]);
          continue;
        }
        unknown();
      }
    }
    if (pending_unk) ids.push_back(*pending_unk);
  }

  // BPE: repeatedly merge the adjacent pair of lowest rank (the leftmost one among equal ranks),
  // through a heap of candidate pairs that is checked for staleness on pop (as `tokenizers` does).
  void merge_word(std::string_view word, std::vector<int32_t>& out) const {
    struct Symbol {
      int32_t id, prev, next;
    };
    std::vector<int32_t> ids;
    ids.reserve(word.size());
    initial_symbols(word, ids);
    if (ids.empty()) return;
    std::vector<Symbol> sym;
    sym.reserve(ids.size());
    for (int32_t id : ids) {
      const auto n = static_cast<int32_t>(sym.size());
      sym.push_back({id, n - 1, n + 1});
    }
    sym.back().next = -1;

    struct Candidate {
      int32_t rank, pos, left, right, merged;
      bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
    const auto push = [&](int32_t pos) {
      const int32_t next = sym[pos].next;
      if (next < 0) return;
      auto it = merges_.find(pair_key(sym[pos].id, sym[next].id));
      if (it != merges_.end()) heap.push({it->second.rank, pos, sym[pos].id, sym[next].id, it->second.merged});
    };
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(sym.size()); ++i) push(i);
    while (!heap.empty()) {
      const Candidate c = heap.top();
      heap.pop();
      Symbol& s = sym[c.pos];
      if (s.id != c.left || s.next < 0 || sym[s.next].id != c.right) continue;  // stale
      const int32_t removed = s.next;
      s.id = c.merged;
      s.next = sym[removed].next;
      sym[removed].id = -1;  // never matches a candidate again
      if (s.next >= 0) sym[s.next].prev = c.pos;
      if (s.prev >= 0) push(s.prev);
      push(c.pos);
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
  }

  static constexpr size_t kMaxCachedWord = 256;   // bytes; longer pre-tokens are not cached
  static constexpr size_t kCacheCapacity = 1 << 16;  // entries; when full, nothing more is added

  JsonFile file_;
  StringMap<int32_t> vocab_;           // model vocabulary, byte-level strings
  StringMap<int32_t> vocab_by_bytes_;  // the same tokens keyed by the bytes they stand for
  StringMap<int32_t> added_by_content_;
  struct Merge {
    int32_t rank, merged;
  };
  std::unordered_map<uint64_t, Merge> merges_;  // (left id, right id) -> rank, merged id
  std::array<int32_t, 256> byte_id_{};          // id of each byte's token (<0xNN> in sentencepiece-style), -1 if absent
  std::optional<int32_t> unk_id_;
  bool ignore_merges_ = false, fuse_unk_ = false, byte_fallback_ = false;
  BpeKind kind_;
  std::vector<NormalizerStep> normalizer_;
  std::optional<Metaspace> metaspace_;  // sentencepiece-style
  std::vector<DecoderStep> decoder_;    // sentencepiece-style

  std::vector<std::string> id_to_token_;  // model vocabulary and added tokens
  std::vector<std::string> decoded_;      // byte-level: per id, the bytes decode() emits
  std::vector<bool> special_;             // per id, dropped by decode(skip_special)

  AddedTokenSplitter raw_tokens_, normalized_tokens_;
  std::vector<PreTokenizerStep> steps_;
  PreTokenizerStep byte_level_{PreTokenizerStep::Kind::kByteLevel};
  std::vector<int32_t> prefix_, suffix_;
  std::optional<int32_t> bos_, eos_, pad_;
  std::string fingerprint_;

  mutable std::shared_mutex cache_mutex_;
  mutable StringMap<std::vector<int32_t>> cache_;
};

}  // namespace

std::optional<BpeKind> bpe_kind(const nlohmann::json& j) try {
  if (!j.is_object()) return std::nullopt;
  auto model = j.find("model");
  if (model == j.end() || !model->is_object() || model->value("type", std::string()) != "BPE") return std::nullopt;
  // Search the pre-tokenizer tree for a step of the given type without throwing on odd shapes.
  const auto has_step = [](const auto& self, const json& p, const char* type, const char* list_key) -> bool {
    if (!p.is_object()) return false;
    if (p.value("type", std::string()) == type) return true;
    auto list = p.find(list_key);
    if (list == p.end() || !list->is_array()) return false;
    for (const json& q : *list)
      if (self(self, q, type, list_key)) return true;
    return false;
  };
  const json pre = j.value("pre_tokenizer", json()), norm = j.value("normalizer", json());
  if (has_step(has_step, pre, "ByteLevel", "pretokenizers")) return BpeKind::kByteLevel;
  if (model->value("byte_fallback", false) || has_step(has_step, pre, "Metaspace", "pretokenizers") ||
      has_step(has_step, norm, "Prepend", "normalizers"))
    return BpeKind::kSentencePiece;
  return std::nullopt;
} catch (const json::exception&) {  // e.g. "type" that is not a string: not one of ours
  return std::nullopt;
}

std::unique_ptr<Tokenizer> make_bpe(const std::filesystem::path& json_path, const std::string& contents,
                                    const nlohmann::json& tokenizer_json, TokenizerConfig config) {
  const auto kind = bpe_kind(tokenizer_json);
  if (!kind) {
    const json* model = tokenizer_json.is_object() && tokenizer_json.contains("model") ? &tokenizer_json["model"] : nullptr;
    const json type = model && model->is_object() ? model->value("type", json()) : json();
    if (type != "BPE")
      throw Error(fmt::format("tokenizer: {}: model.type is {}; only \"BPE\" is supported", json_path.string(),
                              type.dump()));
    throw Error(fmt::format("tokenizer: {}: this BPE has neither a ByteLevel pre-tokenizer (byte-level) nor byte_fallback, "
                            "a Metaspace pre-tokenizer or a Prepend normalizer (sentencepiece-style); pre_tokenizer {} is "
                            "not supported",
                            json_path.string(), tokenizer_json.value("pre_tokenizer", json()).dump()));
  }
  return std::make_unique<Bpe>(json_path, contents, tokenizer_json, *kind, std::move(config));
}

}  // namespace mlr::tokenizer_detail
