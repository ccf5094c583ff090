// SPDX-License-Identifier: Apache-2.0
// The config loader: shipped configs, defaults, every error class with its
// location, overrides, the generated reference, and mutated inputs.
#include <gtest/gtest.h>

#include "test_support.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "neox/error.h"
#include "neox/train/config.h"

namespace {

using neox::Config;
using neox::parse_config;

const std::filesystem::path kConfigs = std::filesystem::path(neox::test::source_dir()) / "configs";

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Passes when `needle` occurs in `haystack`; prints both otherwise.
::testing::AssertionResult contains(const char* h_expr, const char* n_expr, const std::string& haystack,
                                    const std::string& needle) {
  if (haystack.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << h_expr << " does not contain " << n_expr << "\n  text:   " << haystack
                                       << "\n  wanted: " << needle;
}
#define EXPECT_CONTAINS(haystack, needle) EXPECT_PRED_FORMAT2(contains, haystack, needle)

// The message of the neox::Error that parsing throws ("" and a failure if none).
std::string error_of(std::string_view text, const std::vector<std::string>& overrides = {}) {
  try {
    parse_config(text, "dir/t.toml", overrides);
  } catch (const neox::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected neox::Error for:\n" << text;
  return "";
}

// ---------------------------------------------------------------------------
// Shipped configs

TEST(ConfigFiles, EveryShippedConfigParsesAndValidates) {
  int n = 0;
  for (auto& entry : std::filesystem::directory_iterator(kConfigs)) {
    if (entry.path().extension() != ".toml") continue;
    SCOPED_TRACE(entry.path().string());
    Config c;
    EXPECT_NO_THROW(c = neox::load_config(entry.path().string()));
    EXPECT_EQ(c.path, entry.path().string());
    EXPECT_NO_THROW(c.model.validate());
    ++n;
  }
  EXPECT_GE(n, 2);
}

TEST(ConfigFiles, TinyCpu) {
  Config c = neox::load_config((kConfigs / "tiny-cpu.toml").string());
  EXPECT_EQ(c.plugins.backend, "cpu");
  EXPECT_EQ(c.plugins.comm, "local");
  EXPECT_EQ(c.model.num_layers, 4);
  EXPECT_EQ(c.model.hidden_size, 128);
  EXPECT_EQ(c.model.num_attention_heads, 4);
  EXPECT_EQ(c.model.seq_length, 256);
  EXPECT_EQ(c.model.vocab_size, 257);
  EXPECT_DOUBLE_EQ(c.model.rotary_pct, 0.25);
  EXPECT_TRUE(c.model.gpt_j_residual);
  EXPECT_EQ(c.training.train_micro_batch_size_per_gpu, 8);
  // The demo: the byte-level dataset packaging/demo.sh writes, and a checkpoint.
  EXPECT_EQ(c.plugins.data, "mmap");
  EXPECT_EQ(c.plugins.options_for("mmap").get_string("data_path", ""), "data/licenses_text_document");
  EXPECT_EQ(c.training.save, "checkpoints/tiny-cpu");
  EXPECT_DOUBLE_EQ(c.optimizer.beta1, 0.9);
  EXPECT_DOUBLE_EQ(c.optimizer.beta2, 0.95);
}

TEST(ConfigFiles, BenchCpu6l384) {
  Config c = neox::load_config((kConfigs / "bench-cpu-6l384.toml").string());
  EXPECT_EQ(c.model.num_layers, 6);
  EXPECT_EQ(c.model.hidden_size, 384);
  EXPECT_EQ(c.model.num_attention_heads, 6);
  EXPECT_EQ(c.model.seq_length, 256);
  EXPECT_EQ(c.model.vocab_size, 257);
  EXPECT_EQ(c.training.train_micro_batch_size_per_gpu, 4);
}

TEST(ConfigFiles, MissingFileNamesThePath) {
  try {
    neox::load_config("/nonexistent/neox.toml");
    FAIL() << "no error";
  } catch (const neox::Error& e) {
    EXPECT_CONTAINS(e.what(), ("/nonexistent/neox.toml"));
  }
}

// ---------------------------------------------------------------------------
// Values and defaults

TEST(ConfigValues, EmptyFileGivesTheStructDefaults) {
  const Config d;
  Config c = parse_config("", "empty.toml");
  EXPECT_EQ(c.path, "empty.toml");
  EXPECT_EQ(c.plugins.backend, d.plugins.backend);
  EXPECT_EQ(c.plugins.comm, d.plugins.comm);
  EXPECT_EQ(c.plugins.optimizer, d.plugins.optimizer);
  EXPECT_EQ(c.plugins.data, "");
  EXPECT_TRUE(c.plugins.search_paths.empty());
  EXPECT_TRUE(c.plugins.kernels.empty());
  EXPECT_TRUE(c.plugins.options.empty());
  EXPECT_EQ(c.model.num_layers, d.model.num_layers);
  EXPECT_EQ(c.model.hidden_size, d.model.hidden_size);
  EXPECT_EQ(c.model.pos_emb, d.model.pos_emb);
  EXPECT_DOUBLE_EQ(c.model.rotary_pct, d.model.rotary_pct);
  EXPECT_EQ(c.model.no_weight_tying, d.model.no_weight_tying);
  EXPECT_DOUBLE_EQ(c.optimizer.lr, d.optimizer.lr);
  EXPECT_DOUBLE_EQ(c.optimizer.beta2, d.optimizer.beta2);
  EXPECT_EQ(c.training.seed, d.training.seed);
  EXPECT_EQ(c.training.train_iters, d.training.train_iters);
}

TEST(ConfigValues, AbsentKeysKeepDefaultsAndIntegersAreAcceptedAsFloats) {
  Config c = parse_config(
      "[model]\n"
      "num_layers = 2\n"
      "rotary_emb_base = 500000\n"  // an integer where a float is expected
      "[optimizer]\n"
      "lr = 1\n",
      "x.toml");
  EXPECT_EQ(c.model.num_layers, 2);
  EXPECT_EQ(c.model.hidden_size, neox::ModelConfig{}.hidden_size);
  EXPECT_DOUBLE_EQ(c.model.rotary_emb_base, 500000.0);
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 1.0);
  EXPECT_DOUBLE_EQ(c.optimizer.eps, 1e-8);
}

TEST(ConfigValues, BetasArrayOrBeta1Beta2) {
  Config a = parse_config("[optimizer]\nbetas = [0.8, 0.99]\n", "a.toml");
  EXPECT_DOUBLE_EQ(a.optimizer.beta1, 0.8);
  EXPECT_DOUBLE_EQ(a.optimizer.beta2, 0.99);
  Config b = parse_config("[optimizer]\nbeta1 = 0.7\nbeta2 = 0.9\n", "b.toml");
  EXPECT_DOUBLE_EQ(b.optimizer.beta1, 0.7);
  EXPECT_DOUBLE_EQ(b.optimizer.beta2, 0.9);
  std::string e = error_of("[optimizer]\nbeta1 = 0.7\nbetas = [0.9, 0.95]\n");
  EXPECT_CONTAINS(e, ("dir/t.toml:3:"));
  EXPECT_CONTAINS(e, ("optimizer.betas: give either betas or beta1/beta2"));
  EXPECT_CONTAINS(error_of("[optimizer]\nbetas = [0.9]\n"),
                  ("dir/t.toml:2:9: optimizer.betas: expected an array of 2 numbers"));
  EXPECT_CONTAINS(error_of("[optimizer]\nbetas = [0.9, 1.0]\n"),
                  ("dir/t.toml:2:9: optimizer.betas: 1.0 is out of range [0.0, 1.0)"));
}

TEST(ConfigValues, SearchPathsAreRelativeToTheConfigFile) {
  Config c = parse_config("[plugins]\nsearch_paths = [\"plugins\", \"../x\", \"/abs/p\"]\n", "some/dir/run.toml");
  ASSERT_EQ(c.plugins.search_paths.size(), 3u);
  EXPECT_EQ(c.plugins.search_paths[0], "some/dir/plugins");
  EXPECT_EQ(c.plugins.search_paths[1], "some/x");
  EXPECT_EQ(c.plugins.search_paths[2], "/abs/p");
  Config here = parse_config("[plugins]\nsearch_paths = [\"p\"]\n", "run.toml");
  EXPECT_EQ(here.plugins.search_paths, std::vector<std::string>{"p"});
}

TEST(ConfigValues, TokenizerFilesAreRelativeToTheConfigFile) {
  Config c = parse_config(
      "[tokenizer]\ntype = \"GPT2BPETokenizer\"\nvocab_file = \"tok/vocab.json\"\n"
      "merge_file = \"/abs/merges.txt\"\n",
      "some/dir/run.toml");
  EXPECT_EQ(c.tokenizer.type, "GPT2BPETokenizer");
  EXPECT_EQ(c.tokenizer.vocab_file, "some/dir/tok/vocab.json");
  EXPECT_EQ(c.tokenizer.merge_file, "/abs/merges.txt");
  // On the command line: as given (relative to the working directory).
  Config o = parse_config("", "some/dir/run.toml", {"tokenizer.type=HFTokenizer", "tokenizer.vocab_file=t.json"});
  EXPECT_EQ(o.tokenizer.vocab_file, "t.json");
  EXPECT_EQ(Config().tokenizer.type, "") << "no tokenizer by default";
}

// [tokenizer] type names a built-in tokenizer or a tokenizer plugin, which
// takes vocab_file and merge_file as it likes (the plugin checks them).
TEST(ConfigValues, TokenizerTypeMayNameAPlugin) {
  Config c = parse_config("[tokenizer]\ntype = \"sentencepiece\"\nvocab_file = \"t.model\"\nmerge_file = \"x\"\n",
                          "some/dir/run.toml");
  EXPECT_EQ(c.tokenizer.type, "sentencepiece");
  EXPECT_EQ(c.tokenizer.vocab_file, "some/dir/t.model");
  EXPECT_EQ(c.tokenizer.merge_file, "some/dir/x");
  EXPECT_CONTAINS(error_of("[tokenizer]\ntype = \"Sentence Piece\"\n"),
                  "dir/t.toml:2:8: tokenizer.type: \"Sentence Piece\" is neither a built-in tokenizer (HFTokenizer, "
                  "GPT2BPETokenizer, CharLevelTokenizer, byte) nor the name of a tokenizer plugin");
}

// plugins.tokenizer named a tokenizer plugin that nothing made; every
// config.toml saved with a checkpoint holds it (as ""), so it is read:
// "" is nothing, "byte" is [tokenizer] type = "byte", anything else is
// refused naming the key that replaced it.
TEST(ConfigValues, RetiredPluginsTokenizerKeyStillReadsOldCheckpoints) {
  EXPECT_EQ(parse_config("[plugins]\ntokenizer = \"\"\n", "c.toml").tokenizer.type, "");
  EXPECT_EQ(parse_config("[plugins]\ntokenizer = \"byte\"\n[tokenizer]\ntype = \"\"\n", "c.toml").tokenizer.type,
            "byte");
  EXPECT_EQ(parse_config("", "c.toml", {"plugins.tokenizer=byte"}).tokenizer.type, "byte");
  // [tokenizer] type wins over the retired key.
  EXPECT_EQ(parse_config("[plugins]\ntokenizer = \"byte\"\n[tokenizer]\ntype = \"CharLevelTokenizer\"\n", "c.toml")
                .tokenizer.type,
            "CharLevelTokenizer");
  EXPECT_CONTAINS(error_of("[plugins]\ntokenizer = \"spm\"\n"),
                  "dir/t.toml:2:13: plugins.tokenizer: retired; name the tokenizer in [tokenizer] type");
  EXPECT_EQ(neox::config_to_toml(Config()).find("[plugins]\ntokenizer"), std::string::npos);
}

TEST(ConfigValues, KernelsAndPluginOptions) {
  Config c = parse_config(
      "[plugins]\n"                 // 1
      "backend = \"cpu\"\n"         // 2
      "[plugins.kernels]\n"         // 3
      "matmul = \"fast-gemm\"\n"    // 4
      "[plugins.options.cpu]\n"     // 5
      "threads = 2\n"               // 6
      "scale = 0.5\n"               // 7
      "pin = true\n"                // 8
      "mode = \"fast\"\n"           // 9
      "cores = [\"0\", \"1\"]\n"    // 10
      "[plugins.options.empty]\n",  // 11
      "opts.toml");
  EXPECT_EQ(c.plugins.kernels.at("matmul"), "fast-gemm");
  neox::Options o = c.plugins.options_for("cpu");
  EXPECT_EQ(o.table(), "plugins.options.cpu");
  EXPECT_EQ(o.get_int("threads", 0, 1, 64), 2);
  EXPECT_DOUBLE_EQ(o.get_double("scale", 0, 0, 1), 0.5);
  EXPECT_TRUE(o.get_bool("pin", false));
  EXPECT_EQ(o.get_string("mode", ""), "fast");
  EXPECT_EQ(o.get_strings("cores"), (std::vector<std::string>{"0", "1"}));
  EXPECT_EQ(o.where("threads"), "opts.toml:6:1: plugins.options.cpu.threads");
  // The plugin validates its own keys: the location survives into its errors.
  try {
    o.get_int("threads", 0, 4, 8);
    FAIL() << "no error";
  } catch (const neox::Error& e) {
    EXPECT_CONTAINS(e.what(), ("opts.toml:6:1: plugins.options.cpu.threads"));
  }
  EXPECT_TRUE(c.plugins.options.count("empty"));
  neox::Options none = c.plugins.options_for("absent");
  EXPECT_TRUE(none.keys().empty());
  EXPECT_EQ(none.table(), "plugins.options.absent");
}

// ---------------------------------------------------------------------------
// Errors: each names the file, the line and the key

TEST(ConfigErrors, UnknownTable) {
  std::string e = error_of(
      "[model]\n"
      "num_layers = 2\n"
      "[modle]\n"
      "x = 1\n");
  EXPECT_CONTAINS(e, ("dir/t.toml:3:"));
  EXPECT_CONTAINS(e, ("modle: unknown table (did you mean 'model'?)"));
}

TEST(ConfigErrors, UnknownTopLevelKey) {
  std::string e = error_of("\n\nhidden_size = 3\n");
  EXPECT_CONTAINS(e, ("dir/t.toml:3:1: hidden_size: unknown top-level key"));
  EXPECT_CONTAINS(error_of("model = 3\n"), ("dir/t.toml:1:1: model: expected a table, got an integer"));
}

TEST(ConfigErrors, UnknownKey) {
  std::string e = error_of(
      "[model]\n"
      "num_layers = 2\n"
      "hiden_size = 64\n");
  EXPECT_CONTAINS(e, ("dir/t.toml:3:1: model.hiden_size: unknown key (did you mean "
                      "'hidden_size'?)"));
  // GPT-NeoX's YAML spelling with dashes is pointed at the underscore form.
  EXPECT_CONTAINS(error_of("[model]\nnum-layers = 2\n"), ("dir/t.toml:2:1: model.num-layers: unknown key (did you mean "
                                                          "'num_layers'?)"));
  EXPECT_CONTAINS(error_of("[plugins]\nbackend = \"cpu\"\nkernel = {}\n"),
                  ("dir/t.toml:3:1: plugins.kernel: unknown key"));
}

// A whole number written as a float is that integer where an integer is
// expected (GPT-NeoX and DeepSpeed configs write bucket sizes as 5e8), from
// a file and from --set; a fraction and a value beyond the key's range are
// still refused.
TEST(Config, WholeFloatsAreIntegers) {
  neox::Config c = neox::parse_config("[training]\nzero_reduce_bucket_size = 5e8\n", "t.toml",
                                      {"training.zero_allgather_bucket_size=2.0e6"});
  EXPECT_EQ(c.training.zero_reduce_bucket_size, 500000000);
  EXPECT_EQ(c.training.zero_allgather_bucket_size, 2000000);
  EXPECT_EQ(error_of("[model]\nnum_layers = 1e30\n"),
            "dir/t.toml:2:14: model.num_layers: expected an integer, got a float (1e30)");
  EXPECT_CONTAINS(error_of("[model]\nnum_layers = -2.0\n"), "model.num_layers: -2 is out of range");
}

TEST(ConfigErrors, WrongType) {
  EXPECT_EQ(error_of("[model]\nnum_layers = 2.5\n"),
            "dir/t.toml:2:14: model.num_layers: expected an integer, got a float (2.5)");
  EXPECT_CONTAINS(error_of("[model]\n\npos_emb = 3\n"),
                  ("dir/t.toml:3:11: model.pos_emb: expected a string, got an integer"));
  EXPECT_CONTAINS(error_of("[model]\ngpt_j_residual = \"yes\"\n"),
                  ("dir/t.toml:2:18: model.gpt_j_residual: expected a boolean"));
  EXPECT_CONTAINS(error_of("[plugins]\nsearch_paths = \"p\"\n"),
                  ("dir/t.toml:2:16: plugins.search_paths: expected an array of strings"));
  EXPECT_CONTAINS(error_of("[optimizer]\nlr = \"fast\"\n"),
                  ("dir/t.toml:2:6: optimizer.lr: expected a float, got a string"));
  EXPECT_CONTAINS(error_of("[model]\nhidden_size = { a = 1 }\n"),
                  ("dir/t.toml:2:15: model.hidden_size: expected an integer, got a table"));
  EXPECT_CONTAINS(error_of("[training]\nseed = 1979-05-27\n"),
                  ("dir/t.toml:2:8: training.seed: a date is not a supported value"));
}

TEST(ConfigErrors, OutOfRange) {
  EXPECT_EQ(error_of("[model]\nhidden_size = 0\n"), "dir/t.toml:2:15: model.hidden_size: 0 is out of range [1, 65536]");
  EXPECT_CONTAINS(error_of("[model]\nrotary_pct = 0.0\n"),
                  ("dir/t.toml:2:14: model.rotary_pct: 0.0 is out of range (0.0, 1.0]"));
  EXPECT_CONTAINS(error_of("[model]\nrotary_pct = nan\n"), ("dir/t.toml:2:14: model.rotary_pct: nan is out of range"));
  EXPECT_CONTAINS(error_of("[optimizer]\nlr = -1e-3\n"), ("dir/t.toml:2:6: optimizer.lr: -0.001 is out of range"));
  EXPECT_CONTAINS(error_of("[training]\nseed = -1\n"), ("dir/t.toml:2:8: training.seed: -1 is out of range"));
  EXPECT_CONTAINS(error_of("[training]\ntrain_micro_batch_size_per_gpu = 0\n"),
                  ("dir/t.toml:2:34: training.train_micro_batch_size_per_gpu: 0 is out of "
                   "range"));
}

TEST(ConfigErrors, NotAllowed) {
  EXPECT_EQ(error_of("[model]\npos_emb = \"rotery\"\n"),
            "dir/t.toml:2:11: model.pos_emb: \"rotery\" is not one of: rotary, learned, none "
            "(did you mean 'rotary'?)");
  EXPECT_CONTAINS(error_of("[model]\ninit_method = \"xavier\"\n"),
                  ("dir/t.toml:2:15: model.init_method: \"xavier\" is not one of: normal, "
                   "small_init, wang_init"));
  EXPECT_CONTAINS(error_of("[plugins]\nbackend = \"\"\n"),
                  ("dir/t.toml:2:11: plugins.backend: a plugin name is required"));
  EXPECT_CONTAINS(error_of("[plugins]\ncomm = \"My Comm\"\n"),
                  ("dir/t.toml:2:8: plugins.comm: \"My Comm\" is not a plugin name"));
}

TEST(ConfigErrors, BadKernelOp) {
  std::string e = error_of(
      "[plugins.kernels]\n"
      "matmul = \"a\"\n"
      "matmull = \"b\"\n");
  EXPECT_CONTAINS(e, ("dir/t.toml:3:1: plugins.kernels.matmull: unknown kernel operation "
                      "(did you mean 'matmul'?)"));
  EXPECT_CONTAINS(e, ("adamw_update"));  // the known ops are listed
  EXPECT_CONTAINS(error_of("[plugins.kernels]\nmatmul = 3\n"),
                  ("dir/t.toml:2:1: plugins.kernels.matmul: expected a string"));
}

TEST(ConfigErrors, NestedTableInPluginOptions) {
  EXPECT_CONTAINS(error_of("[plugins.options.cpu]\n"
                           "threads = 2\n"
                           "[plugins.options.cpu.inner]\n"
                           "x = 1\n"),
                  ("dir/t.toml:3:22: plugins.options.cpu.inner: nested tables are not "
                   "allowed in plugin options"));
  EXPECT_CONTAINS(error_of("[plugins.options.cpu]\nx = { a = 1 }\n"),
                  ("dir/t.toml:2:1: plugins.options.cpu.x: nested tables are not allowed"));
  EXPECT_CONTAINS(error_of("[plugins.options.cpu]\n\nx = [1, 2]\n"),
                  ("dir/t.toml:3:1: plugins.options.cpu.x: arrays in plugin options must "
                   "hold strings"));
  EXPECT_CONTAINS(error_of("[plugins.options]\ncpu = 3\n"), ("dir/t.toml:2:1: plugins.options.cpu: expected a table"));
}

TEST(ConfigErrors, MalformedToml) {
  std::string e = error_of(
      "[model]\n"
      "num_layers = 2\n"
      "hidden_size = = 4\n");
  EXPECT_CONTAINS(e, ("dir/t.toml:3:"));
  EXPECT_CONTAINS(error_of("[model]\nnum_layers = 2\nnum_layers = 3\n"), ("dir/t.toml:3:"));
  EXPECT_CONTAINS(error_of("[model\n"), ("dir/t.toml:1:"));
  // TOML++ 3.3 trips an internal assert on a header without a name
  // (marzer/tomlplusplus#301); the loader turns it into an error too.
  EXPECT_CONTAINS(error_of("[model]\nnum_layers = 2\n[\n"),
                  ("dir/t.toml:3:2: malformed TOML: expected a table name after '['"));
  EXPECT_CONTAINS(error_of("[[ #\n"), ("dir/t.toml:1:4: malformed TOML"));
}

TEST(ConfigErrors, CrossFieldChecks) {
  EXPECT_EQ(error_of("[model]\nhidden_size = 130\nnum_attention_heads = 4\n"),
            "dir/t.toml:3:23: model.num_attention_heads: hidden_size 130 is not divisible by "
            "num_attention_heads 4");
  EXPECT_CONTAINS(error_of("[model]\nhidden_size = 128\nnum_attention_heads = 4\nrotary_pct = 0.1\n"),
                  ("dir/t.toml:4:14: model.rotary_pct: int(head_size 32 * rotary_pct 0.1) "
                   "= 3 rotary dimensions; must be even and >= 2"));
  EXPECT_CONTAINS(error_of("[model]\nseq_length = 512\n"),
                  ("dir/t.toml:2:14: model.seq_length: 512 exceeds max_position_embeddings "
                   "256"));
  // [tokenizer]: the files each type needs, and no others.
  EXPECT_CONTAINS(error_of("[tokenizer]\ntype = \"HFTokenizer\"\n"),
                  "dir/t.toml:2:8: tokenizer.vocab_file: tokenizer.type \"HFTokenizer\" needs a vocab file "
                  "(the tokenizer.json)");
  EXPECT_CONTAINS(error_of("[tokenizer]\ntype = \"GPT2BPETokenizer\"\nvocab_file = \"v.json\"\n"),
                  "tokenizer.merge_file: tokenizer.type \"GPT2BPETokenizer\" needs a merge file (the merges.txt)");
  EXPECT_CONTAINS(error_of("[tokenizer]\nvocab_file = \"t.json\"\n"),
                  "dir/t.toml:2:14: tokenizer.vocab_file: set, but tokenizer.type is empty");
  EXPECT_CONTAINS(error_of("[tokenizer]\ntype = \"HFTokenizer\"\nvocab_file = \"t.json\"\nmerge_file = \"m\"\n"),
                  "tokenizer.merge_file: only tokenizer.type \"GPT2BPETokenizer\" takes a merge file");
  EXPECT_CONTAINS(error_of("[tokenizer]\ntype = \"byte\"\nvocab_file = \"t.json\"\n"),
                  "tokenizer.vocab_file: tokenizer.type \"byte\" takes no vocab file");
  EXPECT_CONTAINS(error_of("[tokenizer]\ntype = \"SentencePiece\"\n"), "tokenizer.type");
}

TEST(ConfigErrors, EveryErrorIsReportedInSourceOrder) {
  std::string e = error_of(
      "[training]\n"
      "train_iters = -5\n"
      "[model]\n"
      "num_layers = 0\n"
      "bogus = 1\n");
  auto a = e.find("dir/t.toml:2:"), b = e.find("dir/t.toml:4:"), c = e.find("dir/t.toml:5:");
  ASSERT_NE(a, std::string::npos) << e;
  ASSERT_NE(b, std::string::npos) << e;
  ASSERT_NE(c, std::string::npos) << e;
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_EQ(e.rfind("dir/t.toml:2:", 0), 0u) << "the first line is the first error";
}

// ---------------------------------------------------------------------------
// Overrides

TEST(ConfigOverrides, ApplyAfterTheFile) {
  Config c = parse_config(
      "[model]\nhidden_size = 256\nnum_attention_heads = 4\n", "o.toml",
      {"model.hidden_size=512", "plugins.backend=cpu2", "optimizer.lr=1e-3", "plugins.options.cpu.threads=2",
       "plugins.kernels.matmul=fast", "model.pos_emb = learned", "model.gpt_j_residual=true",
       "optimizer.betas=[0.5, 0.6]", "plugins.search_paths=[\"p\"]", "plugins.data=\"text-file\""});
  EXPECT_EQ(c.model.hidden_size, 512);
  EXPECT_EQ(c.plugins.backend, "cpu2");
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 1e-3);
  EXPECT_EQ(c.plugins.kernels.at("matmul"), "fast");
  EXPECT_EQ(c.model.pos_emb, "learned");
  EXPECT_TRUE(c.model.gpt_j_residual);
  EXPECT_DOUBLE_EQ(c.optimizer.beta1, 0.5);
  EXPECT_EQ(c.plugins.search_paths, std::vector<std::string>{"p"});  // not file-relative
  EXPECT_EQ(c.plugins.data, "text-file");
  neox::Options o = c.plugins.options_for("cpu");
  EXPECT_EQ(o.get_int("threads", 0, 1, 8), 2);
  EXPECT_EQ(o.where("threads"), "<command line>: plugins.options.cpu.threads");
}

TEST(ConfigOverrides, AreValidated) {
  EXPECT_EQ(error_of("", {"model.hidden_size=0"}), "<command line>: model.hidden_size: 0 is out of range [1, 65536]");
  EXPECT_CONTAINS(error_of("", {"model.num_layers=two"}),
                  ("<command line>: model.num_layers: expected an integer, got a string"));
  EXPECT_CONTAINS(error_of("", {"model.hiden_size=64"}), ("<command line>: model.hiden_size: unknown key (did you mean "
                                                          "'hidden_size'?)"));
  EXPECT_CONTAINS(error_of("", {"modle.hidden_size=64"}), ("<command line>: modle.hidden_size: unknown table 'modle'"));
  EXPECT_CONTAINS(error_of("", {"model.hidden_size"}),
                  ("<command line>: \"model.hidden_size\": expected table.key=value"));
  EXPECT_CONTAINS(error_of("", {"plugins.kernels.nope=x"}),
                  ("<command line>: plugins.kernels.nope: unknown kernel operation"));
  EXPECT_CONTAINS(error_of("", {"plugins.options.cpu=2"}), ("<command line>: plugins.options.cpu: expected "
                                                            "plugins.options.<plugin>.<key>=<value>"));
  EXPECT_CONTAINS(error_of("", {"model.pos_emb=rope"}), ("<command line>: model.pos_emb: \"rope\" is not one of"));
  // A file error is reported before the overrides are looked at.
  EXPECT_CONTAINS(error_of("[model]\nnum_layers = 0\n", {"model.num_layers=2"}), ("dir/t.toml:2:14: model.num_layers"));
}

TEST(ConfigOverrides, CrossChecksSeeTheOverriddenValues) {
  // The file alone is inconsistent; the override repairs it.
  Config c = parse_config("[model]\nhidden_size = 130\nnum_attention_heads = 4\n", "o.toml", {"model.hidden_size=128"});
  EXPECT_EQ(c.model.hidden_size, 128);
  // An override that breaks consistency is blamed on the command line.
  EXPECT_CONTAINS(error_of("[model]\nhidden_size = 128\n", {"model.num_attention_heads=5"}),
                  ("<command line>: model.num_attention_heads: hidden_size 128 is not "
                   "divisible"));
}

// ---------------------------------------------------------------------------
// The reference

TEST(ConfigReference, ReadmeIsTheGeneratedReference) {
  std::string readme = read_file(kConfigs / "README.md");
  EXPECT_TRUE(readme == neox::config_reference_markdown())
      << "configs/README.md differs from config_reference_markdown(); regenerate it with "
         "`neox config --reference > configs/README.md`";
}

TEST(ConfigReference, ListsEveryTableAndKey) {
  std::string md = neox::config_reference_markdown();
  for (const char* s :
       {"## [plugins]", "## [plugins.kernels]", "## [model]", "## [optimizer]", "## [training]",
        "| `hidden_size` | integer | `384` | [1, 65536] |", "| `rotary_pct` | float | `1.0` | (0.0, 1.0] |",
        "| `lr` | float | `6e-4` |", "| `betas` | array of 2 floats | `[0.9, 0.95]` |",
        "| `pos_emb` | string | "
        "`\"rotary\"` | `rotary`, `learned`, `none` |",
        "`layernorm_backward`", "neox config --reference"})
    EXPECT_CONTAINS(md, (s));
}

// ---------------------------------------------------------------------------
// Mutations: whatever the text, parsing returns or throws neox::Error.

struct SplitMix {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return n ? static_cast<size_t>(next() % n) : 0; }
};

std::string mutate(std::string t, SplitMix& r) {
  static const std::string alphabet = std::string("[]{}=\"'.,#\n\\ -+_0123456789eEinfatrux") + '\0' + "\x80\xff\t";
  std::vector<std::string> lines;
  int n = 1 + static_cast<int>(r.below(3));
  for (int m = 0; m < n; ++m) {
    size_t pos = r.below(t.size() + 1);
    switch (r.below(7)) {
      case 0:  // delete 1-3 characters
        if (pos < t.size()) t.erase(pos, 1 + r.below(3));
        break;
      case 1:  // insert a character
        t.insert(pos, 1, alphabet[r.below(alphabet.size())]);
        break;
      case 2:  // replace a character
        if (pos < t.size()) t[pos] = alphabet[r.below(alphabet.size())];
        break;
      case 3:  // replace a digit run's first digit by a big or negative number
        t.insert(pos, r.below(2) ? "-" : "99999999999999999999");
        break;
      case 4:  // truncate
        t.resize(pos);
        break;
      case 5:    // swap two lines
      case 6: {  // or duplicate one
        lines.clear();
        std::string line;
        std::istringstream in(t);
        while (std::getline(in, line)) lines.push_back(line);
        if (lines.size() < 2) break;
        size_t a = r.below(lines.size()), b = r.below(lines.size());
        if (r.below(2))
          std::swap(lines[a], lines[b]);
        else
          lines.insert(lines.begin() + static_cast<std::ptrdiff_t>(a), lines[b]);
        t.clear();
        for (auto& l : lines) t += l + "\n";
        break;
      }
    }
  }
  return t;
}

TEST(ConfigFuzz, MutatedConfigsParseOrThrowNeoxError) {
  const std::string base = read_file(kConfigs / "tiny-cpu.toml") +
                           "[plugins.kernels]\nmatmul = \"k\"\n"
                           "[plugins.options.cpu]\nthreads = 2\nnames = [\"a\", \"b\"]\n";
  ASSERT_NO_THROW(parse_config(base, "base.toml"));
  SplitMix r{42};
  int parsed = 0, rejected = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string text = mutate(base, r);
    try {
      parse_config(text, "m.toml");
      ++parsed;
    } catch (const neox::Error& e) {
      ++rejected;
      EXPECT_CONTAINS(e.what(), ("m.toml")) << "mutation " << i << ":\n" << text;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "mutation " << i << " threw " << e.what() << ":\n" << text;
    } catch (...) {
      ADD_FAILURE() << "mutation " << i << " threw a non-std exception:\n" << text;
    }
  }
  // Both outcomes occur, so the mutations neither all break nor all miss.
  EXPECT_GT(parsed, 100);
  EXPECT_GT(rejected, 100);
}

TEST(ConfigFuzz, MutatedOverridesParseOrThrowNeoxError) {
  const std::vector<std::string> seeds = {"model.hidden_size=512", "plugins.backend=cpu", "optimizer.betas=[0.9, 0.95]",
                                          "plugins.options.cpu.threads=2", "plugins.kernels.matmul=\"k\""};
  SplitMix r{7};
  for (int i = 0; i < 1000; ++i) {
    std::string o = mutate(seeds[r.below(seeds.size())], r);
    try {
      parse_config("", "m.toml", {o});
    } catch (const neox::Error&) {
    } catch (...) {
      ADD_FAILURE() << "override " << i << " threw something other than neox::Error: " << o;
    }
  }
}

}  // namespace
