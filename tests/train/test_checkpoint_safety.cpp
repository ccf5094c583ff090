// SPDX-License-Identifier: Apache-2.0
// Checkpoints never give a silent wrong result and never lose what was saved
// before: corrupted checkpoints (a flipped bit, an iteration that disagrees
// with the directory, data positions missing or absurd, another step's
// weights, non-finite or negative saved values) are refused and a save
// directory falls back to the previous complete checkpoint; non-finite
// values are never saved; the save directory's lock refuses a second writer
// naming its PID and is released when its holder dies; a fresh run refuses
// to take over another run's save directory; a NaN loss stops the run.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "neox/backend.h"
#include "neox/communicator.h"
#include "neox/error.h"
#include "neox/io/crc32c.h"
#include "neox/io/safetensors.h"
#include "neox/model/gpt_neox.h"
#include "neox/optimizer.h"
#include "neox/registry.h"
#include "neox/train/checkpoint.h"
#include "neox/train/config.h"
#include "neox/train/trainer.h"
#include "test_support.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using neox::DType;
using neox::Tensor;

const std::string kTestdata = neox::test::testdata_dir();

std::string read_bytes(const fs::path& p) { return neox::test::read_text(p.string()); }

void write_bytes(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << s;
}

// Every file under `dir` (relative name -> bytes): "the data saved before".
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out[fs::relative(e.path(), dir).string()] = read_bytes(e.path());
  return out;
}

std::vector<std::string> tmp_entries(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(".tmp-", 0) == 0) out.push_back(e.path().filename().string());
  return out;
}

template <typename Fn>
std::string expect_error(Fn&& fn, std::initializer_list<std::string> parts) {
  const std::string msg = neox::test::error_of(fn);
  for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  return msg;
}

void expect_contains(const std::string& text, std::initializer_list<std::string> parts) {
  for (const auto& p : parts) EXPECT_NE(text.find(p), std::string::npos) << "'" << p << "' not in: " << text;
}

neox::ModelConfig small_model() {
  neox::ModelConfig c;
  c.num_layers = 2;
  c.hidden_size = 32;
  c.num_attention_heads = 4;
  c.vocab_size = 100;
  c.make_vocab_size_divisible_by = 64;
  c.seq_length = 16;
  c.max_position_embeddings = 16;
  c.rotary_pct = 0.5;
  c.no_weight_tying = true;
  return c;
}

struct Env {
  neox::PluginRegistry registry{{neox::test::build_plugin_dir()}};
  std::shared_ptr<neox::Backend> backend = registry.make_backend("cpu", {}, {});
  std::shared_ptr<neox::Communicator> comm = registry.make_comm("local", neox::Options("plugins.options.local"));

  std::unique_ptr<neox::GPTNeoX> model(std::uint64_t seed) {
    auto m = std::make_unique<neox::GPTNeoX>(small_model(), backend);
    m->initialize(seed);
    return m;
  }
  std::shared_ptr<neox::Optimizer> adamw(neox::GPTNeoX& model, float fill = 0.5f) {
    auto opt = registry.make_optimizer("adamw", neox::Options("plugins.options.adamw"));
    auto& arena = model.arena();
    opt->init(*backend, *comm, arena.params(), arena.grads(), arena.groups(0.1f));
    for (auto& [name, t] : opt->state()) std::fill(t.ptr<float>(), t.ptr<float>() + t.numel(), fill);
    return opt;
  }
  std::vector<float> params(const neox::GPTNeoX& m) {
    Tensor h = backend->to_host(m.arena().params());
    return std::vector<float>(h.ptr<float>(), h.ptr<float>() + h.numel());
  }
};

Env& env() {
  static Env e;
  return e;
}

neox::CheckpointState state_at(std::int64_t iteration) {
  neox::CheckpointState s;
  s.iteration = iteration;
  s.data_positions = {{"train", 4 * iteration}, {"valid", 0}};
  s.trainer_values = {{"global_batch_size", 4}, {"batch_start_iteration", 0}, {"batch_start_train_position", 0}};
  s.rng_state = "rng " + std::to_string(iteration);
  s.config_toml = "# step " + std::to_string(iteration) + "\n";
  return s;
}

json read_json(const fs::path& p) { return json::parse(read_bytes(p)); }
void write_json(const fs::path& p, const json& j) { write_bytes(p, j.dump(2) + "\n"); }

// Sets the f32 elements [index, index + count) of tensor `name` (count -1:
// to its end) of a safetensors file to `value`, in place.
void poke_float(const fs::path& file, const std::string& name, std::int64_t index, float value,
                std::int64_t count = 1) {
  std::uint64_t offset, end;
  {
    auto f = neox::SafeTensorsFile::open(file.string());
    std::ifstream in(file, std::ios::binary);
    std::uint64_t header = 0;
    in.read(reinterpret_cast<char*>(&header), 8);
    offset = 8 + header + f.info(name).begin + static_cast<std::uint64_t>(index) * 4;
    end = count < 0 ? 8 + header + f.info(name).end : offset + static_cast<std::uint64_t>(count) * 4;
  }
  std::vector<float> values((end - offset) / 4, value);
  std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
  io.seekp(static_cast<std::streamoff>(offset));
  io.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * 4));
}

// Drops the checksums from state.json, as a checkpoint saved before they
// were recorded has none.
void drop_checksums(const fs::path& dir) {
  json j = read_json(dir / "state.json");
  j.erase("files");
  write_json(dir / "state.json", j);
}

// Two checkpoints (steps 1 and 2, with AdamW state) in one save directory.
class CheckpointVerification : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = neox::test::temp_dir("neox_ckpt_verify", ::testing::UnitTest::GetInstance()->current_test_info()->name());
    save_ = root_ + "/save";
    first_model_ = env().model(1);
    auto opt1 = env().adamw(*first_model_, 0.25f);
    first_ = neox::save_checkpoint(save_, *first_model_, opt1.get(), state_at(1), 0);
    auto second = env().model(2);
    auto opt2 = env().adamw(*second, 0.5f);
    second_ = neox::save_checkpoint(save_, *second, opt2.get(), state_at(2), 0);
    first_files_ = snapshot(first_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // The save directory resolves to the first checkpoint, which loads with
  // its own weights; it and `latest` are as they were.
  void expect_fallback_to_first() {
    EXPECT_EQ(neox::resolve_checkpoint(save_), first_);
    auto m = env().model(9);
    auto o = env().adamw(*m);
    EXPECT_EQ(neox::load_checkpoint(save_, *m, o.get()).iteration, 1);
    EXPECT_EQ(env().params(*m), env().params(*first_model_));
    EXPECT_EQ(snapshot(first_), first_files_);
    EXPECT_EQ(read_bytes(save_ + "/latest"), "global_step2\n");
  }

  std::string root_, save_, first_, second_;
  std::unique_ptr<neox::GPTNeoX> first_model_;
  std::map<std::string, std::string> first_files_;
};

TEST_F(CheckpointVerification, StateJsonRecordsTheSizeAndCrcOfEveryFile) {
  const json j = read_json(second_ + "/state.json");
  ASSERT_TRUE(j.contains("files"));
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "config.toml"}) {
    ASSERT_TRUE(j["files"].contains(f)) << f;
    const std::string bytes = read_bytes(second_ + "/" + f);
    EXPECT_EQ(j["files"][f]["bytes"].get<std::int64_t>(), static_cast<std::int64_t>(bytes.size())) << f;
    char crc[9];
    std::snprintf(crc, sizeof crc, "%08x", neox::crc32c(bytes.data(), bytes.size()));
    EXPECT_EQ(j["files"][f]["crc32c"].get<std::string>(), crc) << f;
  }
  EXPECT_EQ(j["files"].size(), 3u);
  EXPECT_EQ(neox::resolve_checkpoint(save_), second_);
}

TEST_F(CheckpointVerification, AFlippedBitInTheWeightsOrTheOptimizerStateFallsBack) {
  for (const char* f : {"model.safetensors", "optimizer.safetensors"}) {
    const fs::path p = fs::path(second_) / f;
    const std::string good = read_bytes(p);
    std::string bad = good;
    bad[bad.size() - 3] ^= 0x10;  // a bit of the last value's mantissa: still finite, still valid safetensors
    write_bytes(p, bad);
    expect_error([&] { neox::resolve_checkpoint(second_); }, {p.string() + ": CRC32C ", "but state.json recorded"});
    expect_fallback_to_first();
    write_bytes(p, good);
  }
  EXPECT_EQ(neox::resolve_checkpoint(save_), second_);
}

TEST_F(CheckpointVerification, AnIterationThatDisagreesWithTheDirectoryFallsBack) {
  const fs::path p = fs::path(second_) / "state.json";
  const std::string good = read_bytes(p);
  for (std::int64_t iteration : {999999, 1}) {
    json j = json::parse(good);
    j["iteration"] = iteration;
    write_json(p, j);
    expect_error([&] { neox::resolve_checkpoint(second_); },
                 {p.string() + ": 'iteration' is " + std::to_string(iteration) + " but the directory is global_step2"});
    expect_fallback_to_first();
  }
  write_bytes(p, good);
}

TEST_F(CheckpointVerification, AnotherStepsWeightsOrDirectoryCopiedInAreRefused) {
  // Step 1's weights copied into global_step2: the same size, another CRC.
  const fs::path model = fs::path(second_) / "model.safetensors";
  const std::string good = read_bytes(model);
  fs::copy_file(fs::path(first_) / "model.safetensors", model, fs::copy_options::overwrite_existing);
  expect_error([&] { neox::resolve_checkpoint(second_); }, {model.string() + ": CRC32C "});
  expect_fallback_to_first();
  write_bytes(model, good);
  // The whole of step 1 copied to global_step7: its iteration says 1.
  fs::copy(first_, save_ + "/global_step7");
  write_bytes(save_ + "/latest", "global_step7\n");
  expect_error([&] { neox::resolve_checkpoint(save_ + "/global_step7"); },
               {"'iteration' is 1 but the directory is global_step7"});
  EXPECT_EQ(neox::resolve_checkpoint(save_), second_);
}

TEST_F(CheckpointVerification, MissingOrAbsurdDataPositionsFallBack) {
  const fs::path p = fs::path(second_) / "state.json";
  const json good = read_json(p);
  const std::vector<std::pair<std::function<void(json&)>, std::string>> cases = {
      {[](json& j) { j.erase("data_positions"); }, "'data_positions' is missing"},
      {[](json& j) { j["data_positions"]["train"] = -8; }, "data_positions['train'] is negative (-8)"},
      {[](json& j) { j["data_positions"].erase("train"); }, "data_positions['train'] is missing"},
      {[](json& j) { j["data_positions"]["train"] = 1000000; },
       "data_positions['train'] is 1000000, but 2 steps (4 samples each from step 0, after 0) consumed 8"},
  };
  for (const auto& [edit, message] : cases) {
    json j = good;
    edit(j);
    write_json(p, j);
    expect_error([&] { neox::resolve_checkpoint(second_); }, {p.string(), message});
    expect_fallback_to_first();
  }
  write_json(p, good);
  EXPECT_EQ(neox::resolve_checkpoint(save_), second_);
}

// Values that the checksums cannot vouch for: a checkpoint saved before
// they were recorded (none), with a NaN weight or a negative exp_avg_sq.
TEST_F(CheckpointVerification, OldCheckpointsLoadButNonFiniteOrNegativeValuesAreRefused) {
  drop_checksums(second_);
  auto m = env().model(9);
  auto o = env().adamw(*m);
  EXPECT_EQ(neox::load_checkpoint(save_, *m, o.get()).iteration, 2) << "no checksums: loads, unverified";

  const fs::path model = fs::path(second_) / "model.safetensors";
  const std::string good = read_bytes(model);
  poke_float(model, "gpt_neox.final_layer_norm.weight", 3, std::numeric_limits<float>::quiet_NaN());
  expect_error([&] { neox::resolve_checkpoint(second_); },
               {model.string() + ": tensor 'gpt_neox.final_layer_norm.weight' holds a non-finite value (nan) at "
                                 "element 3"});
  expect_fallback_to_first();
  write_bytes(model, good);

  const fs::path optimizer = fs::path(second_) / "optimizer.safetensors";
  poke_float(optimizer, "exp_avg", 5, -std::numeric_limits<float>::infinity());
  expect_error([&] { neox::resolve_checkpoint(second_); },
               {optimizer.string() + ": tensor 'exp_avg' holds a non-finite value (-inf) at element 5"});
  expect_fallback_to_first();
  poke_float(optimizer, "exp_avg", 5, 0.5f);

  // A negative second moment is finite: the optimizer refuses it, before
  // anything changes.
  poke_float(optimizer, "exp_avg_sq", 7, -1.0f);
  EXPECT_EQ(neox::resolve_checkpoint(save_), second_);
  auto n = env().model(9);
  auto p = env().adamw(*n);
  const auto before = env().params(*n);
  const std::string msg = expect_error([&] { neox::load_checkpoint(second_, *n, p.get()); },
                                       {optimizer.string(),
                                        "optimizer 'adamw': load_state: state tensor "
                                        "'exp_avg_sq' element 7 is -1.000000 (must be finite "
                                        "and >= 0; a corrupted checkpoint)"});
  try {
    neox::load_checkpoint(second_, *n, p.get());
  } catch (const neox::CorruptCheckpoint& e) {
    EXPECT_EQ(e.dir(), second_);
  }
  EXPECT_EQ(env().params(*n), before) << "a refused load changes nothing";
  for (const auto& [name, t] : p->state()) EXPECT_EQ(t.ptr<float>()[7], 0.5f) << name;
}

TEST_F(CheckpointVerification, NonFiniteWeightsOrOptimizerStateAreNeverSaved) {
  const auto before = snapshot(save_);
  auto m = env().model(3);
  m->arena().params().ptr<float>()[10] = std::numeric_limits<float>::quiet_NaN();
  m->arena().mark_params_changed();
  expect_error([&] { neox::save_checkpoint(save_, *m, nullptr, state_at(3), 0); },
               {"checkpoint " + save_ + "/global_step3 not saved: the model's weights hold non-finite values",
                "the checkpoints already in " + save_ + " are unchanged"});
  auto ok = env().model(3);
  auto opt = env().adamw(*ok);
  opt->state().at("exp_avg_sq").ptr<float>()[4] = std::numeric_limits<float>::infinity();
  expect_error([&] { neox::save_checkpoint(save_, *ok, opt.get(), state_at(3), 0); },
               {"checkpoint " + save_ +
                "/global_step3 not saved: optimizer.safetensors: tensor 'exp_avg_sq' holds a "
                "non-finite value (inf) at element 4"});
  EXPECT_EQ(snapshot(save_), before) << "nothing written, latest unchanged";
  EXPECT_TRUE(tmp_entries(save_).empty());
}

// --- the save directory's lock ------------------------------------------------

// Helper process of SaveDirectoryLockTest: holds the lock on
// NEOX_LOCK_CHILD_DIR (and leaves a temporary directory of its own there)
// until it is killed. Skipped unless started by that test.
TEST(SaveDirectoryLockChild, HoldLock) {
  const char* dir = std::getenv("NEOX_LOCK_CHILD_DIR");
  const char* ready = std::getenv("NEOX_LOCK_CHILD_READY");
  if (!dir || !ready) GTEST_SKIP() << "helper process of SaveDirectoryLockTest";
  neox::SaveDirectoryLock lock(dir);
  fs::create_directories(fs::path(dir) / (".tmp-global_step9-" + std::to_string(::getpid())));
  write_bytes(ready, "ready");
  std::this_thread::sleep_for(std::chrono::seconds(120));
}

pid_t start_lock_holder(const std::string& dir, const std::string& ready) {
  char exe[4096];
  const ssize_t len = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len <= 0) return -1;
  exe[len] = '\0';
  std::vector<std::string> env_strings;
  for (char** p = environ; *p; ++p)
    if (std::strncmp(*p, "GTEST_", 6) != 0) env_strings.emplace_back(*p);
  env_strings.push_back("NEOX_LOCK_CHILD_DIR=" + dir);
  env_strings.push_back("NEOX_LOCK_CHILD_READY=" + ready);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string filter = "--gtest_filter=SaveDirectoryLockChild.HoldLock";
  char* argv[] = {exe, filter.data(), nullptr};
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
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
  while (pid > 0 && !fs::exists(ready) && std::chrono::steady_clock::now() - start < std::chrono::seconds(60))
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return pid;
}

TEST(SaveDirectoryLockTest, ASecondWriterIsRefusedNamingThePidAndADeadHolderDoesNotBlock) {
  const std::string root = neox::test::temp_dir("neox_ckpt_lock", "x");
  const std::string save = root + "/save";
  auto m = env().model(1);
  neox::save_checkpoint(save, *m, nullptr, state_at(1), 0);
  EXPECT_FALSE(fs::exists(save + "/.lock")) << "a finished writer leaves no lock file";

  const pid_t child = start_lock_holder(save, root + "/ready");
  ASSERT_GT(child, 0);
  ASSERT_TRUE(fs::exists(root + "/ready")) << "the lock holder did not start";
  const std::string child_tmp = ".tmp-global_step9-" + std::to_string(child);
  const auto before = snapshot(save);
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  const std::string holder = "pid " + std::to_string(child) + " on host " + host + " holds " + save + "/.lock";
  expect_error([&] { neox::SaveDirectoryLock second(save); },
               {save + ": another neox process is saving checkpoints here (" + holder, "wait for it to finish",
                "training.save"});
  expect_error([&] { neox::save_checkpoint(save, *m, nullptr, state_at(2), 0); },
               {"another neox process is saving checkpoints here (" + holder});
  EXPECT_EQ(snapshot(save), before) << "the refused writer changed nothing";
  EXPECT_EQ(tmp_entries(save), std::vector<std::string>{child_tmp}) << "the holder's save in progress is kept";

  // The holder dies: the kernel drops its lock, the next save takes it and
  // removes what the dead process left.
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  EXPECT_TRUE(fs::exists(save + "/.lock")) << "a killed holder leaves its lock file";
  neox::save_checkpoint(save, *m, nullptr, state_at(2), 0);
  EXPECT_TRUE(tmp_entries(save).empty());
  EXPECT_EQ(read_bytes(save + "/latest"), "global_step2\n");
  {
    neox::SaveDirectoryLock lock(save);
    EXPECT_TRUE(neox::SaveDirectoryLock::held(save + "/"));
    EXPECT_EQ(read_bytes(save + "/.lock"), "pid " + std::to_string(::getpid()) + " on host " + host + "\n");
    neox::save_checkpoint(save, *m, nullptr, state_at(3), 0);  // this process holds it: saves
  }
  EXPECT_FALSE(neox::SaveDirectoryLock::held(save));
  fs::remove_all(root);
}

// --- the trainer ----------------------------------------------------------------

std::string run_config(const std::string& dir) {
  return R"([plugins]
data = "mmap"
[plugins.options.mmap]
data_path = ")" +
         kTestdata + R"(/megatron/corpus_a"
split = "80,15,5"
[model]
num_layers = 2
hidden_size = 32
num_attention_heads = 2
vocab_size = 1000
seq_length = 16
max_position_embeddings = 16
rotary_pct = 0.5
[optimizer]
lr = 1e-3
[training]
train_micro_batch_size_per_gpu = 2
train_iters = 4
eval_iters = 0
log_interval = 1
checkpoint_factor = 2
log_dir = ")" +
         dir + R"(/runs"
save = ")" +
         dir + R"(/ckpt"
)";
}

neox::TrainResult train(const std::string& dir, std::vector<std::string> sets) {
  return neox::train(neox::parse_config(run_config(dir), dir + "/run.toml", sets));
}

std::size_t run_dirs(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir + "/runs", ec)) return 0;
  return static_cast<std::size_t>(std::distance(fs::directory_iterator(dir + "/runs"), fs::directory_iterator()));
}

TEST(TrainerSaveDirectory, AFreshRunRefusesToTakeOverAnotherRunsCheckpoints) {
  const std::string dir = neox::test::temp_dir("neox_trainer_takeover", "x");
  train(dir, {"training.run_name=first"});
  const std::string ckpt = dir + "/ckpt";
  const auto saved = snapshot(ckpt);
  ASSERT_EQ(read_bytes(ckpt + "/latest"), "global_step4\n");
  const std::size_t runs = run_dirs(dir);

  expect_error([&] { train(dir, {"training.train_iters=6"}); },
               {dir + "/run.toml: training.save = " + ckpt + " already holds the checkpoints of a run (newest: " +
                    ckpt + "/global_step4), and this run does not resume from it (training.load is empty)",
                "move its 'latest'", "set training.load = \"" + ckpt + "\" (--set training.load=" + ckpt + ")",
                "choose another training.save", "or remove " + ckpt});
  // Fine-tuning from another directory into this one is a new run too.
  train(dir + "/other", {"training.train_iters=2"});
  expect_error(
      [&] {
        train(dir, {"training.load=" + dir + "/other/ckpt", "training.finetune=true"});
      },
      {"already holds the checkpoints of a run", "(training.load = " + dir + "/other/ckpt)"});
  EXPECT_EQ(snapshot(ckpt), saved) << "a refused run writes nothing into the save directory";
  EXPECT_EQ(run_dirs(dir), runs) << "nor a run directory";

  // Told to: resuming from the directory (or from one of its checkpoints).
  neox::TrainResult r = train(dir, {"training.load=" + ckpt, "training.train_iters=6"});
  EXPECT_EQ(r.train_losses.size(), 2u);
  EXPECT_EQ(read_bytes(ckpt + "/latest"), "global_step6\n");
  r = train(dir, {"training.load=" + ckpt + "/global_step4/", "training.train_iters=5"});
  EXPECT_EQ(r.train_losses.size(), 1u);
  fs::remove_all(dir);
}

// GPT-NeoX's way: load = save in every launch; the first one has nothing to
// resume and starts at step 0.
TEST(TrainerSaveDirectory, LoadEqualsSaveStartsAtZeroUntilTheFirstCheckpoint) {
  const std::string dir = neox::test::temp_dir("neox_trainer_autoresume", "x");
  const std::string ckpt = dir + "/ckpt";
  neox::TrainResult a = train(dir, {"training.load=" + ckpt, "training.exit_interval=2", "training.run_name=a"});
  EXPECT_EQ(a.iterations, 2);
  EXPECT_NE(read_bytes(a.run_dir + "/train.log").find("training.load = " + ckpt + ": no checkpoint there yet"),
            std::string::npos);
  neox::TrainResult b = train(dir, {"training.load=" + ckpt, "training.run_name=b"});
  EXPECT_EQ(b.train_losses.size(), 2u) << "resumed at step 2";
  EXPECT_EQ(b.iterations, 4);
  fs::remove_all(dir);
}

TEST(TrainerSaveDirectory, SavesRecordWhereTheirGlobalBatchBegan) {
  const std::string dir = neox::test::temp_dir("neox_trainer_positions", "x");
  train(dir, {"training.train_iters=2"});
  json j = read_json(dir + "/ckpt/global_step2/state.json");
  EXPECT_EQ(j["data_positions"]["train"].get<std::int64_t>(), 4);  // 2 steps of 2 sequences
  EXPECT_EQ(j["trainer"]["batch_start_iteration"].get<double>(), 0.0);
  EXPECT_EQ(j["trainer"]["batch_start_train_position"].get<double>(), 0.0);
  // Resumed with a larger global batch: a new phase starts at step 2, sample 4.
  train(dir, {"training.load=" + dir + "/ckpt", "training.train_micro_batch_size_per_gpu=4"});
  j = read_json(dir + "/ckpt/global_step4/state.json");
  EXPECT_EQ(j["data_positions"]["train"].get<std::int64_t>(), 12);
  EXPECT_EQ(j["trainer"]["batch_start_iteration"].get<double>(), 2.0);
  EXPECT_EQ(j["trainer"]["batch_start_train_position"].get<double>(), 4.0);
  EXPECT_EQ(neox::resolve_checkpoint(dir + "/ckpt"), dir + "/ckpt/global_step4");
  fs::remove_all(dir);
}

// A negative exp_avg_sq in the newest checkpoint (saved before checksums,
// which would otherwise catch the change): the optimizer refuses it, and the
// run resumes from the previous checkpoint, which stays as it was.
TEST(TrainerSaveDirectory, ResumeFallsBackPastOptimizerStateTheOptimizerRefuses) {
  const std::string dir = neox::test::temp_dir("neox_trainer_negative_v", "x");
  const std::string ckpt = dir + "/ckpt";
  train(dir, {"training.run_name=a"});
  const auto second = snapshot(ckpt + "/global_step2");
  drop_checksums(ckpt + "/global_step4");
  poke_float(ckpt + "/global_step4/optimizer.safetensors", "exp_avg_sq", 0, -1.0f);
  neox::TrainResult r = train(dir, {"training.load=" + ckpt, "training.train_iters=5", "training.run_name=b"});
  EXPECT_EQ(r.train_losses.size(), 3u) << "resumed at step 2";
  expect_contains(read_bytes(r.run_dir + "/train.log"),
                  {"checkpoint " + ckpt + "/global_step4 is not usable (" + ckpt +
                       "/global_step4/optimizer.safetensors: optimizer 'adamw': load_state: state tensor 'exp_avg_sq' "
                       "element 0 is -1.000000 (must be finite and >= 0",
                   "trying the previous complete checkpoint", "resuming from " + ckpt + "/global_step2"});
  EXPECT_EQ(snapshot(ckpt + "/global_step2"), second);
  fs::remove_all(dir);
}

// Optimizer state that is finite but blows the weights up on the next step
// (a huge exp_avg, in a checkpoint saved before checksums): that step's
// weights are never saved, and the next step's loss stops the run, naming
// the step and the last checkpoint, which stays as it was.
TEST(TrainerNonFinite, NonFiniteWeightsAreNotSavedAndANonFiniteLossStopsTheRun) {
  const std::string dir = neox::test::temp_dir("neox_trainer_nan", "x");
  const std::string ckpt = dir + "/ckpt";
  train(dir, {"training.train_iters=2", "training.run_name=a"});
  drop_checksums(ckpt + "/global_step2");
  const fs::path optimizer = ckpt + "/global_step2/optimizer.safetensors";
  poke_float(optimizer, "exp_avg", 0, 3e38f, -1);
  poke_float(optimizer, "exp_avg_sq", 0, 0.0f, -1);
  const auto saved = snapshot(ckpt);

  // Saving after every step: step 3's weights are inf, and are not saved.
  expect_error(
      [&] {
        train(dir, {"training.load=" + ckpt, "training.checkpoint_factor=1", "training.run_name=b"});
      },
      {"checkpoint " + ckpt + "/global_step3 not saved: the model's weights hold non-finite values",
       "the checkpoints already in " + ckpt + " are unchanged"});
  EXPECT_EQ(snapshot(ckpt), saved);
  // Saving later: step 4's loss is not finite.
  expect_error(
      [&] {
        train(dir, {"training.load=" + ckpt, "training.checkpoint_factor=100", "training.run_name=c"});
      },
      {"step 4: the loss is ", "training diverged, or the weights or the optimizer state hold a non-finite value",
       "stopped without applying the step or saving (the last checkpoint is " + ckpt +
           "/global_step2, which this run resumed from)"});
  EXPECT_EQ(snapshot(ckpt), saved);
  fs::remove_all(dir);
}

}  // namespace
