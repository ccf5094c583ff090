// SPDX-License-Identifier: Apache-2.0
// `neox convert`, run as a user would: Hugging Face -> neox -> Hugging Face is
// exact (the two exports are byte-identical, and equal the float64 originals
// rounded to float32), the export gives the same logits as the original, and
// (when Python has torch and transformers) transformers reads the export and
// computes the reference loss. Models Hugging Face cannot represent are
// refused.
#include <gtest/gtest.h>

#include "test_support.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "neox/backend.h"
#include "neox/error.h"
#include "neox/io/hf.h"
#include "neox/io/safetensors.h"
#include "neox/model/gpt_neox.h"
#include "neox/registry.h"
#include "neox/train/checkpoint.h"
#include "neox/train/config.h"

namespace {

namespace fs = std::filesystem;
using neox::DType;
using neox::Tensor;

const std::string kHf = neox::test::testdata_dir() + "/hf/";

using Result = neox::test::CommandResult;
using neox::test::run_command;
Result neox_cmd(const std::string& args) { return neox::test::run_neox(args); }

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  EXPECT_TRUE(in.good()) << p;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string last_line(const std::string& s) {
  std::string t = s;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  auto pos = t.rfind('\n');
  return pos == std::string::npos ? t : t.substr(pos + 1);
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) {
    path = fs::path(::testing::TempDir()) / ("neox_convert_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& sub) const { return (path / sub).string(); }
};

struct Backend {
  neox::PluginRegistry registry{{neox::test::build_plugin_dir()}};
  std::shared_ptr<neox::Backend> backend = registry.make_backend("cpu", {}, {});
};

Backend& cpu() {
  static Backend b;
  return b;
}

// Logits of the model in an HF directory for the case's input_ids, as bytes.
std::string hf_logits(const std::string& dir, const Tensor& ids) {
  neox::GPTNeoX model(neox::read_hf_config(dir), cpu().backend);
  neox::load_hf_weights(model, dir);
  Tensor logits = cpu().backend->to_host(model.forward(ids));
  return std::string(static_cast<const char*>(logits.data()), logits.bytes());
}

// The Python that can import torch and transformers, or "".
const std::string& python_with_transformers() {
  static const std::string found = [] {
    for (const char* py : {"/usr/bin/python3", "python3"}) {
      Result r = run_command(std::string(py) + " -c 'import torch, transformers, safetensors'");
      if (r.status == 0) return std::string(py);
    }
    return std::string();
  }();
  return found;
}

constexpr const char* kInstallHint =
    "Python with torch and transformers not found (tried /usr/bin/python3 and python3). To run this check "
    "on Debian 12: apt-get install python3-torch libopenblas0-pthread && /usr/bin/python3 -m pip install "
    "--break-system-packages 'transformers==4.46.3'";

// Runs tests/support/hf_check.py; returns the loss it prints.
double transformers_loss(const std::string& hf_dir, const std::string& forward) {
  Result r = run_command(python_with_transformers() + " " + neox::test::source_dir() + "/tests/support/hf_check.py " +
                         hf_dir + " " + forward);
  EXPECT_EQ(r.status, 0) << r.output;
  const std::string line = last_line(r.output);
  EXPECT_EQ(line.rfind("loss ", 0), 0u) << r.output;
  std::printf("%s", r.output.c_str());
  return line.rfind("loss ", 0) == 0 ? std::stod(line.substr(5)) : NAN;
}

// --- round trip on the shared Hugging Face cases -------------------------------

class ConvertRoundTrip : public ::testing::TestWithParam<std::string> {};

TEST_P(ConvertRoundTrip, HfToNeoxToHfIsExact) {
  TempDir tmp(GetParam());
  const std::string orig = kHf + GetParam() + "/hf";
  for (const auto& [cmd, what] : std::vector<std::pair<std::string, std::string>>{
           {"convert --from-hf " + orig + " --out " + (tmp / "a"), "import"},
           {"convert --to-hf " + (tmp / "a") + " --out " + (tmp / "h1"), "export"},
           {"convert --from-hf " + (tmp / "h1") + " --out " + (tmp / "b"), "re-import"},
           {"convert --to-hf " + (tmp / "b/global_step0") + " --out " + (tmp / "h2"), "re-export"}}) {
    Result r = neox_cmd(cmd);
    ASSERT_EQ(r.status, 0) << what << ": " << cmd << "\n" << r.output;
  }
  // The import is an iteration-0 checkpoint without optimizer state.
  EXPECT_EQ(read_bytes(tmp.path / "a/latest"), "global_step0\n");
  EXPECT_FALSE(fs::exists(tmp.path / "a/global_step0/optimizer.safetensors"));
  auto state = nlohmann::json::parse(read_bytes(tmp.path / "a/global_step0/state.json"));
  EXPECT_EQ(state["iteration"], 0);
  EXPECT_TRUE(state["optimizer"].is_null());
  const neox::Config imported = neox::parse_config(neox::read_checkpoint_config(tmp / "a"), "config.toml");
  const neox::ModelConfig want = neox::read_hf_config(orig);
  EXPECT_EQ(imported.model.padded_vocab_size(), want.padded_vocab_size());
  EXPECT_EQ(imported.model.rotary_pct, want.rotary_pct);
  EXPECT_EQ(imported.model.gpt_j_residual, want.gpt_j_residual);
  EXPECT_EQ(imported.model.num_parameters(), want.num_parameters());

  // hf -> neox -> hf -> neox -> hf: both exports and both imports are byte-identical.
  for (const char* f : {"config.json", "model.safetensors"})
    EXPECT_EQ(read_bytes(tmp.path / "h1" / f), read_bytes(tmp.path / "h2" / f)) << f;
  EXPECT_EQ(read_bytes(tmp.path / "a/global_step0/model.safetensors"),
            read_bytes(tmp.path / "b/global_step0/model.safetensors"));
  // state.json too, but for the checksum it records of config.toml, whose
  // [model] table comes from each import's config.json.
  auto state_a = nlohmann::json::parse(read_bytes(tmp.path / "a/global_step0/state.json"));
  auto state_b = nlohmann::json::parse(read_bytes(tmp.path / "b/global_step0/state.json"));
  state_a["files"].erase("config.toml");
  state_b["files"].erase("config.toml");
  EXPECT_EQ(state_a, state_b);
  EXPECT_EQ(read_bytes(tmp.path / "a/global_step0/model.safetensors"), read_bytes(tmp.path / "h1/model.safetensors"))
      << "a checkpoint's model.safetensors is already a Hugging Face state dict";

  // The export equals the float64 originals rounded to float32, tensor by tensor.
  auto src = neox::SafeTensorsFile::open(orig + "/model.safetensors");
  auto out = neox::SafeTensorsFile::open(tmp / "h1/model.safetensors");
  EXPECT_EQ(out.metadata().at("format"), "pt");
  EXPECT_EQ(out.tensors().size(), src.tensors().size());
  for (const auto& info : src.tensors()) {
    ASSERT_TRUE(out.contains(info.name)) << info.name;
    EXPECT_EQ(out.info(info.name).dtype, DType::f32) << info.name;
    EXPECT_EQ(out.info(info.name).shape, info.shape) << info.name;
    Tensor a = src.read(info.name, DType::f64), b = out.read(info.name, DType::f32);
    std::int64_t diff = 0;
    for (std::int64_t i = 0; i < a.numel(); ++i) diff += static_cast<float>(a.ptr<double>()[i]) != b.ptr<float>()[i];
    EXPECT_EQ(diff, 0) << info.name;
  }

  // config.json reads back to the same model, in both key forms.
  const neox::ModelConfig back = neox::read_hf_config(tmp / "h1");
  EXPECT_EQ(back.num_parameters(), want.num_parameters());
  EXPECT_EQ(back.rotary_dims(), want.rotary_dims());
  EXPECT_EQ(back.rotary_emb_base, want.rotary_emb_base);
  EXPECT_EQ(back.layernorm_epsilon, want.layernorm_epsilon);
  EXPECT_EQ(back.gpt_j_residual, want.gpt_j_residual);
  EXPECT_EQ(back.no_weight_tying, want.no_weight_tying);
  EXPECT_EQ(back.max_position_embeddings, want.max_position_embeddings);
  auto cj = nlohmann::json::parse(read_bytes(tmp.path / "h1/config.json"));
  EXPECT_EQ(cj["architectures"], nlohmann::json::array({"GPTNeoXForCausalLM"}));
  EXPECT_EQ(cj["model_type"], "gpt_neox");
  EXPECT_EQ(cj["rotary_pct"].get<double>(), want.rotary_pct);
  EXPECT_EQ(cj["rope_parameters"]["partial_rotary_factor"].get<double>(), want.rotary_pct);
  EXPECT_EQ(cj["rope_parameters"]["rope_theta"].get<double>(), want.rotary_emb_base);
  EXPECT_EQ(cj["vocab_size"].get<std::int64_t>(), want.padded_vocab_size());
  EXPECT_EQ(cj["hidden_act"], "gelu");

  // Same logits as the original, bit for bit.
  Tensor ids = neox::SafeTensorsFile::open(kHf + GetParam() + "/forward.safetensors").read("input_ids", DType::i64);
  EXPECT_TRUE(hf_logits(orig, ids) == hf_logits(tmp / "h1", ids)) << "logits differ";
}

TEST_P(ConvertRoundTrip, TransformersReadsTheExport) {
  if (python_with_transformers().empty()) GTEST_SKIP() << kInstallHint;
  TempDir tmp("py_" + GetParam());
  ASSERT_EQ(neox_cmd("convert --from-hf " + kHf + GetParam() + "/hf --out " + (tmp / "ck")).status, 0);
  Result r = neox_cmd("convert --to-hf " + (tmp / "ck") + " --out " + (tmp / "hf"));
  ASSERT_EQ(r.status, 0) << r.output;
  const double loss = transformers_loss(tmp / "hf", kHf + GetParam() + "/forward.safetensors");
  std::ifstream in(kHf + GetParam() + "/expected.json");
  const double ref = nlohmann::json::parse(in)["loss"].get<double>();
  EXPECT_LT(std::abs(loss - ref) / ref, 1e-5) << "transformers loss " << loss << " vs reference " << ref;
}

INSTANTIATE_TEST_SUITE_P(Convert, ConvertRoundTrip, ::testing::Values("neox_tiny_parallel", "neox_tiny_sequential"),
                         [](const auto& info) { return info.param; });

// --- models made here: tied embeddings, refusals ----------------------------------

neox::ModelConfig random_config() {
  neox::ModelConfig c;
  c.num_layers = 2;
  c.hidden_size = 48;
  c.num_attention_heads = 3;
  c.vocab_size = 257;
  c.make_vocab_size_divisible_by = 64;  // 320
  c.seq_length = 32;
  c.max_position_embeddings = 32;
  c.rotary_pct = 0.25;
  c.rotary_emb_base = 500.0;
  c.gpt_j_residual = false;
  c.no_weight_tying = false;  // tied: the output layer is embed_in
  c.layernorm_epsilon = 1e-6;
  return c;
}

// A checkpoint of a randomly initialised model; returns its directory.
std::string save_random(const neox::ModelConfig& c, const std::string& save_dir, const std::string& plugins_toml = "") {
  neox::GPTNeoX model(c, cpu().backend);
  model.initialize(42);
  neox::CheckpointState s;
  s.iteration = 7;
  s.config_toml = plugins_toml + neox::model_config_toml(c);
  return neox::save_checkpoint(save_dir, model, nullptr, s, 0);
}

TEST(Convert, TiedEmbeddingsExportWithoutEmbedOut) {
  TempDir tmp("tied");
  const neox::ModelConfig c = random_config();
  save_random(c, tmp / "save", "[plugins]\ntokenizer = \"byte\"\n");
  Result r = neox_cmd("convert --to-hf " + (tmp / "save") + " --out " + (tmp / "hf"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto f = neox::SafeTensorsFile::open(tmp / "hf/model.safetensors");
  EXPECT_FALSE(f.contains("embed_out.weight"));
  EXPECT_TRUE(f.contains("gpt_neox.embed_in.weight"));
  auto cj = nlohmann::json::parse(read_bytes(tmp.path / "hf/config.json"));
  EXPECT_EQ(cj["tie_word_embeddings"], true);
  EXPECT_EQ(cj["use_parallel_residual"], false);
  EXPECT_EQ(cj["vocab_size"], 320);
  EXPECT_EQ(cj["eos_token_id"], 256) << "the byte tokenizer's end-of-document token";
  EXPECT_EQ(cj["bos_token_id"], 256);

  // Loading the export back gives the checkpoint's logits, bit for bit.
  neox::GPTNeoX model(c, cpu().backend);
  neox::load_checkpoint(tmp / "save", model, nullptr);
  Tensor ids = Tensor::zeros_host({2, 16}, DType::i64), labels = Tensor::zeros_host({2, 16}, DType::i64);
  std::mt19937 rng(3);
  for (int i = 0; i < 32; ++i) {
    ids.ptr<std::int64_t>()[i] = rng() % 257;
    labels.ptr<std::int64_t>()[i] = rng() % 257;
  }
  const double loss = model.forward_loss(ids, labels);
  Tensor logits = cpu().backend->to_host(model.logits());
  EXPECT_TRUE(hf_logits(tmp / "hf", ids) == std::string(static_cast<const char*>(logits.data()), logits.bytes()));

  // Explicit token ids win.
  Result r2 =
      neox_cmd("convert --to-hf " + (tmp / "save") + " --out " + (tmp / "hf2") + " --bos-token-id 0 --eos-token-id 2");
  ASSERT_EQ(r2.status, 0) << r2.output;
  auto cj2 = nlohmann::json::parse(read_bytes(tmp.path / "hf2/config.json"));
  EXPECT_EQ(cj2["bos_token_id"], 0);
  EXPECT_EQ(cj2["eos_token_id"], 2);

  if (python_with_transformers().empty()) GTEST_SKIP() << kInstallHint;
  neox::write_safetensors(tmp / "forward.safetensors", {{"input_ids", ids}, {"labels", labels}});
  const double hf_loss = transformers_loss(tmp / "hf", tmp / "forward.safetensors");
  EXPECT_LT(std::abs(hf_loss - loss) / loss, 1e-5) << "transformers " << hf_loss << " vs neox " << loss;
}

TEST(Convert, ModelsHuggingFaceCannotRepresentAreRefused) {
  TempDir tmp("refuse");
  for (const char* pos : {"learned", "none"}) {
    neox::ModelConfig c = random_config();
    c.pos_emb = pos;
    const std::string save = tmp / (std::string("save_") + pos);
    save_random(c, save);
    const std::string out = tmp / (std::string("hf_") + pos);
    Result r = neox_cmd("convert --to-hf " + save + " --out " + out);
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_NE(r.output.find(std::string("pos_emb = '") + pos + "'"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("rotary"), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(out));

    neox::GPTNeoX model(c, cpu().backend);
    model.initialize(1);
    EXPECT_THROW(neox::save_hf(model, out), neox::Error);
    EXPECT_FALSE(fs::exists(out));
    for (const auto& e : fs::directory_iterator(tmp.path))
      EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
  }
}

TEST(Convert, SaveHfIsAtomicAndRefusesANonEmptyDirectory) {
  TempDir tmp("atomic");
  neox::GPTNeoX model(random_config(), cpu().backend);
  model.initialize(5);
  fs::create_directories(tmp.path / "empty");
  neox::save_hf(model, tmp / "empty");  // an empty directory is fine
  EXPECT_TRUE(fs::exists(tmp.path / "empty/config.json"));
  EXPECT_THROW(neox::save_hf(model, tmp / "empty"), neox::Error);
  // A stale temporary of an interrupted export by another process is removed.
  fs::create_directories(tmp.path / "out.tmp-999999999");
  neox::save_hf(model, tmp / "out/");
  EXPECT_FALSE(fs::exists(tmp.path / "out.tmp-999999999"));
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(tmp.path / "out")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"config.json", "model.safetensors"}));
}

TEST(Convert, CommandLineErrors) {
  TempDir tmp("cli");
  Result none = neox_cmd("convert --out " + (tmp / "x"));
  EXPECT_EQ(none.status, 1);
  EXPECT_NE(none.output.find("exactly one of --to-hf"), std::string::npos) << none.output;
  Result both = neox_cmd("convert --to-hf a --from-hf b --out " + (tmp / "x"));
  EXPECT_EQ(both.status, 1);
  EXPECT_NE(both.output.find("exactly one of --to-hf"), std::string::npos) << both.output;
  Result no_out = neox_cmd("convert --from-hf " + kHf + "neox_tiny_parallel/hf");
  EXPECT_EQ(no_out.status, 1);
  EXPECT_NE(no_out.output.find("--out is required"), std::string::npos) << no_out.output;

  fs::create_directories(tmp.path / "busy");
  std::ofstream(tmp.path / "busy/file") << "x";
  Result busy = neox_cmd("convert --from-hf " + kHf + "neox_tiny_parallel/hf --out " + (tmp / "busy"));
  EXPECT_EQ(busy.status, 1);
  EXPECT_NE(busy.output.find("not empty"), std::string::npos) << busy.output;
  Result missing = neox_cmd("convert --to-hf " + (tmp / "nothing") + " --out " + (tmp / "y"));
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.output.find("no such checkpoint"), std::string::npos) << missing.output;
  Result help = neox_cmd("convert --help");
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.output.find("--from-hf"), std::string::npos);
}

}  // namespace
