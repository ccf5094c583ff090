// SPDX-License-Identifier: Apache-2.0
// neox train end to end: the AdamW oracle through the real path (hf:DIR
// weights, the fixed data plugin, the trainer, neox convert), resume
// bit-exactness, gradient accumulation, SIGTERM, the run directory, and the
// settings the trainer refuses.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include "test_support.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "neox/error.h"
#include "neox/io/hf.h"
#include "neox/io/safetensors.h"
#include "neox/train/checkpoint.h"
#include "neox/train/config.h"
#include "neox/train/trainer.h"

namespace fs = std::filesystem;

namespace {

const std::string kTestdata = neox::test::testdata_dir();
const std::string kCorpusA = kTestdata + "/megatron/corpus_a";

std::string temp_dir(const std::string& name) { return neox::test::temp_dir("neox_trainer", name); }

using neox::test::read_text;

// A small model on GPT-NeoX's test corpus (vocab 1000, uint16 tokens).
std::string small_config(const std::string& dir) {
  return R"([plugins]
data = "mmap"
[plugins.options.mmap]
data_path = ")" +
         kCorpusA + R"("
split = "80,15,5"
[model]
num_layers = 2
hidden_size = 32
num_attention_heads = 2
vocab_size = 1000
seq_length = 16
max_position_embeddings = 16
rotary_pct = 0.5
gpt_j_residual = true
[optimizer]
lr = 1e-3
warmup = 0.25
lr_decay_style = "cosine"
lr_decay_iters = 8
gradient_clipping = 1.0
weight_decay = 0.01
[training]
train_micro_batch_size_per_gpu = 2
train_iters = 8
eval_interval = 3
eval_iters = 1
log_interval = 2
checkpoint_factor = 4
log_dir = ")" +
         dir + R"(/runs"
save = ")" +
         dir + R"(/ckpt"
)";
}

double rel_error(const float* a, const double* b, std::int64_t n, double* num_out = nullptr,
                 double* den_out = nullptr) {
  double num = 0, den = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += b[i] * b[i];
  }
  if (num_out) *num_out += num;
  if (den_out) *den_out += den;
  return std::sqrt(num / den);
}

class AdamWOracle : public ::testing::TestWithParam<std::string> {};

// expected.json's 3 AdamW steps, through neox train and neox convert. A
// "+zero3" case trains with the zero plugin's stage 3 on one rank: the hf:
// weights reach the partitioned arena unit by unit (set_parameters), and the
// checkpoint is streamed unit by unit.
TEST_P(AdamWOracle, TrainThenExportMatchesTorch) {
  const std::string param = GetParam();
  const bool zero3 = param.size() > 6 && param.substr(param.size() - 6) == "+zero3";
  const std::string name = zero3 ? param.substr(0, param.size() - 6) : param;
  const std::string base = kTestdata + "/hf/" + name;
  const auto expected = nlohmann::json::parse(read_text(base + "/expected.json"));
  const auto& a = expected["adamw"];
  const std::string dir = temp_dir("oracle_" + name + (zero3 ? "_zero3" : ""));

  neox::ModelConfig hf = neox::read_hf_config(base + "/hf");
  std::ostringstream text;
  text << "[plugins]\ndata = \"fixed\"\n"
       << (zero3 ? "optimizer = \"zero\"\n" : "") << "[plugins.options.fixed]\npath = \"" << base
       << "/forward.safetensors\"\n"
       << neox::model_config_toml(hf) << "\n[optimizer]\n"
       << "lr = " << a["lr"].get<double>() << "\nbetas = [" << a["betas"][0].get<double>() << ", "
       << a["betas"][1].get<double>() << "]\neps = " << a["eps"].get<double>()
       << "\nweight_decay = " << a["weight_decay"].get<double>()
       << "\nlr_decay_style = \"constant\"\nwarmup = 0.0\ngradient_clipping = 0.0\n"
       << "[training]\ntrain_micro_batch_size_per_gpu = " << expected["B"].get<int>()
       << "\ntrain_iters = " << a["steps"].get<int>() << "\neval_iters = 0\nlog_interval = 1\n"
       << (zero3 ? "zero_stage = 3\n" : "") << "load = \"hf:" << base << "/hf\"\nsave = \"" << dir
       << "/ckpt\"\nlog_dir = \"" << dir << "/runs\"\n";
  neox::Config config =
      neox::parse_config(text.str(), "oracle.toml", {"model.seq_length=" + std::to_string(expected["T"].get<int>())});

  neox::TrainResult r = neox::train(config);
  ASSERT_EQ(r.train_losses.size(), static_cast<std::size_t>(a["steps"].get<int>()));
  if (zero3) {
    const auto memory = nlohmann::json::parse(read_text(r.run_dir + "/memory.json"));
    EXPECT_EQ(memory.at("optimizer").get<std::string>(), "zero");
    EXPECT_EQ(memory.at("arena_bytes").get<double>(), 0.0);  // partitioned (over one rank)
  }
  for (std::size_t i = 0; i < r.train_losses.size(); ++i) {
    const double ref = expected["adamw_losses"][i].get<double>();
    EXPECT_LT(std::abs(r.train_losses[i] - ref) / ref, 1e-4) << "loss of step " << i + 1;
  }

  auto converted = neox::test::run_neox("convert --to-hf " + dir + "/ckpt --out " + dir + "/hf");
  ASSERT_EQ(converted.status, 0) << converted.output;
  auto exported = neox::SafeTensorsFile::open(dir + "/hf/model.safetensors");
  auto after = neox::SafeTensorsFile::open(base + "/params_after_adamw.safetensors");
  // Bounds as in test_model_hf.cpp: 1e-4 over all parameters together, 2e-3
  // per tensor (float32 noise in near-zero gradients is amplified by Adam).
  double num = 0, den = 0;
  int compared = 0;
  for (const auto& t : exported.tensors()) {
    std::string ref_name = after.contains(t.name) ? t.name : (t.name == "embed_out.weight" ? "lm_head.weight" : t.name);
    ASSERT_TRUE(after.contains(ref_name)) << t.name;
    neox::Tensor ours = exported.read(t.name, neox::DType::f32);
    neox::Tensor ref = after.read(ref_name, neox::DType::f64);
    EXPECT_LT(rel_error(ours.ptr<float>(), ref.ptr<double>(), ref.numel(), &num, &den), 2e-3) << t.name;
    ++compared;
  }
  EXPECT_EQ(compared, static_cast<int>(after.tensors().size()));
  EXPECT_LT(std::sqrt(num / den), 1e-4) << "all parameters";
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Cases, AdamWOracle,
                         ::testing::Values("neox_tiny_parallel", "neox_tiny_sequential", "neox_tiny_parallel+zero3"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '+', '_');
                           return n;
                         });

TEST(Trainer, ResumeIsBitIdentical) {
  const std::string dir = temp_dir("resume");
  neox::Config full = neox::parse_config(small_config(dir + "/a"), "a.toml");
  neox::TrainResult a = neox::train(full);
  ASSERT_EQ(a.train_losses.size(), 8u);
  EXPECT_LT(a.train_losses.back(), a.train_losses.front()) << "the loss should fall";

  // A second run of the same config, stopped after step 4 (exit_interval
  // saves a checkpoint), then resumed from it.
  neox::Config first = neox::parse_config(small_config(dir + "/b"), "b.toml", {"training.exit_interval=4"});
  neox::TrainResult b1 = neox::train(first);
  ASSERT_EQ(b1.iterations, 4);
  EXPECT_TRUE(b1.stopped);
  neox::Config rest = neox::parse_config(small_config(dir + "/b"), "b.toml", {"training.load=" + dir + "/b/ckpt"});
  neox::TrainResult b2 = neox::train(rest);
  ASSERT_EQ(b2.train_losses.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(b1.train_losses[i], a.train_losses[i]) << "step " << i + 1;
    EXPECT_EQ(b2.train_losses[i], a.train_losses[i + 4]) << "step " << i + 5 << " after resume";
  }
  EXPECT_EQ(b2.valid_loss, a.valid_loss);
  EXPECT_EQ(b2.test_loss, a.test_loss);
  // The final weights and optimizer state are the same bytes.
  for (const char* file : {"model.safetensors", "optimizer.safetensors"})
    EXPECT_TRUE(read_text(dir + "/a/ckpt/global_step8/" + file) == read_text(dir + "/b/ckpt/global_step8/" + file))
        << file << " differs";
  fs::remove_all(dir);
}

// Resuming with another global batch (here another micro-batch) is
// allowed, but the log says that the run is then not the continuation of
// the saved one; with the same global batch it says nothing.
TEST(Trainer, ResumingWithAnotherGlobalBatchIsWarnedAbout) {
  const std::string dir = temp_dir("resume_batch");
  neox::train(neox::parse_config(small_config(dir), "c.toml", {"training.exit_interval=4", "training.run_name=a"}));
  const std::string warning = "resuming with a global batch of 4 sequences (4 x 1 micro-batches x 1 ranks), but " +
                              dir + "/ckpt/global_step4 was trained with 2";
  neox::TrainResult same = neox::train(neox::parse_config(
      small_config(dir), "c.toml", {"training.load=" + dir + "/ckpt", "training.run_name=same", "training.save="}));
  EXPECT_EQ(read_text(same.run_dir + "/train.log").find("resuming with a global batch"), std::string::npos);
  neox::TrainResult other =
      neox::train(neox::parse_config(small_config(dir), "c.toml",
                                     {"training.load=" + dir + "/ckpt", "training.run_name=other",
                                      "training.train_micro_batch_size_per_gpu=4", "training.save="}));
  EXPECT_EQ(other.iterations, 8);
  EXPECT_NE(read_text(other.run_dir + "/train.log").find(warning), std::string::npos)
      << read_text(other.run_dir + "/train.log");
  fs::remove_all(dir);
}

// Runs named by the time never share a directory: one started in the same
// second as another gets its own ("-2"). The directories of the next few
// seconds exist already here, as if other runs had just started.
TEST(Trainer, RunsStartedInTheSameSecondGetTheirOwnDirectories) {
  const std::string dir = temp_dir("same_second");
  std::vector<std::string> taken;
  const std::time_t now = std::time(nullptr);
  for (std::time_t t = now; t < now + 30; ++t) {
    std::tm tm{};
    localtime_r(&t, &tm);
    char name[32];
    std::strftime(name, sizeof name, "%Y-%m-%d_%H-%M-%S", &tm);
    taken.push_back(dir + "/runs/" + name);
    fs::create_directories(taken.back());
  }
  neox::TrainResult r = neox::train(neox::parse_config(small_config(dir), "c.toml", {"training.train_iters=2"}));
  EXPECT_EQ(r.run_dir.substr(r.run_dir.size() - 2), "-2") << r.run_dir;
  EXPECT_TRUE(fs::exists(r.run_dir + "/metrics.jsonl")) << r.run_dir;
  for (const std::string& d : taken) EXPECT_TRUE(fs::is_empty(d)) << d << " was written into";
  fs::remove_all(dir);
}

TEST(Trainer, FinetuneLoadsWeightsOnlyAndStartsAtZero) {
  const std::string dir = temp_dir("finetune");
  neox::train(neox::parse_config(small_config(dir + "/a"), "a.toml", {"training.train_iters=4"}));
  neox::TrainResult f = neox::train(
      neox::parse_config(small_config(dir + "/b"), "b.toml",
                         {"training.load=" + dir + "/a/ckpt", "training.finetune=true", "training.train_iters=2"}));
  EXPECT_EQ(f.iterations, 2);
  EXPECT_EQ(f.train_losses.size(), 2u);
  fs::remove_all(dir);
}

TEST(Trainer, GradientAccumulationEqualsTheLargerMicroBatch) {
  const std::string dir = temp_dir("accum");
  neox::TrainResult big = neox::train(neox::parse_config(
      small_config(dir + "/a"), "a.toml", {"training.train_micro_batch_size_per_gpu=4", "training.train_iters=4"}));
  neox::TrainResult acc =
      neox::train(neox::parse_config(small_config(dir + "/b"), "b.toml",
                                     {"training.train_micro_batch_size_per_gpu=2",
                                      "training.gradient_accumulation_steps=2", "training.train_iters=4"}));
  ASSERT_EQ(big.train_losses.size(), acc.train_losses.size());
  for (std::size_t i = 0; i < big.train_losses.size(); ++i)
    EXPECT_NEAR(acc.train_losses[i], big.train_losses[i], 1e-5 * big.train_losses[i]) << "step " << i + 1;
  fs::remove_all(dir);
}

TEST(Trainer, RunDirectoryHoldsConfigMetricsAndLog) {
  const std::string dir = temp_dir("rundir");
  neox::Config c = neox::parse_config(small_config(dir), "c.toml", {"training.run_name=r1"});
  neox::TrainResult r = neox::train(c);
  EXPECT_EQ(r.run_dir, dir + "/runs/r1");
  EXPECT_GE(r.overhead, 0.0);  // a share of the step time (its size is a benchmark figure, not a test)
  EXPECT_LT(r.overhead, 1.0);
  // config.toml is the config as used and reads back to the same settings.
  neox::Config back = neox::parse_config(read_text(r.run_dir + "/config.toml"), "back.toml");
  EXPECT_EQ(neox::config_to_toml(back), neox::config_to_toml(c));
  std::ifstream metrics(r.run_dir + "/metrics.jsonl");
  std::string line;
  int train_lines = 0, eval_lines = 0;
  while (std::getline(metrics, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("split")) {
      ++eval_lines;
      EXPECT_TRUE(j.contains("perplexity"));
    } else {
      ++train_lines;
      for (const char* k : {"step", "loss", "lr", "grad_norm", "tokens_per_sec", "elapsed_s"})
        EXPECT_TRUE(j.contains(k)) << k << " missing in " << line;
    }
  }
  EXPECT_EQ(train_lines, 4);  // log_interval 2, 8 steps
  EXPECT_EQ(eval_lines, 3);   // valid at 3 and 6, test at the end
  EXPECT_NE(read_text(r.run_dir + "/train.log").find("step 8/8"), std::string::npos);
  fs::remove_all(dir);
}

TEST(Trainer, RefusesWhatItCannotHonour) {
  const std::string dir = temp_dir("refuse");
  auto error_of = [&](const std::vector<std::string>& sets) -> std::string {
    try {
      neox::train(neox::parse_config(small_config(dir), "refuse.toml", sets));
    } catch (const neox::Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(error_of({"training.precision=fp8"}).find("training.precision"), std::string::npos);
  EXPECT_NE(error_of({"training.checkpoint_num_layers=0"}).find("training.checkpoint_num_layers"), std::string::npos);
  EXPECT_NE(error_of({"training.model_parallel_size=2"}).find("tensor parallelism is not implemented"),
            std::string::npos);
  EXPECT_NE(error_of({"training.pipe_parallel_size=2"}).find("pipeline parallelism is not implemented"),
            std::string::npos);
  EXPECT_NE(error_of({"training.zero_stage=1", "plugins.optimizer=sgd"}).find("needs the zero optimizer"),
            std::string::npos);
  EXPECT_NE(error_of({"plugins.optimizer=zero"}).find("needs training.zero_stage 1, 2 or 3"), std::string::npos);
  EXPECT_NE(error_of({"plugins.data="}).find("plugins.data: no data source chosen"), std::string::npos);
  EXPECT_NE(error_of({"training.load=hf:" + kTestdata + "/hf/neox_tiny_parallel/hf"})
                .find("model.hidden_size is 32 in the config but 64"),
            std::string::npos);
  EXPECT_NE(error_of({"model.vocab_size=100"}).find("vocabulary"), std::string::npos) << "corpus_a holds ids up to 999";
  fs::remove_all(dir);
}

TEST(Trainer, SigtermSavesACheckpointAndExitsCleanly) {
  const std::string dir = temp_dir("sigterm");
  const std::string cfg = dir + "/long.toml";
  std::ofstream(cfg) << small_config(dir);
  const std::string log = dir + "/out.txt";
  const std::string neox_bin = neox::test::neox_binary();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    FILE* f = std::freopen(log.c_str(), "w", stdout);
    (void)f;
    dup2(fileno(stdout), 2);
    execl(neox_bin.c_str(), neox_bin.c_str(), "train", cfg.c_str(), "--set", "training.train_iters=1000000", "--set",
          "training.checkpoint_factor=1000000", "--set", "training.run_name=long", nullptr);
    _exit(127);
  }
  // Wait for training to be under way (the first metrics line), then SIGTERM.
  const std::string metrics = dir + "/runs/long/metrics.jsonl";
  for (int i = 0; i < 600 && read_text(metrics).empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_FALSE(read_text(metrics).empty()) << read_text(log);
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << read_text(log);
  EXPECT_EQ(WEXITSTATUS(status), 0) << read_text(log);
  EXPECT_NE(read_text(log).find("stop requested"), std::string::npos) << read_text(log);
  const std::string ckpt = neox::resolve_checkpoint(dir + "/ckpt");
  EXPECT_NE(ckpt.find("global_step"), std::string::npos);
  fs::remove_all(dir);
}

}  // namespace

namespace {

// [tokenizer] in a training config: loaded and checked against the model's
// vocabulary before training, copied into every checkpoint (whose config
// names the copy), used by `neox generate` and carried by `neox convert`.
TEST(Trainer, TokenizerFromTheConfigIsCheckedAndSavedWithTheCheckpoint) {
  const std::string dir = temp_dir("tokenizer");
  const std::string source = kTestdata + "/tokenizers/bpe_bytelevel_1k.json";  // 1000 tokens
  fs::create_directories(dir + "/tok");
  fs::copy_file(source, dir + "/tok/tokenizer-1k.json");
  // A relative vocab_file: resolved against the config file's directory.
  std::ofstream(dir + "/c.toml") << small_config(dir)
                                 << "[tokenizer]\ntype = \"HFTokenizer\"\nvocab_file = \"tok/tokenizer-1k.json\"\n";

  // Too small a model: refused before training, naming both sides.
  const std::string msg = neox::test::error_of([&] {
    neox::train(neox::load_config(dir + "/c.toml", {"model.vocab_size=900", "model.make_vocab_size_divisible_by=1"}));
  });
  EXPECT_NE(msg.find("tokenizer: the HFTokenizer tokenizer has 1000 tokens but the model embeds only 900"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("set model.vocab_size = 1000"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dir + "/ckpt")) << "nothing may be saved";

  neox::TrainResult r = neox::train(neox::load_config(dir + "/c.toml"));
  ASSERT_EQ(r.train_losses.size(), 8u);
  const std::string ckpt = neox::resolve_checkpoint(dir + "/ckpt");
  EXPECT_EQ(read_text(ckpt + "/tokenizer.json"), read_text(source)) << "the tokenizer is copied whole";
  const neox::Config saved =
      neox::parse_config(neox::read_checkpoint_config(ckpt), (fs::path(ckpt) / "config.toml").string());
  EXPECT_EQ(saved.tokenizer.type, "HFTokenizer");
  EXPECT_EQ(saved.tokenizer.vocab_file, (fs::path(ckpt) / "tokenizer.json").lexically_normal().string())
      << "the checkpoint's config names its own copy";
  EXPECT_NE(read_text(ckpt + "/config.toml").find("vocab_file = \"tokenizer.json\""), std::string::npos);
  // An earlier checkpoint has its own copy too.
  EXPECT_TRUE(fs::is_regular_file(dir + "/ckpt/global_step4/tokenizer.json"));

  // The checkpoint alone, moved elsewhere, is enough to generate from text.
  fs::rename(dir + "/tok", dir + "/tok-gone");
  auto g =
      neox::test::run_neox("generate --model " + dir + "/ckpt --prompt \"hello world\" --max-new-tokens 4 --seed 1");
  ASSERT_EQ(g.status, 0) << g.output;
  EXPECT_NE(g.output.find("generated 4 tokens"), std::string::npos) << g.output;
  // (Without the checkpoint's tokenizer a text prompt has no tokenizer: the
  // model's vocabulary of 1000 is not the byte tokenizer's.)
  auto none = neox::test::run_neox("generate --model " + dir + "/ckpt --prompt \"hello world\" --tokenizer none");
  EXPECT_NE(none.status, 0) << none.output;

  // neox convert: the tokenizer goes beside the exported weights, its
  // end-of-document token (id 0 here) becomes bos and eos.
  auto c = neox::test::run_neox("convert --to-hf " + dir + "/ckpt --out " + dir + "/hf");
  ASSERT_EQ(c.status, 0) << c.output;
  EXPECT_EQ(read_text(dir + "/hf/tokenizer.json"), read_text(source));
  const auto hf_config = nlohmann::json::parse(read_text(dir + "/hf/config.json"));
  EXPECT_EQ(hf_config["eos_token_id"], 0) << hf_config.dump();
  EXPECT_EQ(hf_config["bos_token_id"], 0) << hf_config.dump();
  // ... and back: the imported checkpoint names it again.
  auto back = neox::test::run_neox("convert --from-hf " + dir + "/hf --out " + dir + "/back");
  ASSERT_EQ(back.status, 0) << back.output;
  const std::string back_ckpt = neox::resolve_checkpoint(dir + "/back");
  EXPECT_EQ(read_text(back_ckpt + "/tokenizer.json"), read_text(source));
  EXPECT_EQ(neox::parse_config(neox::read_checkpoint_config(back_ckpt), back_ckpt + "/config.toml").tokenizer.type,
            "HFTokenizer");
  fs::remove_all(dir);
}

// A tokenizer plugin ([tokenizer] type = its name, tests/plugins/word_tokenizer.cpp):
// checked against the vocabulary like a built-in one, its file copied into
// every checkpoint under its own name, and found again by `neox generate`.
TEST(Trainer, TokenizerPluginTravelsWithTheCheckpoint) {
  const std::string dir = temp_dir("tokenizer_plugin");
  fs::create_directories(dir);
  std::string words = "<eod>\n";
  for (int i = 1; i < 20; ++i) words += "w" + std::to_string(i) + "\n";
  std::ofstream(dir + "/words.txt") << words;
  std::ofstream(dir + "/c.toml") << small_config(dir) << "[plugins.options.test-words]\nlowercase = true\n"
                                 << "[tokenizer]\ntype = \"test-words\"\nvocab_file = \"words.txt\"\n";
  const std::string search = "plugins.search_paths=[\"" + neox::test::test_plugin_dir() + "\"]";
  neox::TrainResult r = neox::train(neox::load_config(dir + "/c.toml", {search}));
  ASSERT_EQ(r.train_losses.size(), 8u);
  EXPECT_NE(read_text(r.run_dir + "/train.log").find("tokenizer: test-words with 20 tokens"), std::string::npos);
  const std::string ckpt = neox::resolve_checkpoint(dir + "/ckpt");
  EXPECT_EQ(read_text(ckpt + "/words.txt"), words);
  EXPECT_NE(read_text(ckpt + "/config.toml").find("vocab_file = \"words.txt\""), std::string::npos);

  // Generation finds the plugin on NEOX_PLUGIN_PATH and the vocabulary in
  // the checkpoint; the plugin's options come from the run's config.
  fs::remove(dir + "/words.txt");
  auto g = neox::test::run_command("NEOX_PLUGIN_PATH=" + neox::test::test_plugin_dir() + " " +
                                   neox::test::neox_binary() + " generate --model " + dir +
                                   "/ckpt --prompt \"W1 w2\" --max-new-tokens 3 --seed 1 --eod-id=-1");
  ASSERT_EQ(g.status, 0) << g.output;
  EXPECT_NE(g.output.find("generated 3 tokens"), std::string::npos) << g.output;
  // Without the plugin there is no such tokenizer, and the error says so.
  auto none = neox::test::run_neox("generate --model " + dir + "/ckpt --prompt \"w1\" --max-new-tokens 1");
  EXPECT_NE(none.status, 0) << none.output;
  EXPECT_NE(none.output.find("no tokenizer plugin named 'test-words'"), std::string::npos) << none.output;
  fs::remove_all(dir);
}

}  // namespace
