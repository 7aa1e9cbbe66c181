// mlr-generate: text from a LLaMA-family checkpoint, optionally with an adapter (unmerged, or
// --merge). Thin: reads the prompts, applies the chat template, and calls mlr::generate
// (llama/generate.h: KV cache, batching with left padding, greedy or sampled decoding).
//
//   mlr-generate --model runs/base "The capital of France is"
//   mlr-generate --model base/ --adapter runs/multilora/final --chat --max-new-tokens 64 "Hi!"
//   mlr-generate --model base/ --prompt-file prompts.txt --batch-size 8 --jsonl > out.jsonl
//   echo "Once upon a time" | mlr-generate --model base/ --temperature 0.8 --top-p 0.95 --seed 1
//
// Prompts: the positional arguments, else --prompt-file (one prompt a line, "-" for stdin), else
// stdin, one prompt a line. Text streams to stdout as tokens are made (one prompt at a time; with
// --batch-size > 1 each batch prints when it is done); --jsonl prints one JSON object a prompt.
// A stop string ends a completion and is not printed. Tokens/s go to stderr at the end.
#include <chrono>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "llama/chat_template.h"
#include "llama/generate.h"
#include "llama/model.h"
#include "llama/tokenizer.h"
#include "multilora/inject.h"
#include "tensor/error.h"

using namespace mlr;

namespace {

std::vector<std::string> read_prompt_lines(std::istream& in) {
  std::vector<std::string> prompts;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) prompts.push_back(line);
  }
  return prompts;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mlr-generate: text from a LLaMA-family checkpoint (with an adapter, optionally)"};
  std::string model_dir, adapter_dir, tokenizer_path, tokenizer_backend = "transformers", prompt_file, system_prompt;
  std::string device_name = "auto", dtype_arg = "f32";
  std::vector<std::string> prompts, stop_strings;
  bool merge = false, chat = false, jsonl = false, ignore_eos = false, no_special = false;
  int64_t max_new_tokens = 128, top_k = 0, batch_size = 1;
  double temperature = 0, top_p = 1;
  uint64_t seed = 0;
  app.add_option("prompts", prompts, "prompts (else --prompt-file, else stdin, one prompt a line)");
  app.add_option("--model", model_dir, "Hugging Face checkpoint directory (config.json, safetensors, tokenizer)")->required();
  app.add_option("--adapter", adapter_dir, "adapter directory (any registered adapter type)");
  app.add_flag("--merge", merge, "merge the adapter into the weights first (LoRA, MultiLoRA, DoRA)");
  app.add_option("--tokenizer", tokenizer_path, "tokenizer directory or file (default: --model)");
  app.add_option("--tokenizer-backend", tokenizer_backend, "transformers (default) or sentencepiece");
  app.add_option("--prompt-file", prompt_file, "one prompt a line; - for stdin");
  app.add_flag("--chat", chat, "format each prompt as a user message with the checkpoint's chat template");
  app.add_option("--system", system_prompt, "with --chat: a system message before each prompt");
  app.add_option("--max-new-tokens", max_new_tokens, "tokens to generate at most (default 128)");
  app.add_option("--temperature", temperature, "0 (default): greedy; > 0: sample at this temperature");
  app.add_option("--top-k", top_k, "sampling: keep the k most likely tokens (0: all)");
  app.add_option("--top-p", top_p, "sampling: keep the most likely tokens up to this probability mass (1: all)");
  app.add_option("--seed", seed, "sampling seed");
  app.add_option("--stop", stop_strings, "stop when the completion contains this string (repeatable)");
  app.add_flag("--ignore-eos", ignore_eos, "do not stop at the checkpoint's EOS tokens");
  app.add_flag("--no-special-tokens", no_special, "encode prompts without BOS/EOS");
  app.add_option("--batch-size", batch_size, "prompts generated together (left padded; default 1)");
  app.add_option("--device", device_name, "auto, cpu, cuda, cuda:N");
  app.add_option("--dtype", dtype_arg, "f32, bf16 or f16");
  app.add_flag("--jsonl", jsonl, "one JSON object a prompt: prompt, completion, tokens, finish_reason");
  CLI11_PARSE(app, argc, argv);
  try {
    MLR_CHECK(max_new_tokens >= 1, "mlr-generate: --max-new-tokens must be >= 1, got {}", max_new_tokens);
    MLR_CHECK(batch_size >= 1, "mlr-generate: --batch-size must be >= 1, got {}", batch_size);
    MLR_CHECK(temperature >= 0, "mlr-generate: --temperature must be >= 0 (0: greedy), got {}", temperature);
    MLR_CHECK(top_k >= 0, "mlr-generate: --top-k must be >= 0, got {}", top_k);
    MLR_CHECK(top_p > 0 && top_p <= 1, "mlr-generate: --top-p must be in (0, 1], got {}", top_p);
    MLR_CHECK(temperature > 0 || (top_k == 0 && top_p == 1),
              "mlr-generate: --top-k and --top-p filter sampling: give a --temperature > 0 with them");
    MLR_CHECK(!merge || !adapter_dir.empty(), "mlr-generate: --merge needs an --adapter");
    MLR_CHECK(system_prompt.empty() || chat, "mlr-generate: --system needs --chat");

    if (prompts.empty()) {
      if (prompt_file.empty() || prompt_file == "-") {
        prompts = read_prompt_lines(std::cin);
      } else {
        std::ifstream in(prompt_file);
        MLR_CHECK(in, "mlr-generate: --prompt-file {}: cannot open the file", prompt_file);
        prompts = read_prompt_lines(in);
        MLR_CHECK(!prompts.empty(), "mlr-generate: --prompt-file {}: no prompt in the file (one prompt a line)", prompt_file);
      }
    } else {
      MLR_CHECK(prompt_file.empty(), "mlr-generate: give prompts as arguments or with --prompt-file, not both");
    }
    MLR_CHECK(!prompts.empty(), "mlr-generate: no prompt (give one as an argument, with --prompt-file, or on stdin)");

    const auto tokenizer = load_tokenizer(tokenizer_path.empty() ? model_dir : tokenizer_path,
                                          parse_tokenizer_backend(tokenizer_backend));
    std::optional<CheckpointChatTemplate> chat_template;
    if (chat) {
      const std::string dir = tokenizer_path.empty() ? model_dir : tokenizer_path;
      chat_template = load_chat_template(dir);
      MLR_CHECK(chat_template, "mlr-generate: --chat: {} has no chat template (neither chat_template.jinja nor a "
                "\"chat_template\" in tokenizer_config.json); run without --chat to use the prompts as they are", dir);
    }

    const DType dtype = parse_dtype(dtype_arg);
    const Device device = device_name == "auto" ? (cuda_available() ? Device::cuda(0) : Device::cpu()) : parse_device(device_name);
    auto model = LlamaForCausalLM::from_pretrained(model_dir, dtype, device);
    if (!adapter_dir.empty()) {
      inject_adapter_from_file(*model, adapter_dir);
      if (merge) merge_adapters(*model);
    }
    model->eval();

    // Prompt text -> ids, as transformers' tokenizer(...) (BOS as the tokenizer adds it); a chat
    // template writes its own special tokens, so its text is encoded without them.
    std::vector<std::vector<int64_t>> prompt_ids;
    for (const std::string& p : prompts) {
      std::string text = p;
      bool add_special = !no_special;
      if (chat_template) {
        std::vector<ChatMessage> messages;
        if (!system_prompt.empty()) messages.push_back({"system", system_prompt});
        messages.push_back({"user", p});
        text = chat_template->chat_template.apply(messages, /*add_generation_prompt=*/true, chat_template->bos_token,
                                                  chat_template->eos_token);
        add_special = false;
      }
      const std::vector<int32_t> ids = tokenizer->encode(text, add_special);
      MLR_CHECK(!ids.empty(), "mlr-generate: prompt \"{}\" encodes to no token", p);
      const int64_t context = model->config().max_position_embeddings;
      if (static_cast<int64_t>(ids.size()) + max_new_tokens > context)
        std::cerr << fmt::format("mlr-generate: warning: a prompt of {} tokens plus --max-new-tokens {} exceeds the "
                                 "model's {} positions (max_position_embeddings); the text after that is unreliable\n",
                                 ids.size(), max_new_tokens, context);
      prompt_ids.emplace_back(ids.begin(), ids.end());
    }

    GenerationConfig config;
    config.max_new_tokens = max_new_tokens;
    config.do_sample = temperature > 0;
    config.temperature = temperature > 0 ? temperature : 1.0;
    config.top_k = top_k;
    config.top_p = top_p;
    config.seed = seed;
    config.stop_strings = stop_strings;
    config.tokenizer = tokenizer.get();
    const CheckpointGenerationIds ids = checkpoint_generation_ids(model_dir, tokenizer.get());
    if (!ignore_eos) config.eos_token_ids = ids.eos_token_ids;
    config.pad_token_id = ids.pad_token_id;

    const auto t0 = std::chrono::steady_clock::now();
    std::optional<std::chrono::steady_clock::time_point> first_token;
    int64_t new_tokens = 0, prompt_tokens = 0;
    const bool stream = !jsonl && batch_size == 1;
    for (size_t start = 0; start < prompts.size(); start += static_cast<size_t>(batch_size)) {
      const size_t end = std::min(prompts.size(), start + static_cast<size_t>(batch_size));
      std::vector<std::vector<int64_t>> batch(prompt_ids.begin() + static_cast<long>(start), prompt_ids.begin() + static_cast<long>(end));
      std::vector<IncrementalDecoder> decoders;
      for (const auto& p : batch) {
        prompt_tokens += static_cast<int64_t>(p.size());
        // The prompt's last token as context: the continuation's first word keeps its leading space.
        decoders.emplace_back(*tokenizer, std::vector<int32_t>{static_cast<int32_t>(p.back())}, stop_strings);
      }
      config.on_token = [&](int64_t row, int64_t token) {
        if (!first_token) first_token = std::chrono::steady_clock::now();
        ++new_tokens;
        const std::string piece = decoders[static_cast<size_t>(row)].push(token);
        if (stream && !piece.empty()) std::cout << piece << std::flush;
      };
      const GenerationOutput out = generate(*model, batch, config);
      for (size_t r = 0; r < batch.size(); ++r) {
        IncrementalDecoder& d = decoders[r];
        const std::string rest = d.finish();
        if (stream) {
          std::cout << rest << "\n" << std::flush;
        } else if (jsonl) {
          nlohmann::json j;
          j["prompt"] = prompts[start + r];
          j["completion"] = d.text();
          j["tokens"] = out.tokens[r];
          j["finish_reason"] = finish_reason_name(out.finish_reasons[r]);
          std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n" << std::flush;
        } else {
          std::cout << d.text() << "\n" << std::flush;
        }
      }
    }
    const auto t1 = std::chrono::steady_clock::now();
    const double seconds = std::chrono::duration<double>(t1 - t0).count();
    const double to_first = first_token ? std::chrono::duration<double>(*first_token - t0).count() : seconds;
    std::cerr << fmt::format("mlr-generate: {} prompt{}, {} prompt tokens, {} new tokens in {:.2f} s: {:.1f} tokens/s "
                             "(first token after {:.2f} s) on {} in {}\n",
                             prompts.size(), prompts.size() == 1 ? "" : "s", prompt_tokens, new_tokens, seconds,
                             seconds > 0 ? static_cast<double>(new_tokens) / seconds : 0.0, to_first, device.str(),
                             dtype_name(dtype));
    return 0;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
