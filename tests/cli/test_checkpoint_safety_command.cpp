// SPDX-License-Identifier: Apache-2.0
// The checkpoint safety rules as a user meets them through `neox`: a fresh
// `neox train` into another run's save directory is refused (exit 1, the
// ways out named, nothing written); `neox generate` and `neox convert
// --to-hf` verify the checkpoint (falling back from a corrupted `latest`,
// refusing a corrupted global_step named directly, noting an unverifiable
// old one); a non-finite loss ends `neox train` with exit 1.
// In-process details: tests/train/test_checkpoint_safety.cpp.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "test_support.h"

namespace {

namespace fs = std::filesystem;
using neox::test::read_text;
using neox::test::run_neox;

std::string config(const std::string& dir) {
  return R"([plugins]
data = "mmap"
[plugins.options.mmap]
data_path = ")" +
         neox::test::testdata_dir() + R"(/megatron/corpus_a"
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

std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out[fs::relative(e.path(), dir).string()] = read_text(e.path().string());
  return out;
}

void expect_contains(const std::string& text, std::initializer_list<std::string> parts) {
  for (const auto& p : parts) EXPECT_NE(text.find(p), std::string::npos) << "'" << p << "' not in:\n" << text;
}

// A trained run (checkpoints at steps 2 and 4) in a fresh directory.
std::string trained(const std::string& name) {
  const std::string dir = neox::test::temp_dir("neox_ckpt_cli", name);
  std::ofstream(dir + "/run.toml") << config(dir);
  auto r = run_neox("train " + dir + "/run.toml");
  EXPECT_EQ(r.status, 0) << r.output;
  return dir;
}

TEST(CheckpointSafetyCommand, AFreshRunIntoAnotherRunsSaveDirectoryIsRefused) {
  const std::string dir = trained("takeover");
  const std::string ckpt = dir + "/ckpt";
  const auto saved = snapshot(ckpt);
  auto r = run_neox("train " + dir + "/run.toml --set training.train_iters=60");
  EXPECT_EQ(r.status, 1) << r.output;
  expect_contains(r.output, {"training.save = " + ckpt + " already holds the checkpoints of a run (newest: " + ckpt +
                                 "/global_step4), and this run does not resume from it (training.load is empty)",
                             "--set training.load=" + ckpt, "choose another training.save", "or remove " + ckpt});
  EXPECT_EQ(r.output.find("step 1/"), std::string::npos) << "refused before training";
  EXPECT_EQ(snapshot(ckpt), saved);
  EXPECT_EQ(read_text(ckpt + "/latest"), "global_step4\n");

  r = run_neox("train " + dir + "/run.toml --set training.load=" + ckpt + " --set training.train_iters=6");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(read_text(ckpt + "/latest"), "global_step6\n");
  fs::remove_all(dir);
}

TEST(CheckpointSafetyCommand, GenerateAndConvertVerifyTheCheckpoint) {
  const std::string dir = trained("verify");
  const std::string ckpt = dir + "/ckpt";
  const std::string model = ckpt + "/global_step4/model.safetensors";
  std::string bytes = read_text(model);
  bytes[bytes.size() - 3] ^= 0x10;
  std::ofstream(model, std::ios::binary | std::ios::trunc) << bytes;

  const std::string generate = " --prompt-ids 1,2,3 --greedy --max-new-tokens 3";
  auto r = run_neox("generate --model " + ckpt + generate);
  EXPECT_EQ(r.status, 0) << r.output;
  expect_contains(r.output, {ckpt + "/latest names global_step4, which is not usable (" + model + ": CRC32C ",
                             "using " + ckpt + "/global_step2"});
  r = run_neox("generate --model " + ckpt + "/global_step4" + generate);
  EXPECT_EQ(r.status, 1) << r.output;
  expect_contains(r.output, {model + ": CRC32C ", "but state.json recorded"});
  r = run_neox("convert --to-hf " + ckpt + "/global_step4 --out " + dir + "/hf");
  EXPECT_EQ(r.status, 1) << r.output;
  expect_contains(r.output, {model + ": CRC32C "});
  EXPECT_FALSE(fs::exists(dir + "/hf"));

  // A checkpoint saved before checksums: converted, with a note.
  const std::string state = ckpt + "/global_step2/state.json";
  nlohmann::json j = nlohmann::json::parse(read_text(state));
  j.erase("files");
  std::ofstream(state, std::ios::trunc) << j.dump(2);
  r = run_neox("convert --to-hf " + ckpt + "/global_step2 --out " + dir + "/hf");
  EXPECT_EQ(r.status, 0) << r.output;
  expect_contains(r.output,
                  {ckpt + "/global_step2 was saved without checksums (neox ", "its files cannot be verified"});
  fs::remove_all(dir);
}

TEST(CheckpointSafetyCommand, ANonFiniteLossEndsTrainWithAnError) {
  const std::string dir = trained("nan");
  const std::string ckpt = dir + "/ckpt";
  // A finite exp_avg of 3e38 in step 4's optimizer state (with the checksums
  // dropped) makes the next update inf, and the loss after it NaN.
  const std::string state = ckpt + "/global_step4/state.json";
  nlohmann::json j = nlohmann::json::parse(read_text(state));
  j.erase("files");
  std::ofstream(state, std::ios::trunc) << j.dump(2);
  const std::string optimizer = ckpt + "/global_step4/optimizer.safetensors";
  std::string bytes = read_text(optimizer);
  std::uint64_t header = 0;
  std::memcpy(&header, bytes.data(), 8);
  const auto meta = nlohmann::json::parse(bytes.substr(8, header));
  for (const char* name : {"exp_avg", "exp_avg_sq"}) {
    const std::size_t begin = 8 + header + meta[name]["data_offsets"][0].get<std::size_t>();
    const std::size_t end = 8 + header + meta[name]["data_offsets"][1].get<std::size_t>();
    const float value = std::string(name) == "exp_avg" ? 3e38f : 0.0f;
    for (std::size_t at = begin; at < end; at += 4) std::memcpy(bytes.data() + at, &value, 4);
  }
  std::ofstream(optimizer, std::ios::binary | std::ios::trunc) << bytes;
  const auto saved = snapshot(ckpt);

  auto r = run_neox("train " + dir + "/run.toml --set training.load=" + ckpt +
                    " --set training.train_iters=8 --set training.checkpoint_factor=100");
  EXPECT_EQ(r.status, 1) << r.output;
  expect_contains(
      r.output, {"step 6: the loss is ", "stopped without applying the step or saving (the last checkpoint is " + ckpt +
                                             "/global_step4, which this run resumed from)"});
  EXPECT_EQ(snapshot(ckpt), saved);
  fs::remove_all(dir);
}

}  // namespace
