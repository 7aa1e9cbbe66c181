// Checkpoint I/O in the safetensors format (https://github.com/huggingface/safetensors):
//
//   [8 bytes: N, little-endian u64] [N bytes: JSON header] [data section]
//   header = {"__metadata__": {str: str}?, name: {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...}
//
// data_offsets are relative to the start of the data section. Reading maps the file and checks the
// whole header (length, JSON, every entry's dtype, shape, offsets, overlaps) before any tensor byte
// is touched, so a malformed or truncated file gives an mlr::Error naming the file and the tensor,
// never a crash. Tensors read without conversion are zero-copy views onto the mapping.
//
// Sharded checkpoints are Hugging Face's: model-0000k-of-0000n.safetensors plus
// model.safetensors.index.json = {"metadata": {"total_size": bytes}, "weight_map": {name: shard}}.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace mlr {

class MappedFile;


struct SafetensorInfo {
  DType dtype = DType::f32;
  Shape shape;
  uint64_t begin = 0;  // [begin, end) relative to the data section
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  // Maps `path` and validates its header; throws mlr::Error on anything malformed.
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  // Tensor names in the order the header lists them.
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const { return infos_.count(name) != 0; }
  const SafetensorInfo& info(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t header_bytes() const { return header_bytes_; }  // N
  uint64_t data_bytes() const { return data_bytes_; }      // file size - 8 - N

  // Without `as` (or with the stored dtype) and on the CPU: a view onto the mapping that keeps it
  // alive. Writes to the view go to private copy-on-write pages, never to the file. Otherwise the
  // tensor is converted to `as` and/or copied to `device`.
  Tensor get(const std::string& name, std::optional<DType> as = {}, Device device = Device::cpu()) const;
  // Elements [begin, begin + count) of the flattened tensor `name` (row-major, so one byte range
  // of the file), 1-d, in the stored dtype on the CPU: a view onto the mapping, so only the pages
  // of that range are ever read, or a copy of just those bytes when the tensor sits at an offset
  // unaligned for its dtype.
  Tensor get_range(const std::string& name, int64_t begin, int64_t count) const;

 private:
  std::shared_ptr<MappedFile> mapping_;  // copy-on-write pages (base/mapped_file.h)
  std::string path_;
  std::vector<std::string> names_;
  std::map<std::string, SafetensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
  uint64_t header_bytes_ = 0;
  uint64_t data_bytes_ = 0;
};

// A checkpoint: one safetensors file, or the shards named by a model.safetensors.index.json.
class Checkpoint {
 public:
  // `path`: a directory (model.safetensors.index.json preferred, else model.safetensors), an index
  // file (*.index.json) or a single .safetensors file. Every shard is opened and validated; the
  // index must name exactly the tensors the shards hold, each in one shard.
  static Checkpoint open(const std::string& path);

  // Tensor names: file order within a shard, shards in the order of their file names.
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  const SafetensorInfo& info(const std::string& name) const;
  // The shard file holding `name`.
  const SafetensorsFile& file_of(const std::string& name) const;
  Tensor get(const std::string& name, std::optional<DType> as = {}, Device device = Device::cpu()) const;
  Tensor get_range(const std::string& name, int64_t begin, int64_t count) const;  // SafetensorsFile's
  const std::vector<SafetensorsFile>& files() const { return files_; }

 private:
  std::string path_;
  std::vector<SafetensorsFile> files_;
  std::vector<std::string> names_;
  std::map<std::string, size_t> where_;  // name -> index into files_
};

// All tensors of a checkpoint (see Checkpoint::open), converted to `as` when given.
std::map<std::string, Tensor> load_checkpoint_tensors(const std::string& path, std::optional<DType> as = {},
                                                      Device device = Device::cpu());

// Writes one safetensors file byte-for-byte as the Python `safetensors` package does: tensors
// ordered by decreasing dtype rank (the Rust Dtype order, so wider types come first and every
// tensor stays aligned) then by name, laid out contiguously in that order; the header JSON lists
// "__metadata__" first then the tensors in that order, padded with spaces to a multiple of 8 bytes.
// The file is written to a temporary in the same directory, fsynced and renamed over `path`.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Writes `tensors` into `dir` as transformers' save_pretrained does: shards filled in the given
// order, a new shard started when the next tensor would push the current one past max_shard_bytes
// (a tensor larger than the limit gets a shard of its own), named model-0000k-of-0000n.safetensors,
// plus model.safetensors.index.json (sorted keys, indent 2, metadata.total_size); a single
// model.safetensors and no index when everything fits in one shard. Shards or an index left in
// `dir` by an earlier save that this one does not rewrite are removed. Returns the files written.
std::vector<std::string> save_sharded(const std::string& dir,
                                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                                      uint64_t max_shard_bytes,
                                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace mlr
