// SPDX-License-Identifier: Apache-2.0
// The layering rule of docs/architecture.md, checked over the source tree:
// who may include what.
//
//   SDK      core/include/neox/*.h and core/src/runtime/: the SDK only
//   text     neox/text/, core/src/text/:   SDK, text
//   model    neox/model/, core/src/model/: SDK, model
//   io       neox/io/, core/src/io/:       SDK, model, io
//   train    neox/train/, core/src/train/: SDK, text, model, io, train
//   apps/    anything
//   plugins/, examples/, tests/plugins/: the SDK only, except the library
//            headers listed in kPluginExceptions (in-tree plugins built and
//            shipped with the same libneox)
//
// A quoted include that does not start with "neox/" must name a file in the
// including file's own folder (no reaching into another folder's internals).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "test_support.h"

namespace fs = std::filesystem;

namespace {

const fs::path kRoot = neox::test::source_dir();

// "neox/model/gpt_neox.h" -> "model"; "neox/tensor.h" -> "sdk".
std::string group_of_include(const std::string& include) {
  const std::string rest = include.substr(5);  // after "neox/"
  const auto slash = rest.find('/');
  return slash == std::string::npos ? "sdk" : rest.substr(0, slash);
}

// The library headers an in-tree plugin may include, and why.
const std::map<std::string, std::set<std::string>> kPluginExceptions = {
    // The mmap data source reads Megatron indexed datasets with the reader
    // `neox preprocess` and `neox data` use.
    {"plugins/data-mmap", {"neox/io/indexed_dataset.h"}},
    // The fixed data source reads its batches from a safetensors file.
    {"plugins/data-fixed", {"neox/io/safetensors.h"}},
};

struct Include {
  int line;
  std::string name;
};

std::vector<Include> quoted_includes(const fs::path& file) {
  static const std::regex include(R"re(^\s*#\s*include\s*"([^"]+)")re");
  std::vector<Include> out;
  std::ifstream in(file);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    std::smatch m;
    if (std::regex_search(line, m, include)) out.push_back({n, m[1]});
  }
  return out;
}

bool is_source(const fs::path& p) {
  const std::string e = p.extension().string();
  return e == ".h" || e == ".cpp" || e == ".cu" || e == ".cuh";
}

// Every source file under `dir` (relative to the source tree).
std::vector<fs::path> sources(const std::string& dir, bool recursive = true) {
  std::vector<fs::path> out;
  if (!fs::is_directory(kRoot / dir)) return out;
  if (recursive) {
    for (const auto& e : fs::recursive_directory_iterator(kRoot / dir))
      if (e.is_regular_file() && is_source(e.path())) out.push_back(e.path());
  } else {
    for (const auto& e : fs::directory_iterator(kRoot / dir))
      if (e.is_regular_file() && is_source(e.path())) out.push_back(e.path());
  }
  return out;
}

// Checks the files' includes against the groups they may use; returns one
// line per violation.
std::vector<std::string> violations(const std::vector<fs::path>& files, const std::set<std::string>& allowed,
                                    const std::set<std::string>& extra = {}) {
  std::vector<std::string> bad;
  for (const auto& f : files) {
    for (const auto& inc : quoted_includes(f)) {
      const std::string where = fs::relative(f, kRoot).string() + ":" + std::to_string(inc.line) + ": ";
      if (inc.name.rfind("neox/", 0) == 0) {
        if (!allowed.count(group_of_include(inc.name)) && !extra.count(inc.name))
          bad.push_back(where + inc.name + " (group " + group_of_include(inc.name) + ")");
      } else if (!fs::exists(f.parent_path() / inc.name) || inc.name.find("..") != std::string::npos) {
        bad.push_back(where + inc.name + " is not a file of this folder");
      }
    }
  }
  return bad;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += "\n  " + l;
  return s;
}

TEST(Layering, TheSdkIncludesOnlyTheSdk) {
  const auto headers = sources("core/include/neox", false);
  ASSERT_GE(headers.size(), 15u) << "the SDK headers are not where the test looks: " << kRoot;
  auto bad = violations(headers, {"sdk"});
  auto runtime = violations(sources("core/src/runtime"), {"sdk"});
  bad.insert(bad.end(), runtime.begin(), runtime.end());
  EXPECT_TRUE(bad.empty()) << "SDK files including library headers:" << joined(bad);
}

TEST(Layering, LibraryGroupsIncludeOnlyTheGroupsBelowThem) {
  const std::map<std::string, std::set<std::string>> may_include = {
      {"text", {"sdk", "text"}},
      {"model", {"sdk", "model"}},
      {"io", {"sdk", "model", "io"}},
      {"train", {"sdk", "text", "model", "io", "train"}},
  };
  for (const auto& [group, allowed] : may_include) {
    auto files = sources("core/include/neox/" + group);
    const auto src = sources("core/src/" + group);
    files.insert(files.end(), src.begin(), src.end());
    EXPECT_FALSE(files.empty()) << group;
    const auto bad = violations(files, allowed);
    EXPECT_TRUE(bad.empty()) << "group " << group << " includes what it may not:" << joined(bad);
  }
  // Every library file is in a group.
  for (const auto& e : fs::directory_iterator(kRoot / "core/src"))
    EXPECT_TRUE(e.is_directory()) << e.path() << ": core/src holds only the group folders";
}

TEST(Layering, PluginsIncludeOnlyTheSdkUnlessListed) {
  std::vector<std::string> bad;
  std::set<std::string> used_exceptions;
  for (const auto& dir : {std::string("plugins"), std::string("examples"), std::string("tests/plugins")}) {
    for (const auto& e : fs::directory_iterator(kRoot / dir)) {
      if (!e.is_directory()) continue;
      const std::string rel = fs::relative(e.path(), kRoot).string();
      std::set<std::string> extra;
      if (auto it = kPluginExceptions.find(rel); it != kPluginExceptions.end()) extra = it->second;
      const auto v = violations(sources(rel), {"sdk"}, extra);
      bad.insert(bad.end(), v.begin(), v.end());
      for (const auto& f : sources(rel))
        for (const auto& inc : quoted_includes(f))
          if (extra.count(inc.name)) used_exceptions.insert(rel + " " + inc.name);
    }
  }
  EXPECT_TRUE(bad.empty()) << "plugins including library headers (list an in-tree exception in "
                              "tests/unit/test_layering.cpp and docs/architecture.md, or use the SDK):"
                           << joined(bad);
  // A listed exception that nothing uses any more is removed from the list.
  for (const auto& [dir, headers] : kPluginExceptions)
    for (const auto& h : headers)
      EXPECT_TRUE(used_exceptions.count(dir + " " + h)) << dir << " no longer includes " << h;
}

// The rule itself is checked: a file that breaks it is reported.
TEST(Layering, AViolationIsReported) {
  const std::string dir = neox::test::temp_dir("layering", "bad");
  fs::create_directories(dir);
  std::ofstream(dir + "/bad.h") << "#pragma once\n#include \"neox/tensor.h\"\n#include \"neox/train/trainer.h\"\n"
                                << "#include \"../elsewhere.h\"\n";
  const auto bad = violations({fs::path(dir) / "bad.h"}, {"sdk"});
  ASSERT_EQ(bad.size(), 2u) << joined(bad);
  EXPECT_NE(bad[0].find(":3: neox/train/trainer.h (group train)"), std::string::npos) << bad[0];
  EXPECT_NE(bad[1].find(":4: ../elsewhere.h is not a file of this folder"), std::string::npos) << bad[1];
  fs::remove_all(dir);
}

}  // namespace
