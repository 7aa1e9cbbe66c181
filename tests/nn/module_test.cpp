// Module tree (names, dedup of shared parameters, slots), state dicts, modes and placement, and
// the basic layers against the tensor ops they wrap.
#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "autograd/functions.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "tensor/ops.h"

using namespace mlr;

namespace {

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A two-level model shaped like a tiny transformer block, with a tied output weight.
class Block : public UnaryModule {
 public:
  explicit Block(Generator& gen) : UnaryModule("Block") {
    norm = register_module("norm", std::make_shared<RMSNorm>(4));
    proj = register_module<UnaryModule>("proj", std::make_shared<Linear>(4, 4, false, &gen));
    steps = register_buffer("steps", zeros({2}, DType::i64));
    table = register_buffer("table", ones({3}), /*persistent=*/false);
  }
  Variable forward(const Variable& x) override { return add(x, proj->forward(norm->forward(x))); }
  ChildRef<RMSNorm> norm;
  ChildRef<UnaryModule> proj;
  Variable steps, table;
};

class Net : public Module {
 public:
  explicit Net(Generator& gen) : Module("Net") {
    embed = register_module("embed", std::make_shared<Embedding>(10, 4, &gen));
    auto list = std::make_shared<ModuleList>();
    for (int i = 0; i < 2; ++i) blocks_.push_back(list->push_back(std::make_shared<Block>(gen)));
    register_module("blocks", list);
    head_weight = register_parameter("head_weight", embed->weight());  // tied
    scale = register_parameter("scale", full({1}, 0.5));
  }
  Variable forward(const Tensor& ids) {
    Variable h = embed->forward(ids);
    for (auto& b : blocks_) h = b->forward(h);
    return matmul(mul(h, scale), transpose(head_weight, 0, 1));
  }
  ChildRef<Embedding> embed;
  std::vector<ChildRef<Block>> blocks_;
  Variable head_weight, scale;
};

// Multiplies its input by 2 after the wrapped module: a stand-in for an adapter.
class Doubler : public UnaryModule {
 public:
  explicit Doubler(std::shared_ptr<UnaryModule> inner) : UnaryModule("Doubler"), inner_(std::move(inner)) {}
  Variable forward(const Variable& x) override { return mul(inner_->forward(x), 2.0); }

 private:
  std::shared_ptr<UnaryModule> inner_;
};

std::vector<std::string> names_of(const std::vector<std::pair<std::string, Variable>>& v) {
  std::vector<std::string> out;
  for (auto& [n, x] : v) out.push_back(n);
  return out;
}

}  // namespace

TEST_CASE("module: dotted names in registration order, shared parameters listed once") {
  Generator gen(1);
  Net net(gen);
  // As torch: a module's own parameters first, then each child's; the tied weight is listed once,
  // under the first name met.
  std::vector<std::string> expected = {"head_weight",          "scale",                "blocks.0.norm.weight",
                                       "blocks.0.proj.weight", "blocks.1.norm.weight", "blocks.1.proj.weight"};
  CHECK(names_of(net.named_parameters()) == expected);
  CHECK(net.num_parameters() == 40 + 2 * (4 + 16) + 1);
  CHECK(names_of(net.named_buffers()) ==
        std::vector<std::string>{"blocks.0.steps", "blocks.0.table", "blocks.1.steps", "blocks.1.table"});
  // The state dict has the tied weight under both names and only persistent buffers.
  auto sd = net.state_dict();
  CHECK(sd.size() == 7 + 2);
  CHECK(sd.count("head_weight") == 1);
  CHECK(sd.count("blocks.1.steps") == 1);
  CHECK(sd.count("blocks.1.table") == 0);
  CHECK(sd.at("head_weight").shares_storage(sd.at("embed.weight")));
  auto ordered = net.ordered_state_dict();
  CHECK(ordered.front().first == "head_weight");
  CHECK(ordered[2].first == "embed.weight");
  CHECK(ordered.back().first == "blocks.1.steps");

  auto modules = net.named_modules();
  REQUIRE(modules.size() == 1 + 1 + 1 + 2 * 3);
  CHECK(modules[0].first == "");
  CHECK(modules[3].first == "blocks.0");
  CHECK(modules[4].first == "blocks.0.norm");
  CHECK(net.find_module("blocks.1.proj")->type_name() == "Linear");
  CHECK(net.find_module("blocks.2.proj") == nullptr);
  std::string msg = error_of([&] { net.module_at("blocks.1.attn"); });
  CHECK(msg.find("no module 'blocks.1.attn' in 'blocks.1'") != std::string::npos);
  CHECK(msg.find("children: [norm, proj]") != std::string::npos);
  CHECK(net.to_string().find("(proj): Linear(in=4, out=4, bias=false)") != std::string::npos);
}

TEST_CASE("module: registration rejects bad and duplicate names") {
  class Bad : public Module {
   public:
    Bad() : Module("Bad") {}
    void add(const std::string& n) { register_parameter(n, zeros({1})); }
  };
  Bad b;
  b.add("w");
  CHECK(error_of([&] { b.add("w"); }).find("'w': the name is already taken") != std::string::npos);
  CHECK(error_of([&] { b.add("a.b"); }).find("contain no '.'") != std::string::npos);
  CHECK(error_of([&] { b.add(""); }).find("non-empty") != std::string::npos);
}

TEST_CASE("module: replace_child swaps the module the parent's forward calls") {
  Generator gen(2);
  Net net(gen);
  Tensor ids = from_vector<int64_t>({1, 3, 5}, {3});
  Tensor before = net.forward(ids).data().clone();

  auto block = std::static_pointer_cast<Block>(net.module_at("blocks.0"));
  auto original = std::static_pointer_cast<UnaryModule>(net.module_at("blocks.0.proj"));
  auto old = net.replace_module("blocks.0.proj", std::make_shared<Doubler>(original));
  CHECK(old == original);
  CHECK(net.module_at("blocks.0.proj")->type_name() == "Doubler");
  // The wrapper owns no parameters: the wrapped Linear's are not in the tree any more.
  CHECK(net.named_parameters().size() == 5);

  // Expected: block 0 now computes x + 2 proj(norm(x)).
  Variable h = net.embed->forward(ids);
  h = add(h, mul(original->forward(block->norm->forward(h)), 2.0));
  h = net.blocks_[1]->forward(h);
  Tensor expected = matmul(mul(h, net.scale), transpose(net.head_weight, 0, 1)).data();
  Tensor after = net.forward(ids).data();
  CHECK(max_abs_diff(after, expected) < 1e-6);
  CHECK(max_abs_diff(after, before) > 1e-3);

  // A slot registered as RMSNorm does not take a Doubler; unknown names list the children.
  std::string msg = error_of([&] { block->replace_child("norm", std::make_shared<Doubler>(original)); });
  CHECK(msg.find("a Doubler cannot take the place of a RMSNorm") != std::string::npos);
  msg = error_of([&] { block->replace_child("mlp", std::make_shared<Doubler>(original)); });
  CHECK(msg.find("no child named 'mlp' (children: [norm, proj])") != std::string::npos);
}

TEST_CASE("module: state dict round trip and strict errors listing every problem") {
  Generator g1(3), g2(4);
  Net a(g1), b(g2);
  CHECK(max_abs_diff(a.embed->weight().data(), b.embed->weight().data()) > 0);
  auto result = b.load_state_dict(a.state_dict());
  CHECK(result.missing_keys.empty());
  CHECK(result.unexpected_keys.empty());
  for (auto& [name, t] : a.state_dict()) CHECK_MESSAGE(max_abs_diff(t, b.state_dict().at(name)) == 0, name);
  // Values are copied, not shared.
  CHECK(!a.embed->weight().data().shares_storage(b.embed->weight().data()));

  auto sd = a.state_dict();
  sd.erase("scale");
  sd.erase("blocks.1.norm.weight");
  sd["blocks.0.proj.bias"] = zeros({4});
  sd["blocks.0.norm.weight"] = zeros({5});
  sd["embed.weight"] = zeros({10, 3});
  Tensor kept = b.embed->weight().data().clone();
  std::string msg = error_of([&] { b.load_state_dict(sd); });
  CAPTURE(msg);
  CHECK(msg.find("2 missing: scale, blocks.1.norm.weight") != std::string::npos);
  CHECK(msg.find("1 unexpected: blocks.0.proj.bias") != std::string::npos);
  CHECK(msg.find("2 with the wrong shape: embed.weight (checkpoint [10, 3], model [10, 4]), "
                 "blocks.0.norm.weight (checkpoint [5], model [4])") != std::string::npos);
  CHECK(max_abs_diff(b.embed->weight().data(), kept) == 0);  // nothing loaded

  // Not strict: missing and unexpected are reported, shape mismatches still throw.
  sd.erase("blocks.0.norm.weight");
  sd.erase("embed.weight");
  auto loose = b.load_state_dict(sd, /*strict=*/false);
  CHECK(loose.missing_keys == std::vector<std::string>{"scale", "embed.weight", "blocks.0.norm.weight", "blocks.1.norm.weight"});
  CHECK(loose.unexpected_keys == std::vector<std::string>{"blocks.0.proj.bias"});
  CHECK(max_abs_diff(b.module_at("blocks.1.proj")->state_dict().at("weight"),
                     a.module_at("blocks.1.proj")->state_dict().at("weight")) == 0);
  sd["scale"] = zeros({2});
  CHECK(error_of([&] { b.load_state_dict(sd, false); }).find("scale (checkpoint [2], model [1])") !=
        std::string::npos);

  // Loading converts the dtype to the module's.
  auto sd64 = a.state_dict();
  for (auto& [n, t] : sd64)
    if (t.is_floating_point()) t = t.to(DType::f64);
  b.load_state_dict(sd64);
  CHECK(b.embed->weight().dtype() == DType::f32);
  CHECK(max_abs_diff(b.embed->weight().data(), a.embed->weight().data()) == 0);
}

TEST_CASE("module: train/eval, to(dtype), freezing and gradients through the tree") {
  Generator gen(5);
  Net net(gen);
  CHECK(net.training());
  net.eval();
  CHECK(!net.module_at("blocks.1.norm")->training());
  net.train();
  CHECK(net.module_at("blocks.1.norm")->training());

  Tensor ids = from_vector<int64_t>({0, 9, 2, 2}, {2, 2});
  sum(net.forward(ids)).backward();
  for (auto& [name, v] : net.named_parameters()) CHECK_MESSAGE(v.grad().defined(), name);
  net.zero_grad();
  for (auto& [name, v] : net.named_parameters()) CHECK(!v.grad().defined());

  Tensor f32_out = net.forward(ids).data().clone();
  net.to(DType::f64);
  for (auto& [name, v] : net.named_parameters()) CHECK(v.dtype() == DType::f64);
  CHECK(net.blocks_[0]->steps.dtype() == DType::i64);  // integer buffers keep their dtype
  CHECK(net.blocks_[0]->table.dtype() == DType::f64);
  // The members are handles: the tied weight moved with the embedding.
  CHECK(net.head_weight.dtype() == DType::f64);
  CHECK(net.head_weight.is_same(net.embed->weight()));
  Tensor f64_out = net.forward(ids).data();
  CHECK(f64_out.dtype() == DType::f64);
  CHECK(max_abs_diff(f64_out, f32_out) < 1e-4);

  net.requires_grad_(false);
  CHECK(net.num_parameters(/*trainable_only=*/true) == 0);
  net.module_at("blocks.1")->requires_grad_(true);
  CHECK(names_of(net.named_parameters(true)) == std::vector<std::string>{"blocks.1.norm.weight", "blocks.1.proj.weight"});
}

TEST_CASE("layers: Linear, Embedding and RMSNorm compute the tensor ops with torch's shapes") {
  Generator gen(6);
  Linear lin(5, 3, /*bias=*/true, &gen);
  CHECK(lin.weight().shape() == Shape{3, 5});
  CHECK(lin.bias().shape() == Shape{3});
  CHECK(names_of(lin.named_parameters()) == std::vector<std::string>{"weight", "bias"});
  // kaiming_uniform(a = sqrt 5): bound = 1/sqrt(in); bias bound the same.
  const double bound = 1.0 / std::sqrt(5.0);
  CHECK(amax(abs(lin.weight().data())).item<float>() <= bound);
  CHECK(amax(abs(lin.bias().data())).item<float>() <= bound);
  CHECK(amax(abs(lin.weight().data())).item<float>() > 0.5 * bound);
  Tensor x = randn({2, 4, 5}, gen);
  CHECK(max_abs_diff(lin.forward(x).data(), linear(x, lin.weight().data(), lin.bias().data())) == 0);
  CHECK(error_of([&] { lin.forward(randn({2, 4}, gen)); }).find("Linear(in=5, out=3): input of shape [2, 4]") !=
        std::string::npos);
  Linear nobias(5, 3, false, &gen);
  CHECK(!nobias.has_bias());
  CHECK(nobias.named_parameters().size() == 1);

  Embedding emb(7, 3, &gen, {DType::f64});
  CHECK(emb.weight().dtype() == DType::f64);
  Tensor ids = from_vector<int32_t>({6, 0, 6}, {3});
  Tensor e = emb.forward(ids).data();
  CHECK(e.shape() == Shape{3, 3});
  CHECK(max_abs_diff(e.select(0, 0), emb.weight().data().select(0, 6)) == 0);
  CHECK(!error_of([&] { emb.forward(from_vector<int32_t>({7}, {1})); }).empty());

  RMSNorm norm(5, 1e-5);
  CHECK(max_abs_diff(norm.weight().data(), ones({5})) == 0);
  Tensor y = norm.forward(x).data();
  Tensor ref = x * rsqrt(mean(square(x), {-1}, true) + 1e-5);
  CHECK(max_abs_diff(y, ref) < 1e-6);

  ParamOptions skip;
  skip.skip_init = true;
  skip.dtype = DType::bf16;
  Linear lazy(4, 2, false, nullptr, skip);
  CHECK(lazy.weight().dtype() == DType::bf16);
}
