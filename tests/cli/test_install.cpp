// SPDX-License-Identifier: Apache-2.0
// Plugin discovery of an installed neox (core/src/runtime/registry.cpp): the
// registry searches the plugin directory of the running libneox.so, the build
// tree's plugins/ only when the library is the build tree's own. Here a copy
// of this build's neox and libneox in the install layout (<prefix>/bin/neox,
// <prefix>/lib/libneox.so.N, <prefix>/lib/neox/plugins) must list the plugins
// of the prefix and nothing of the build tree, with no NEOX_PLUGIN_PATH.
//
// The whole installation (cmake --install, a plugin built out of tree against
// it, training and `neox bench op` with it) is the ctest
// Install.OutOfTreePlugin (packaging/package-check.sh, label `install`).
#include <unistd.h>

#include <filesystem>
#include <string>

#include "test_support.h"

namespace fs = std::filesystem;
using neox::test::build_plugin_dir;
using neox::test::neox_binary;
using neox::test::run_command;

namespace {

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "in: " << (haystack)
#define EXPECT_LACKS(haystack, needle) \
  EXPECT_EQ(std::string(haystack).find(needle), std::string::npos) << "in: " << (haystack)

class InstalledLayout : public ::testing::Test {
 protected:
  void SetUp() override {
    prefix_ = fs::temp_directory_path() / ("neox-install-layout-" + std::to_string(::getpid()));
    fs::remove_all(prefix_);
    fs::create_directories(prefix_ / "bin");
    fs::create_directories(prefix_ / "lib" / "neox" / "plugins");
    const fs::path bin = fs::canonical(neox_binary());
    // The library the binary was linked with, under its SONAME (libneox.so.N).
    const fs::path lib_dir = bin.parent_path().parent_path() / "lib";
    fs::path soname;
    for (const auto& e : fs::directory_iterator(lib_dir)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("libneox.so.", 0) == 0 && (soname.empty() || name.size() < soname.filename().string().size()))
        soname = e.path();
    }
    ASSERT_FALSE(soname.empty()) << "no libneox.so.N in " << lib_dir;
    fs::copy_file(bin, prefix_ / "bin" / "neox");
    fs::copy_file(fs::canonical(soname), prefix_ / "lib" / soname.filename());
    fs::copy_file(fs::path(build_plugin_dir()) / "neox_comm_local.so",
                  prefix_ / "lib" / "neox" / "plugins" / "neox_comm_local.so");
  }
  void TearDown() override { fs::remove_all(prefix_); }
  fs::path prefix_;
};

TEST_F(InstalledLayout, SearchesItsOwnPluginDirectoryAndNotTheBuildTree) {
  const auto r =
      run_command("env -u NEOX_PLUGIN_PATH -u LD_LIBRARY_PATH " + (prefix_ / "bin" / "neox").string() + " plugins");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string own = (prefix_ / "lib" / "neox" / "plugins").string();
  EXPECT_CONTAINS(r.output, "search path: " + own + "\n");
  EXPECT_CONTAINS(r.output, "comm\tlocal\t");
  EXPECT_CONTAINS(r.output, own + "/neox_comm_local.so\n");
  // Only what the prefix holds: the build tree's cpu backend and optimizers are not found.
  EXPECT_LACKS(r.output, build_plugin_dir());
  EXPECT_LACKS(r.output, "neox_optimizer_adamw.so");
}

TEST_F(InstalledLayout, PluginPathComesBeforeItsOwnDirectory) {
  const auto r =
      run_command("NEOX_PLUGIN_PATH=" + build_plugin_dir() + " " + (prefix_ / "bin" / "neox").string() + " plugins");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string own = (prefix_ / "lib" / "neox" / "plugins").string();
  EXPECT_CONTAINS(r.output, "search path: " + build_plugin_dir() + " " + own + "\n");
  // The build tree's copy of `local` wins; the prefix's is reported as shadowed.
  EXPECT_CONTAINS(r.output, build_plugin_dir() + "/neox_comm_local.so\n");
  EXPECT_CONTAINS(r.output, "shadowed");
}

}  // namespace
