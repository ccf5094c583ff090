// SPDX-License-Identifier: Apache-2.0
// Checkpoints: bit-exact save/load of the model and the AdamW state, the
// saved state, keep_last pruning, `latest` and its fallbacks, crashes in the
// middle of a save (a real SIGKILL of a saving process, and injected
// failures), incomplete and corrupted checkpoints, shape mismatches, and the
// [model] TOML writer.
#include <gtest/gtest.h>

#include "test_support.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "neox/backend.h"
#include "neox/communicator.h"
#include "neox/error.h"
#include "neox/io/hf.h"
#include "neox/io/safetensors.h"
#include "neox/model/gpt_neox.h"
#include "neox/optimizer.h"
#include "neox/registry.h"
#include "neox/train/checkpoint.h"
#include "neox/train/config.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using neox::DType;
using neox::Tensor;

neox::ModelConfig small_config() {
  neox::ModelConfig c;
  c.num_layers = 2;
  c.hidden_size = 32;
  c.num_attention_heads = 4;
  c.vocab_size = 100;
  c.make_vocab_size_divisible_by = 64;  // padded to 128
  c.seq_length = 16;
  c.max_position_embeddings = 16;
  c.rotary_pct = 0.5;
  c.gpt_j_residual = true;
  c.no_weight_tying = true;
  return c;
}

// A fresh directory under the test temp dir, removed at the end.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) {
    path = fs::path(::testing::TempDir()) / ("neox_ckpt_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string str(const std::string& sub = "") const { return (sub.empty() ? path : path / sub).string(); }
};

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_text(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << s;
}

std::vector<std::string> tmp_entries(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(".tmp-", 0) == 0) out.push_back(e.path().filename().string());
  return out;
}

std::vector<std::string> step_dirs(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("global_step", 0) == 0) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Throws unless `fn` throws a neox::Error whose message contains every part.
template <typename Fn>
std::string expect_error(Fn&& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
  } catch (const neox::Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    return msg;
  }
  ADD_FAILURE() << "no neox::Error thrown";
  return "";
}

struct Env {
  neox::PluginRegistry registry{{neox::test::build_plugin_dir()}};
  std::shared_ptr<neox::Backend> backend = registry.make_backend("cpu", {}, {});
  std::shared_ptr<neox::Communicator> comm = registry.make_comm("local", neox::Options("plugins.options.local"));

  std::shared_ptr<neox::Optimizer> make_adamw(neox::GPTNeoX& model) {
    neox::Options opts("plugins.options.adamw");
    opts.set("beta1", 0.9);
    opts.set("beta2", 0.95);
    auto opt = registry.make_optimizer("adamw", opts);
    auto& arena = model.arena();
    opt->init(*backend, *comm, arena.params(), arena.grads(), arena.groups(0.1f));
    return opt;
  }

  std::unique_ptr<neox::GPTNeoX> make_model(const neox::ModelConfig& c, std::uint64_t seed) {
    auto m = std::make_unique<neox::GPTNeoX>(c, backend);
    m->initialize(seed);
    return m;
  }

  // A few AdamW steps on random tokens, so that the state is not trivial.
  void train(neox::GPTNeoX& model, neox::Optimizer& opt, int steps) {
    const auto& c = model.config();
    std::mt19937 rng(7);
    Tensor ids = Tensor::zeros_host({2, 8}, DType::i64), labels = Tensor::zeros_host({2, 8}, DType::i64);
    for (int s = 0; s < steps; ++s) {
      for (int i = 0; i < 16; ++i) {
        ids.ptr<std::int64_t>()[i] = static_cast<std::int64_t>(rng() % c.vocab_size);
        labels.ptr<std::int64_t>()[i] = static_cast<std::int64_t>(rng() % c.vocab_size);
      }
      model.arena().zero_grads(*backend);
      model.forward_loss(ids, labels);
      model.backward();
      opt.step({1e-2f, s + 1, 1.0f});
    }
  }

  std::vector<unsigned char> bytes(const Tensor& t) {
    Tensor h = backend->to_host(t);
    const auto* p = static_cast<const unsigned char*>(h.data());
    return std::vector<unsigned char>(p, p + h.bytes());
  }
  std::vector<unsigned char> params(const neox::GPTNeoX& m) { return bytes(m.arena().params()); }
  std::map<std::string, std::vector<unsigned char>> opt_state(neox::Optimizer& o) {
    std::map<std::string, std::vector<unsigned char>> out;
    for (const auto& [name, t] : o.state()) out[name] = bytes(t);
    return out;
  }
};

Env& env() {
  static Env e;
  return e;
}

neox::CheckpointState sample_state(std::int64_t iteration) {
  neox::CheckpointState s;
  s.iteration = iteration;
  s.data_positions = {{"train", 1000 + iteration}, {"valid", 17}};
  s.rng_state = "mt19937 " + std::to_string(iteration) + " 123 456";
  s.config_toml = "# run config\n" + neox::model_config_toml(small_config());
  return s;
}

// An optimizer that fails while its state is being saved (an injected error in
// the middle of a save), or that has another name.
class FakeOptimizer final : public neox::Optimizer {
 public:
  FakeOptimizer(std::string name, bool fail) : name_(std::move(name)), fail_(fail) {}
  std::string name() const override { return name_; }
  void init(neox::Backend&, neox::Communicator&, const Tensor&, const Tensor&,
            const std::vector<neox::ParamGroup>&) override {}
  void step(const neox::StepContext&) override {}
  neox::TensorMap state() override {
    if (fail_) throw neox::Error("injected failure while reading the optimizer state");
    return {{"m", state_}};
  }
  void load_state(const neox::TensorMap&) override {}
  std::int64_t state_bytes() const override { return 0; }

 private:
  std::string name_;
  bool fail_;
  Tensor state_ = Tensor::zeros_host({4}, DType::f32);
};

// --- save / load ---------------------------------------------------------------

TEST(Checkpoint, SaveLoadIsBitExactForModelAndAdamWState) {
  TempDir tmp("exact");
  Env& e = env();
  auto model = e.make_model(small_config(), 11);
  auto opt = e.make_adamw(*model);
  e.train(*model, *opt, 3);
  neox::CheckpointState state = sample_state(3);
  state.rng_state += std::string("\0\xff\xfe binary", 10);  // not UTF-8: stored as base64
  const std::string dir = neox::save_checkpoint(tmp.str("save"), *model, opt.get(), state, 0);
  EXPECT_EQ(dir, tmp.str("save/global_step3"));
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "state.json", "config.toml"})
    EXPECT_TRUE(fs::is_regular_file(fs::path(dir) / f)) << f;
  EXPECT_EQ(read_text(tmp.path / "save/latest"), "global_step3\n");
  EXPECT_TRUE(tmp_entries(tmp.path / "save").empty());

  auto other = e.make_model(small_config(), 99);
  auto other_opt = e.make_adamw(*other);
  ASSERT_NE(e.params(*model), e.params(*other));
  neox::CheckpointState back = neox::load_checkpoint(tmp.str("save"), *other, other_opt.get());
  EXPECT_EQ(e.params(*model), e.params(*other));
  EXPECT_EQ(e.opt_state(*opt), e.opt_state(*other_opt));
  EXPECT_EQ(back.iteration, state.iteration);
  EXPECT_EQ(back.data_positions, state.data_positions);
  EXPECT_EQ(back.rng_state, state.rng_state);
  EXPECT_EQ(back.config_toml, state.config_toml);
  EXPECT_EQ(neox::read_checkpoint_config(tmp.str("save")), state.config_toml);

  // Training on from both gives the same parameters, bit for bit.
  e.train(*model, *opt, 2);
  e.train(*other, *other_opt, 2);
  EXPECT_EQ(e.params(*model), e.params(*other));
}

// A stand-in for a ZeRO-3 optimizer: keeps each unit's parameters in its
// own store (the "partition") and makes the arena's unit whole on gather.
class StoreHooks final : public neox::ParameterHooks {
 public:
  StoreHooks(neox::ParameterArena& arena, neox::Backend& backend)
      : arena_(arena), backend_(backend), store(arena.units().size()) {}
  void gather(int unit) override {
    if (arena_.unit_gathered(unit)) return;
    Tensor dst = arena_.unit_params(unit);
    backend_.copy_tensor(dst, store.at(static_cast<std::size_t>(unit)));
    arena_.unit_params_ready(unit);
    ++gathers;
  }
  void release(int unit) override { arena_.drop_unit_params(unit); }
  void gradients_ready(int) override {}
  void parameters_written(int unit) override {
    store.at(static_cast<std::size_t>(unit)) = backend_.to_host(arena_.unit_params(unit));
  }
  std::vector<unsigned char> all() const {  // the bytes of the whole f32 parameters, in arena order
    std::vector<unsigned char> out;
    for (const Tensor& t : store) {
      const auto* p = static_cast<const unsigned char*>(t.data());
      out.insert(out.end(), p, p + t.bytes());
    }
    return out;
  }
  int gathers = 0;

 private:
  neox::ParameterArena& arena_;
  neox::Backend& backend_;

 public:
  std::vector<Tensor> store;  // by unit, host f32
};

// Partitioned parameters (ZeRO-3) are initialised, saved and loaded one unit
// at a time: the same values and file bytes as a whole model, while the
// arena never holds more than the largest unit.
TEST(Checkpoint, PartitionedParametersAreWrittenAndSavedUnitByUnit) {
  TempDir tmp("partitioned");
  Env& e = env();
  const neox::ModelConfig c = small_config();
  auto whole = e.make_model(c, 21);
  neox::GPTNeoX part(c, e.backend, {}, {true, true});
  EXPECT_EQ(part.arena().bytes(), 0u);
  expect_error([&] { part.initialize(21); }, {"partitioned", "no ParameterHooks"});
  StoreHooks hooks(part.arena(), *e.backend);
  part.set_parameter_hooks(&hooks);
  part.initialize(21);
  EXPECT_EQ(hooks.all(), e.params(*whole));
  std::int64_t largest = 0;
  for (const auto& u : part.arena().units()) largest = std::max(largest, u.count);
  EXPECT_EQ(part.arena().peak_bytes(), static_cast<std::size_t>(4 * largest));
  EXPECT_EQ(part.arena().bytes(), 0u);

  // Saved one unit at a time: the same model.safetensors, byte for byte.
  const std::string a = neox::save_checkpoint(tmp.str("whole"), *whole, nullptr, sample_state(1), 0);
  const std::string b = neox::save_checkpoint(tmp.str("part"), part, nullptr, sample_state(1), 0);
  EXPECT_EQ(read_text(fs::path(a) / "model.safetensors"), read_text(fs::path(b) / "model.safetensors"));
  EXPECT_EQ(hooks.gathers, static_cast<int>(part.arena().units().size()));
  EXPECT_EQ(part.arena().bytes(), 0u);  // every unit released again
  EXPECT_EQ(part.arena().peak_bytes(), static_cast<std::size_t>(4 * largest));

  // Loaded one unit at a time into another partitioned model.
  neox::GPTNeoX other(c, e.backend, {}, {true, true});
  StoreHooks other_hooks(other.arena(), *e.backend);
  other.set_parameter_hooks(&other_hooks);
  other.initialize(99);
  ASSERT_NE(other_hooks.all(), hooks.all());
  neox::load_checkpoint(b, other, nullptr);
  EXPECT_EQ(other_hooks.all(), hooks.all());
  EXPECT_EQ(other.arena().peak_bytes(), static_cast<std::size_t>(4 * largest));
}

TEST(Checkpoint, ModelFileHasHuggingFaceNamesAndLayout) {
  TempDir tmp("layout");
  Env& e = env();
  auto model = e.make_model(small_config(), 5);
  const std::string dir = neox::save_checkpoint(tmp.str(), *model, nullptr, sample_state(0), 0);
  auto f = neox::SafeTensorsFile::open(dir + "/model.safetensors");
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  const auto& c = model->config();
  ASSERT_EQ(f.tensors().size(), model->arena().specs().size());
  for (const auto& spec : model->arena().specs()) {
    ASSERT_TRUE(f.contains(spec.name)) << spec.name;
    EXPECT_EQ(f.info(spec.name).dtype, DType::f32);
    Tensor stored = f.read(spec.name, DType::f32);
    Tensor mine = e.backend->to_host(model->arena().param(spec.name));
    if (spec.name.find("query_key_value") != std::string::npos) {
      Tensor hf = Tensor::empty(nullptr, mine.shape(), DType::f32);
      neox::qkv_to_hf(hf.ptr<float>(), mine.ptr<float>(), static_cast<int>(c.num_attention_heads),
                      static_cast<int>(c.head_size()), mine.ndim() == 2 ? static_cast<long>(mine.dim(1)) : 1);
      mine = hf;
    }
    EXPECT_EQ(std::memcmp(stored.data(), mine.data(), mine.bytes()), 0) << spec.name;
  }
  // Readable as a Hugging Face state dict too.
  auto again = e.make_model(small_config(), 6);
  neox::load_hf_weights(*again, dir);
  EXPECT_EQ(e.params(*model), e.params(*again));
  EXPECT_FALSE(fs::exists(dir + "/optimizer.safetensors"));
}

TEST(Checkpoint, WeightsOnlyCheckpointNeedsANullOptimizer) {
  TempDir tmp("weights_only");
  Env& e = env();
  auto model = e.make_model(small_config(), 5);
  neox::save_checkpoint(tmp.str(), *model, nullptr, sample_state(0), 0);
  auto other = e.make_model(small_config(), 6);
  auto opt = e.make_adamw(*other);
  const auto before = e.params(*other);
  expect_error([&] { neox::load_checkpoint(tmp.str(), *other, opt.get()); },
               {"optimizer.safetensors", "no optimizer state", "finetune"});
  EXPECT_EQ(e.params(*other), before) << "a refused load must not change the model";
  neox::load_checkpoint(tmp.str(), *other, nullptr);
  EXPECT_EQ(e.params(*model), e.params(*other));
}

TEST(Checkpoint, OptimizerOfAnotherKindIsRefusedBeforeAnythingChanges) {
  TempDir tmp("other_opt");
  Env& e = env();
  auto model = e.make_model(small_config(), 5);
  auto opt = e.make_adamw(*model);
  neox::save_checkpoint(tmp.str(), *model, opt.get(), sample_state(1), 0);
  auto other = e.make_model(small_config(), 6);
  const auto before = e.params(*other);
  FakeOptimizer sgd("sgd", false);
  expect_error([&] { neox::load_checkpoint(tmp.str(), *other, &sgd); }, {"optimizer.safetensors", "'adamw'", "'sgd'"});
  EXPECT_EQ(e.params(*other), before);
}

TEST(Checkpoint, SavingTheSameStepAgainReplacesIt) {
  TempDir tmp("same_step");
  Env& e = env();
  auto a = e.make_model(small_config(), 1);
  auto b = e.make_model(small_config(), 2);
  neox::save_checkpoint(tmp.str(), *a, nullptr, sample_state(4), 0);
  neox::CheckpointState s = sample_state(4);
  s.rng_state = "second";
  neox::save_checkpoint(tmp.str(), *b, nullptr, s, 0);
  EXPECT_EQ(step_dirs(tmp.path), std::vector<std::string>{"global_step4"});
  EXPECT_TRUE(tmp_entries(tmp.path).empty());
  auto c = e.make_model(small_config(), 3);
  EXPECT_EQ(neox::load_checkpoint(tmp.str(), *c, nullptr).rng_state, "second");
  EXPECT_EQ(e.params(*b), e.params(*c));
}

TEST(Checkpoint, KeepLastPrunesTheOldestByStepNumber) {
  TempDir tmp("keep_last");
  Env& e = env();
  auto model = e.make_model(small_config(), 1);
  for (int step : {1, 2, 3, 10, 20}) neox::save_checkpoint(tmp.str(), *model, nullptr, sample_state(step), 2);
  EXPECT_EQ(step_dirs(tmp.path), (std::vector<std::string>{"global_step10", "global_step20"}));
  EXPECT_EQ(read_text(tmp.path / "latest"), "global_step20\n");
  EXPECT_TRUE(tmp_entries(tmp.path).empty());
  // The checkpoint just written is never pruned, even when older by step number.
  neox::save_checkpoint(tmp.str(), *model, nullptr, sample_state(5), 2);
  EXPECT_EQ(step_dirs(tmp.path), (std::vector<std::string>{"global_step10", "global_step20", "global_step5"}));
  EXPECT_EQ(read_text(tmp.path / "latest"), "global_step5\n");
  // keep_last = 0 keeps everything.
  for (int step : {30, 40, 50}) neox::save_checkpoint(tmp.str(), *model, nullptr, sample_state(step), 0);
  EXPECT_EQ(step_dirs(tmp.path).size(), 6u);
  neox::save_checkpoint(tmp.str(), *model, nullptr, sample_state(60), 1);
  EXPECT_EQ(step_dirs(tmp.path), std::vector<std::string>{"global_step60"});
}

// --- resolve and latest ----------------------------------------------------------

TEST(Checkpoint, ResolveFollowsLatestAndFallsBackToTheNewestComplete) {
  TempDir tmp("resolve");
  Env& e = env();
  auto model = e.make_model(small_config(), 1);
  for (int step : {1, 2, 3}) neox::save_checkpoint(tmp.str(), *model, nullptr, sample_state(step), 0);
  const fs::path root = tmp.path;
  EXPECT_EQ(neox::resolve_checkpoint(tmp.str()), (root / "global_step3").string());
  EXPECT_EQ(neox::resolve_checkpoint(tmp.str() + "/"), (root / "global_step3").string());
  EXPECT_EQ(neox::resolve_checkpoint((root / "global_step2").string()), (root / "global_step2").string());

  write_text(root / "latest", "global_step2\n");  // latest need not be the highest step
  EXPECT_EQ(neox::resolve_checkpoint(tmp.str()), (root / "global_step2").string());
  fs::remove(root / "latest");
  EXPECT_EQ(neox::resolve_checkpoint(tmp.str()), (root / "global_step3").string());
  write_text(root / "latest", "global_step7\n");  // names a missing checkpoint
  EXPECT_EQ(neox::resolve_checkpoint(tmp.str()), (root / "global_step3").string());
  write_text(root / "latest", "../../etc\n");  // not a checkpoint name
  EXPECT_EQ(neox::resolve_checkpoint(tmp.str()), (root / "global_step3").string());
  write_text(root / "latest", "global_step3\n");
  fs::remove(root / "global_step3/state.json");  // latest names an incomplete checkpoint
  EXPECT_EQ(neox::resolve_checkpoint(tmp.str()), (root / "global_step2").string());

  // .tmp-* directories are never candidates, even complete-looking ones.
  fs::copy(root / "global_step2", root / ".tmp-global_step9-1");
  fs::remove(root / "latest");
  EXPECT_EQ(neox::resolve_checkpoint(tmp.str()), (root / "global_step2").string());

  for (const char* d : {"global_step1", "global_step2"}) fs::remove(root / d / "model.safetensors");
  expect_error([&] { neox::resolve_checkpoint(tmp.str()); }, {tmp.str(), "no complete checkpoint"});
  expect_error([&] { neox::resolve_checkpoint(tmp.str("nowhere")); }, {"nowhere", "no such"});
  TempDir empty("resolve_empty");
  expect_error([&] { neox::resolve_checkpoint(empty.str()); }, {"no checkpoint here"});
}

TEST(Checkpoint, StaleTemporariesOfOtherProcessesAreRemovedAtTheNextSave) {
  TempDir tmp("stale");
  Env& e = env();
  auto model = e.make_model(small_config(), 1);
  neox::save_checkpoint(tmp.str(), *model, nullptr, sample_state(1), 0);
  fs::create_directories(tmp.path / ".tmp-global_step2-999999999");
  write_text(tmp.path / ".tmp-global_step2-999999999/model.safetensors", "partial");
  fs::create_directories(tmp.path / ".tmp-old-global_step1-999999998");
  EXPECT_EQ(tmp_entries(tmp.path).size(), 2u);
  EXPECT_EQ(neox::resolve_checkpoint(tmp.str()), tmp.str("global_step1"));
  neox::save_checkpoint(tmp.str(), *model, nullptr, sample_state(2), 0);
  EXPECT_TRUE(tmp_entries(tmp.path).empty());
}

// --- crashes -------------------------------------------------------------------

// Helper process for CheckpointKill: saves checkpoints of a larger model in a
// loop until it is killed. Skipped unless run by that test.
TEST(CheckpointCrashChild, SaveLoop) {
  const char* dir = std::getenv("NEOX_CKPT_CRASH_DIR");
  const char* ready = std::getenv("NEOX_CKPT_CRASH_READY");
  if (!dir || !ready) GTEST_SKIP() << "helper process of Checkpoint.SigkillDuringSaveKeepsThePreviousCheckpoint";
  Env& e = env();
  neox::ModelConfig c = small_config();
  c.hidden_size = 256;
  c.num_layers = 3;
  auto model = std::make_unique<neox::GPTNeoX>(c, e.backend);
  auto opt = e.make_adamw(*model);
  std::int64_t step = neox::load_checkpoint(dir, *model, opt.get()).iteration;
  write_text(ready, "ready");
  const auto n = model->arena().numel();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    ++step;
    model->initialize(static_cast<std::uint64_t>(step));
    Tensor m = Tensor::empty(nullptr, {n}, DType::f32), v = Tensor::empty(nullptr, {n}, DType::f32);
    std::fill(m.ptr<float>(), m.ptr<float>() + n, static_cast<float>(step));
    std::fill(v.ptr<float>(), v.ptr<float>() + n, static_cast<float>(2 * step));
    opt->load_state({{"exp_avg", m}, {"exp_avg_sq", v}});
    neox::CheckpointState s;
    s.iteration = step;
    s.rng_state = "rng " + std::to_string(step);
    s.config_toml = "step " + std::to_string(step);
    neox::save_checkpoint(dir, *model, opt.get(), s, 2);
  }
}

TEST(Checkpoint, SigkillDuringSaveKeepsThePreviousCheckpoint) {
  TempDir tmp("kill");
  Env& e = env();
  neox::ModelConfig c = small_config();
  c.hidden_size = 256;
  c.num_layers = 3;
  auto model = std::make_unique<neox::GPTNeoX>(c, e.backend);
  auto opt = e.make_adamw(*model);
  auto expected = std::make_unique<neox::GPTNeoX>(c, e.backend);
  {  // step 0, saved here: the children continue from it
    model->initialize(0);
    neox::CheckpointState s;
    s.rng_state = "rng 0";
    s.config_toml = "step 0";
    neox::save_checkpoint(tmp.str("save"), *model, opt.get(), s, 2);
  }
  char exe[4096];
  const ssize_t len = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  ASSERT_GT(len, 0);
  exe[len] = '\0';

  std::mt19937 rng(20261127);
  std::int64_t last = 0;
  int kills_mid_save = 0;
  for (int round = 0; round < 8; ++round) {
    const std::string ready = tmp.str("ready" + std::to_string(round));
    // Everything the child needs is prepared before fork (only exec after it).
    std::vector<std::string> env_strings;
    for (char** p = environ; *p; ++p)  // not GTEST_* (sharding, XML output): the child runs one test
      if (std::strncmp(*p, "GTEST_", 6) != 0) env_strings.emplace_back(*p);
    env_strings.push_back("NEOX_CKPT_CRASH_DIR=" + tmp.str("save"));
    env_strings.push_back("NEOX_CKPT_CRASH_READY=" + ready);
    std::vector<char*> envp;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string filter = "--gtest_filter=CheckpointCrashChild.SaveLoop";
    char* argv[] = {exe, filter.data(), nullptr};
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(1);
      int devnull = ::open("/dev/null", O_WRONLY);
      if (devnull >= 0) {
        ::dup2(devnull, 1);
        ::dup2(devnull, 2);
      }
      ::execve(exe, argv, envp.data());
      ::_exit(127);
    }
    const auto start = std::chrono::steady_clock::now();
    int early = -1;
    while (!fs::exists(ready) && std::chrono::steady_clock::now() - start < std::chrono::seconds(60)) {
      int st = 0;
      if (::waitpid(pid, &st, WNOHANG) == pid) {
        early = st;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    if (early >= 0) FAIL() << "the saving child exited early, status " << early;
    if (!fs::exists(ready)) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      FAIL() << "the saving child did not start within 60 s";
    }
    if (round == 7 && last == 0)  // make sure at least one save by a child completes
      while (read_text(tmp.path / "save/latest") == "global_step0\n" &&
             std::chrono::steady_clock::now() - start < std::chrono::seconds(60))
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 400'000));
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
    if (!tmp_entries(tmp.path / "save").empty()) ++kills_mid_save;

    // The newest complete checkpoint loads and is exactly what was saved.
    const neox::CheckpointState s = neox::load_checkpoint(tmp.str("save"), *model, opt.get());
    EXPECT_GE(s.iteration, last) << "round " << round << ": an earlier checkpoint came back";
    last = s.iteration;
    EXPECT_EQ(s.rng_state, "rng " + std::to_string(s.iteration));
    EXPECT_EQ(s.config_toml, "step " + std::to_string(s.iteration));
    expected->initialize(static_cast<std::uint64_t>(s.iteration));
    EXPECT_EQ(e.params(*model), e.params(*expected)) << "round " << round << ", iteration " << s.iteration;
    const float want = static_cast<float>(s.iteration);
    for (const auto& [name, t] : opt->state()) {
      Tensor h = e.backend->to_host(t);
      const float w = name == "exp_avg" ? want : 2 * want;
      const auto n = h.numel();
      EXPECT_EQ(std::count(h.ptr<float>(), h.ptr<float>() + n, w), n) << name << " at iteration " << s.iteration;
    }
  }
  std::printf("8 kills: %d left a partial save behind; reached iteration %lld\n", kills_mid_save,
              static_cast<long long>(last));
  EXPECT_GT(last, 0) << "no child finished a save: the kill test did not test anything";
  // The next save cleans up whatever the killed processes left.
  neox::CheckpointState s;
  s.iteration = last + 1;
  neox::save_checkpoint(tmp.str("save"), *model, opt.get(), s, 2);
  EXPECT_TRUE(tmp_entries(tmp.path / "save").empty());
  EXPECT_LE(step_dirs(tmp.path / "save").size(), 3u);
}

TEST(Checkpoint, FailureInTheMiddleOfASaveLeavesThePreviousOne) {
  TempDir tmp("inject");
  Env& e = env();
  auto model = e.make_model(small_config(), 1);
  auto opt = e.make_adamw(*model);
  neox::save_checkpoint(tmp.str(), *model, opt.get(), sample_state(1), 0);
  const auto saved = e.params(*model);
  auto changed = e.make_model(small_config(), 2);

  // The optimizer fails after model.safetensors was written.
  FakeOptimizer failing("adamw", true);
  expect_error([&] { neox::save_checkpoint(tmp.str(), *changed, &failing, sample_state(2), 0); }, {"injected"});
  EXPECT_TRUE(tmp_entries(tmp.path).empty()) << "the partial save is removed";
  EXPECT_EQ(step_dirs(tmp.path), std::vector<std::string>{"global_step1"});

  // `latest` cannot be replaced (latest.tmp is a non-empty directory).
  fs::create_directories(tmp.path / "latest.tmp/blocker");
  expect_error([&] { neox::save_checkpoint(tmp.str(), *changed, nullptr, sample_state(3), 0); }, {"latest"});
  EXPECT_EQ(read_text(tmp.path / "latest"), "global_step1\n");
  fs::remove_all(tmp.path / "latest.tmp");

  auto loaded = e.make_model(small_config(), 3);
  auto loaded_opt = e.make_adamw(*loaded);
  EXPECT_EQ(neox::load_checkpoint(tmp.str(), *loaded, loaded_opt.get()).iteration, 1);
  EXPECT_EQ(e.params(*loaded), saved);
  EXPECT_EQ(e.opt_state(*loaded_opt), e.opt_state(*opt));
}

// --- incomplete, corrupted, mismatched -------------------------------------------

class CheckpointDamage : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = env().make_model(small_config(), 1);
    opt_ = env().make_adamw(*model_);
    dir_ = neox::save_checkpoint(tmp_.str(), *model_, opt_.get(), sample_state(1), 0);
  }
  std::string load() {
    auto m = env().make_model(small_config(), 2);
    auto o = env().make_adamw(*m);
    neox::load_checkpoint(dir_, *m, o.get());
    return "";
  }
  TempDir tmp_{"damage"};
  std::unique_ptr<neox::GPTNeoX> model_;
  std::shared_ptr<neox::Optimizer> opt_;
  std::string dir_;
};

TEST_F(CheckpointDamage, MissingFilesAreNamed) {
  for (const char* f : {"config.toml", "model.safetensors", "state.json", "optimizer.safetensors"}) {
    const fs::path p = fs::path(dir_) / f;
    fs::rename(p, p.string() + ".away");
    expect_error([&] { load(); }, {p.string(), "missing", "incomplete"});
    fs::rename(p.string() + ".away", p);
  }
  load();
}

TEST_F(CheckpointDamage, TruncatedSafetensorsAreRefused) {
  for (const char* f : {"model.safetensors", "optimizer.safetensors"}) {
    const fs::path p = fs::path(dir_) / f;
    const auto size = fs::file_size(p);
    fs::copy_file(p, p.string() + ".good");
    fs::resize_file(p, size - 100);
    expect_error([&] { load(); }, {p.string()});
    fs::resize_file(p, 5);
    expect_error([&] { load(); }, {p.string()});
    fs::rename(p.string() + ".good", p);
  }
  load();
}

TEST_F(CheckpointDamage, BadStateJsonIsRefused) {
  const fs::path p = fs::path(dir_) / "state.json";
  const std::string good = read_text(p);
  write_text(p, good.substr(0, good.size() / 2));
  expect_error([&] { load(); }, {p.string(), "not valid JSON"});
  write_text(p, "{\"format_version\": 1}");
  expect_error([&] { load(); }, {p.string(), "iteration"});
  write_text(p, "{\"format_version\": 99, \"iteration\": 1}");
  expect_error([&] { load(); }, {p.string(), "newer neox"});
  write_text(p, good);
  load();
}

TEST_F(CheckpointDamage, ShapeMismatchNamesFileAndTensor) {
  neox::ModelConfig wider = small_config();
  wider.vocab_size = 200;  // padded to 256 instead of 128
  auto m = env().make_model(wider, 2);
  const auto before = env().params(*m);
  expect_error([&] { neox::load_checkpoint(dir_, *m, nullptr); },
               {dir_ + "/model.safetensors", "gpt_neox.embed_in.weight", "[128, 32]", "[256, 32]"});
  EXPECT_EQ(env().params(*m), before);

  neox::ModelConfig deeper = small_config();
  deeper.num_layers = 3;
  auto d = env().make_model(deeper, 2);
  expect_error([&] { neox::load_checkpoint(dir_, *d, nullptr); },
               {"model.safetensors", "gpt_neox.layers.2.", "missing"});

  neox::ModelConfig tied = small_config();
  tied.no_weight_tying = false;
  auto t = env().make_model(tied, 2);
  expect_error([&] { neox::load_checkpoint(dir_, *t, nullptr); }, {"unexpected tensor 'embed_out.weight'"});

  neox::ModelConfig shallow = small_config();
  shallow.num_layers = 1;
  auto s = env().make_model(shallow, 2);
  expect_error([&] { neox::load_checkpoint(dir_, *s, nullptr); }, {"unexpected tensor 'gpt_neox.layers.1."});
}

TEST_F(CheckpointDamage, IncompleteLatestFallsBackButADirectPathIsAnError) {
  auto model = env().make_model(small_config(), 3);
  const std::string second = neox::save_checkpoint(tmp_.str(), *model, opt_.get(), sample_state(2), 0);
  fs::resize_file(fs::path(second) / "model.safetensors", 64);
  EXPECT_EQ(neox::resolve_checkpoint(tmp_.str()), dir_);
  expect_error([&] { neox::resolve_checkpoint(second); }, {second + "/model.safetensors"});
}

// --- [model] TOML ----------------------------------------------------------------

void expect_same_model(const neox::ModelConfig& a, const neox::ModelConfig& b) {
  EXPECT_EQ(a.num_layers, b.num_layers);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.make_vocab_size_divisible_by, b.make_vocab_size_divisible_by);
  EXPECT_EQ(a.seq_length, b.seq_length);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.pos_emb, b.pos_emb);
  EXPECT_EQ(a.rotary_pct, b.rotary_pct);
  EXPECT_EQ(a.rotary_emb_base, b.rotary_emb_base);
  EXPECT_EQ(a.gpt_j_residual, b.gpt_j_residual);
  EXPECT_EQ(a.no_weight_tying, b.no_weight_tying);
  EXPECT_EQ(a.layernorm_epsilon, b.layernorm_epsilon);
  EXPECT_EQ(a.init_method, b.init_method);
  EXPECT_EQ(a.output_layer_init_method, b.output_layer_init_method);
  EXPECT_EQ(a.init_method_std, b.init_method_std);
}

TEST(CheckpointConfigToml, ModelTableReadsBackToTheSameConfig) {
  std::vector<neox::ModelConfig> configs;
  configs.push_back(neox::ModelConfig{});
  configs.push_back(small_config());
  neox::ModelConfig odd = small_config();
  odd.rotary_pct = 0.1 + 0.2;  // 0.30000000000000004
  odd.rotary_emb_base = 12345.678e3;
  odd.layernorm_epsilon = 1e-5;
  odd.init_method_std = 1.0 / 3.0;
  odd.intermediate_size = 100;
  odd.pos_emb = "learned";
  odd.no_weight_tying = false;
  odd.gpt_j_residual = false;
  odd.init_method = "small_init";
  odd.output_layer_init_method = "wang_init";
  odd.vocab_size = 50277;
  odd.make_vocab_size_divisible_by = 128;
  odd.seq_length = 8;
  configs.push_back(odd);
  neox::ModelConfig hf = neox::read_hf_config(neox::test::testdata_dir() + "/hf/neox_tiny_parallel/hf");
  configs.push_back(hf);
  for (const auto& c : configs) {
    const std::string text = neox::model_config_toml(c);
    SCOPED_TRACE(text);
    neox::Config back = neox::parse_config(text, "<model_config_toml>");
    expect_same_model(c, back.model);
    EXPECT_EQ(neox::model_config_toml(back.model), text);
  }
}

}  // namespace
