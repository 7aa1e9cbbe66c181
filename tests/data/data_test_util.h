// Helpers shared by the data tests: temporary directories, files, the error text of a call, the
// shared data location (tests skip themselves when it is absent) and a byte-level tokenizer whose
// ids are predictable by hand (id = byte + 3; BOS 1, EOS 2).
#pragma once

#include <doctest/doctest.h>

#include "tests/test_support.h"
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "llama/tokenizer.h"
#include "tensor/error.h"

namespace mlr::data::test {

namespace fs = std::filesystem;

inline const fs::path kSharedData = fs::path(MLR_SOURCE_DIR).parent_path() / "shared" / "data";
inline const fs::path kSharedModels = fs::path(MLR_SOURCE_DIR).parent_path() / "shared" / "models";

inline bool shared_data_present() {
  if (fs::exists(kSharedData / "boolq" / "val.jsonl")) return true;
  return false;
}
inline bool shared_tokenizer_present() {
  if (fs::exists(kSharedModels / "llama-tokenizer" / "tokenizer.model")) return true;
  return false;
}


inline std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The message of the mlr::Error thrown by f ("" if none is thrown).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const mlr::Error& e) {
    return e.what();
  }
  return "";
}

// One id per byte: id = byte + 3, so ids 0..2 stay free for unk/BOS/EOS as in LLaMA.
class ByteTokenizer : public Tokenizer {
 public:
  explicit ByteTokenizer(bool adds_bos = true, bool adds_eos = false) : adds_bos_(adds_bos), adds_eos_(adds_eos) {}
  std::vector<int32_t> encode(const std::string& text, bool add_special) const override {
    std::vector<int32_t> ids;
    if (add_special && adds_bos_) ids.push_back(1);
    for (unsigned char c : text) ids.push_back(static_cast<int32_t>(c) + 3);
    if (add_special && adds_eos_) ids.push_back(2);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override {
    std::string out;
    for (int32_t id : ids) {
      if (id >= 3) {
        out += static_cast<char>(id - 3);
      } else if (!skip_special) {
        out += id == 1 ? "<s>" : id == 2 ? "</s>" : "<unk>";
      }
    }
    return out;
  }
  int32_t vocab_size() const override { return 259; }
  std::optional<int32_t> bos_id() const override { return 1; }
  std::optional<int32_t> eos_id() const override { return 2; }
  std::optional<int32_t> pad_id() const override { return std::nullopt; }
  bool adds_bos() const override { return adds_bos_; }
  bool adds_eos() const override { return adds_eos_; }
  std::string id_to_piece(int32_t id) const override { return decode({id}, false); }
  std::string fingerprint() const override { return "bytes-test-v1"; }

 private:
  bool adds_bos_, adds_eos_;
};

// Text of ids under the byte tokenizer (specials skipped).
inline std::string bytes_text(const std::vector<int32_t>& ids) { return ByteTokenizer().decode(ids, true); }

}  // namespace mlr::data::test
