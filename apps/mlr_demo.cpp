// mlr-demo: the built-in demo (demo/demo.h). Generates a multi-task dataset, learns a tokenizer,
// pretrains a small LLaMA from random weights, fine-tunes it with LoRA, MultiLoRA, SMoRA and full
// fine-tuning, evaluates every model per task family, and writes <out>/index.html; the tables are
// printed at the end. Nothing is downloaded.
//
//   mlr-demo [--out demo_out] [--device auto] [--seed 1] [--quick]
#include <iostream>

#include <CLI/CLI.hpp>

#include "demo/demo.h"

int main(int argc, char** argv) {
  CLI::App app{"mlr-demo: pretrain a small LLaMA, fine-tune it with LoRA / MultiLoRA / SMoRA / full, compare per task"};
  mlr::demo::DemoOptions options;
  std::string out = options.out_dir.string();
  app.add_option("--out", out, "output folder (index.html, data, models, runs)");
  app.add_option("--device", options.device, "auto (the GPU when there is one), cpu, cuda, cuda:N");
  app.add_option("--seed", options.seed, "seed of the world, the data and the initial weights");
  app.add_flag("--quick", options.quick, "a short context, a small world, 250 + 100 steps: every stage in about 30 s of CPU");
  app.add_option("--pretrain-steps", options.pretrain_steps, "pretraining steps (default: 800; --quick: 250)");
  app.add_option("--finetune-steps", options.finetune_steps, "fine-tuning steps per method (default: 400; --quick: 100)");
  app.add_option("--eval-limit", options.eval_limit, "held-out documents per family (default: all)");
  CLI11_PARSE(app, argc, argv);
  options.out_dir = out;
  try {
    const mlr::demo::DemoReport report = mlr::demo::run_demo(options, std::cout);
    std::cout << mlr::demo::report_tables(report);
    std::cout << "page: " << (options.out_dir / "index.html").string() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
