// SPDX-License-Identifier: Apache-2.0
// PluginRegistry: discovery, loading on demand, the checks on each candidate
// (before and after dlopen, the ABI version of each kind, the kernel table),
// factory errors, NEOX_PLUGIN_PATH, object lifetimes and kernel overrides.
// The broken plugins it loads are built from tests/plugins into
// test_plugin_dir().
#include <gtest/gtest.h>

#include "test_support.h"

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "neox/backend.h"
#include "neox/communicator.h"
#include "neox/error.h"
#include "neox/optimizer.h"
#include "neox/options.h"
#include "neox/plugin.h"
#include "neox/registry.h"

namespace fs = std::filesystem;

namespace {

using neox::PluginInfo;
using neox::PluginKind;
using neox::PluginRegistry;
using neox::Tensor;

const std::string kBuildDir = neox::test::build_plugin_dir();
const std::string kTestDir = neox::test::test_plugin_dir();

std::string build_plugin(const std::string& file) { return (fs::path(kBuildDir) / file).string(); }
std::string test_plugin(const std::string& file) { return (fs::path(kTestDir) / file).string(); }
bool cpu_built() { return fs::exists(build_plugin("neox_backend_cpu.so")); }

std::string abi(std::uint32_t major, std::uint32_t minor) {
  return std::to_string(major) + "." + std::to_string(minor);
}

// "backend ABI 7.0": how the loader names a kind's version.
std::string kind_abi(PluginKind kind, std::uint32_t major, std::uint32_t minor) {
  return std::string(neox::plugin_kind_name(kind)) + " ABI " + abi(major, minor);
}
std::string kind_abi(PluginKind kind) {
  return kind_abi(kind, neox::abi_version(kind).major, neox::abi_version(kind).minor);
}
const neox::AbiVersion kBackend = neox::abi_version(PluginKind::backend);
const neox::AbiVersion kComm = neox::abi_version(PluginKind::comm);

using neox::test::error_of;
using neox::test::ScopedEnv;

std::string check_file_error(const std::string& path) {
  return error_of([&] { PluginRegistry::check_file(path); });
}

#define EXPECT_CONTAINS(haystack, needle)                                                                             \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "expected to find \"" << (needle) << "\" in:\n" \
                                                                   << (haystack)

// Every test runs without a NEOX_PLUGIN_PATH from the caller's environment.
class Registry : public ::testing::Test {
 protected:
  ScopedEnv no_path_{"NEOX_PLUGIN_PATH", nullptr};
};

const PluginInfo* find_info(const PluginRegistry& r, PluginKind kind, const std::string& name) {
  for (const auto& p : r.plugins())
    if (p.kind == kind && p.name == name) return &p;
  return nullptr;
}

const neox::PluginRejection* find_rejection(const PluginRegistry& r, const std::string& path) {
  for (const auto& x : r.rejected())
    if (x.path == path) return &x;
  return nullptr;
}

// Whether the library at `path` is loaded in this process (asks the dynamic
// loader, loading nothing). Tests use fresh copies, which no other test of
// the process can have loaded.
bool is_loaded(const std::string& path) {
  void* handle = ::dlopen(path.c_str(), RTLD_LAZY | RTLD_NOLOAD);
  if (handle) ::dlclose(handle);
  return handle != nullptr;
}

bool contains(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

// A fresh directory for one test, removed afterwards.
class TempDir {
 public:
  explicit TempDir(const std::string& tag)
      : path_(fs::temp_directory_path() / ("neox-registry-" + tag + "-" + std::to_string(::getpid()))) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string str() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  // Copies `from` in as `name` (a new file: another inode than the original).
  std::string copy(const std::string& from, const std::string& name) const {
    fs::copy_file(from, path_ / name, fs::copy_options::overwrite_existing);
    return file(name);
  }
  std::string write(const std::string& name, const std::string& bytes) const {
    std::ofstream(path_ / name, std::ios::binary) << bytes;
    return file(name);
  }

 private:
  fs::path path_;
};

TEST_F(Registry, SearchPathOrder) {
  PluginRegistry r({"/first", "", "/second"});
  const auto& paths = r.search_paths();
  ASSERT_GE(paths.size(), 3u);
  EXPECT_EQ(paths[0], "/first");
  EXPECT_EQ(paths[1], "/second");
  EXPECT_EQ(paths[2], kBuildDir);
}

TEST_F(Registry, ScansBuildDirectory) {
  PluginRegistry r;
  struct Expected {
    PluginKind kind;
    const char* name;
    const char* file;
  };
  std::vector<Expected> expected = {{PluginKind::comm, "local", "neox_comm_local.so"},
                                    {PluginKind::optimizer, "adamw", "neox_optimizer_adamw.so"}};
  if (cpu_built()) expected.push_back({PluginKind::backend, "cpu", "neox_backend_cpu.so"});
  for (const auto& e : expected) {
    const PluginInfo* info = find_info(r, e.kind, e.name);
    ASSERT_NE(info, nullptr) << e.name << " not found in " << kBuildDir;
    EXPECT_EQ(fs::path(info->path), fs::path(build_plugin(e.file)));
    EXPECT_FALSE(info->version.empty()) << e.name;
    EXPECT_FALSE(info->description.empty()) << e.name;
    // NEOX_PLUGIN records the version of the plugin's own kind.
    EXPECT_EQ(info->abi_major, neox::abi_version(e.kind).major) << e.name;
    EXPECT_EQ(info->abi_minor, neox::abi_version(e.kind).minor) << e.name;
    // find() gives the plugin the listing has (the same file and descriptor).
    const PluginInfo& found = r.find(e.kind, e.name);
    EXPECT_EQ(found.path, info->path);
    EXPECT_EQ(found.kind, info->kind);
    EXPECT_EQ(found.name, info->name);
    EXPECT_EQ(found.version, info->version);
  }
  EXPECT_EQ(find_info(r, PluginKind::comm, "local")->version, "1.0");
  EXPECT_EQ(find_info(r, PluginKind::optimizer, "adamw")->version, "1.0");
  // Nothing in the build tree's plugin directory is rejected, and nothing
  // from the test plugin directory is seen without being asked for.
  for (const auto& x : r.rejected()) {
    EXPECT_NE(fs::path(x.path).parent_path(), fs::path(kBuildDir)) << x.reason;
    EXPECT_EQ(x.path.find(kTestDir), std::string::npos) << x.path;
  }
  EXPECT_EQ(find_info(r, PluginKind::kernels, "test-gelu-tanh"), nullptr);
}

TEST_F(Registry, FindsCpuBackend) {
  if (!cpu_built()) GTEST_SKIP() << "neox_backend_cpu.so is not built";
  PluginRegistry r;
  const PluginInfo& info = r.find(PluginKind::backend, "cpu");
  EXPECT_EQ(fs::path(info.path), fs::path(build_plugin("neox_backend_cpu.so")));
  auto backend = r.make_backend("cpu", {}, {});
  EXPECT_TRUE(backend->device().is_cpu());
  EXPECT_TRUE(neox::kernel_ops_missing(backend->kernels).empty());
}

TEST_F(Registry, CheckFileAcceptsAValidPlugin) {
  PluginInfo info = PluginRegistry::check_file(build_plugin("neox_comm_local.so"));
  EXPECT_EQ(info.kind, PluginKind::comm);
  EXPECT_EQ(info.name, "local");
  EXPECT_EQ(info.abi_major, kComm.major);
  EXPECT_EQ(info.abi_minor, kComm.minor);
  EXPECT_EQ(info.path, build_plugin("neox_comm_local.so"));
  info = PluginRegistry::check_file(test_plugin("neox_kernels_test-gelu-tanh.so"));
  EXPECT_EQ(info.kind, PluginKind::kernels);
  EXPECT_EQ(info.name, "test-gelu-tanh");
}

TEST_F(Registry, CheckFileMissingEntrySymbol) {
  auto path = test_plugin("neox_backend_nosym.so");
  auto msg = check_file_error(path);
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, "missing entry symbol");
  EXPECT_CONTAINS(msg, NEOX_PLUGIN_ENTRY_SYMBOL);
}

TEST_F(Registry, CheckFileAbiMajor) {
  auto path = test_plugin("neox_backend_abi-major.so");
  auto msg = check_file_error(path);
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, "plugin's " + kind_abi(PluginKind::backend, kBackend.major + 1, kBackend.minor) +
                           " is incompatible with this neox (" + kind_abi(PluginKind::backend) + ";");
  EXPECT_CONTAINS(msg, "rebuild the plugin against this neox");
}

TEST_F(Registry, CheckFileAbiMinorNewerThanCore) {
  auto path = test_plugin("neox_backend_abi-minor.so");
  auto msg = check_file_error(path);
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, kind_abi(PluginKind::backend, kBackend.major, kBackend.minor + 1));
  EXPECT_CONTAINS(msg, "(" + kind_abi(PluginKind::backend) + "; needs the same major and a minor not above " +
                           std::to_string(kBackend.minor) + ")");
}

TEST_F(Registry, CheckFileBuiltAgainstAnotherKernelTable) {
  auto path = test_plugin("neox_backend_stale-kernels.so");
  auto msg = check_file_error(path);
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, "built against another kernel table");
  EXPECT_CONTAINS(msg, std::to_string(neox::kernel_table_fingerprint()));
  EXPECT_CONTAINS(msg, "rebuild the plugin");
}

TEST_F(Registry, CheckFileWrongKind) {
  auto path = test_plugin("neox_backend_x.so");
  auto msg = check_file_error(path);
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, "kind 'comm'");
  EXPECT_CONTAINS(msg, "name 'x'");
  EXPECT_CONTAINS(msg, "neox_comm_x.so");
}

TEST_F(Registry, CheckFileNameMismatch) {
  auto path = test_plugin("neox_comm_misnamed.so");
  auto msg = check_file_error(path);
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, "kind 'comm'");
  EXPECT_CONTAINS(msg, "name 'other'");
  EXPECT_CONTAINS(msg, "neox_comm_other.so");
}

TEST_F(Registry, CheckFileNotALibrary) {
  // A text file is refused by its first bytes, before dlopen.
  auto path = test_plugin("neox_backend_garbage.so");
  auto msg = check_file_error(path);
  EXPECT_CONTAINS(msg, path + ": not a shared library: it does not start with the ELF magic number");
  TempDir dir("empty");
  path = dir.write("neox_comm_empty.so", "");
  EXPECT_CONTAINS(check_file_error(path), path + ": not a shared library: the file is empty");
}

TEST_F(Registry, CheckFileTruncatedLibrary) {
  TempDir dir("truncated");
  std::ifstream in(build_plugin("neox_comm_local.so"), std::ios::binary);
  const std::string whole((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(whole.size(), 8192u);
  // Cut inside the ELF header, then after the headers but inside the
  // segments (dlopen would map it and fault on the missing pages).
  auto path = dir.write("neox_comm_cut.so", whole.substr(0, 20));
  auto msg = check_file_error(path);
  EXPECT_CONTAINS(msg, path + ": truncated shared library (20 bytes, shorter than an ELF header)");
  path = dir.write("neox_comm_half.so", whole.substr(0, whole.size() / 2));
  msg = check_file_error(path);
  EXPECT_CONTAINS(msg, path + ": truncated shared library (" + std::to_string(whole.size() / 2) + " bytes");
  EXPECT_CONTAINS(msg, "rebuild or reinstall it");
  EXPECT_FALSE(is_loaded(path));
  // An ELF file that is not a shared library: a relocatable object (e_type 1,
  // little-endian, as on every machine neox builds for).
  path = dir.write("neox_comm_object.so", whole.substr(0, 16) + std::string("\x01\x00", 2) + std::string(62, '\0'));
  EXPECT_CONTAINS(check_file_error(path), path + ": not a shared library: a relocatable object (.o)");
}

TEST_F(Registry, CheckFileWhatIsNotARegularFile) {
  TempDir dir("special");
  const auto fifo = dir.file("neox_comm_fifo.so");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto sub = dir.file("neox_comm_dir.so");
  fs::create_directory(sub);
  // Opening a FIFO for reading blocks until a writer comes: these return.
  EXPECT_CONTAINS(check_file_error(fifo), fifo + ": not a regular file (a FIFO): a plugin is a shared library");
  EXPECT_CONTAINS(check_file_error(sub), sub + ": not a regular file (a directory)");
  // In a search directory they are candidates like any file named so, and rejected.
  PluginRegistry r({dir.str()});
  EXPECT_TRUE(contains(r.candidates(PluginKind::comm), "fifo"));
  auto msg = error_of([&] { r.make_comm("fifo", neox::Options()); });
  EXPECT_CONTAINS(msg, "no comm plugin named 'fifo'");
  EXPECT_CONTAINS(msg, "rejected " + fifo + ": not a regular file (a FIFO)");
  const auto* rejection = find_rejection(r, sub);
  ASSERT_NE(rejection, nullptr);
  EXPECT_CONTAINS(rejection->reason, "not a regular file (a directory)");
  EXPECT_NE(find_rejection(r, fifo), nullptr);
}

TEST_F(Registry, CheckFileLoaderRefusesTheLibrary) {
  // A well-formed library that dlopen refuses: the loader's message comes through.
  auto path = test_plugin("neox_comm_undefined-symbol.so");
  auto msg = check_file_error(path);
  EXPECT_CONTAINS(msg, path + ": cannot load library: ");
  EXPECT_CONTAINS(msg, "undefined symbol: neox_test_undefined_variable");
}

TEST_F(Registry, CheckFileEntrySymbolThrows) {
  auto path = test_plugin("neox_comm_entry-throws-std.so");
  EXPECT_CONTAINS(check_file_error(path), path + ": entry symbol '" NEOX_PLUGIN_ENTRY_SYMBOL
                                                 "' threw: test entry fails with a std::runtime_error");
  path = test_plugin("neox_comm_entry-throws.so");
  EXPECT_CONTAINS(check_file_error(path), path + ": entry symbol '" NEOX_PLUGIN_ENTRY_SYMBOL
                                                 "' threw an exception that is not a std::exception");
}

TEST_F(Registry, CheckFileMissingFile) {
  auto path = test_plugin("neox_backend_does-not-exist.so");
  auto msg = check_file_error(path);
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, "no such file");
}

TEST_F(Registry, ListsRejectedTestPluginsWithReasons) {
  PluginRegistry r({kTestDir});
  ASSERT_EQ(r.search_paths().front(), kTestDir);
  struct Case {
    const char* file;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {"neox_backend_nosym.so", "missing entry symbol"},
      {"neox_backend_abi-major.so", kind_abi(PluginKind::backend, kBackend.major + 1, kBackend.minor)},
      {"neox_backend_abi-minor.so", kind_abi(PluginKind::backend, kBackend.major, kBackend.minor + 1)},
      {"neox_comm_abi-major.so", kind_abi(PluginKind::comm, kComm.major + 1, 0)},
      {"neox_backend_stale-kernels.so", "built against another kernel table"},
      {"neox_optimizer_stale-kernels.so", "built against another kernel table"},
      {"neox_backend_x.so", "neox_comm_x.so"},
      {"neox_comm_misnamed.so", "neox_comm_other.so"},
      {"neox_backend_garbage.so", "not a shared library"},
      {"neox_comm_undefined-symbol.so", "cannot load library"},
      {"neox_comm_entry-throws.so", "not a std::exception"},
      {"neox_comm_entry-throws-std.so", "threw: "},
  };
  for (const auto& c : cases) {
    const auto* rejection = find_rejection(r, test_plugin(c.file));
    ASSERT_NE(rejection, nullptr) << c.file << " was not rejected";
    EXPECT_CONTAINS(rejection->reason, test_plugin(c.file));
    EXPECT_CONTAINS(rejection->reason, c.reason);
  }
  // Rejected plugins are not usable; valid ones next to them are.
  EXPECT_EQ(find_info(r, PluginKind::backend, "abi-major"), nullptr);
  EXPECT_EQ(find_info(r, PluginKind::comm, "x"), nullptr);
  EXPECT_EQ(find_info(r, PluginKind::comm, "other"), nullptr);
  for (const char* name : {"throws-error", "throws-std", "null-factory", "stale-kernels"})
    EXPECT_NE(find_info(r, PluginKind::comm, name), nullptr) << name;
  const PluginInfo* gelu = find_info(r, PluginKind::kernels, "test-gelu-tanh");
  ASSERT_NE(gelu, nullptr);
  EXPECT_EQ(gelu->path, test_plugin("neox_kernels_test-gelu-tanh.so"));
  // The build directory is still searched after the given paths.
  EXPECT_NE(find_info(r, PluginKind::comm, "local"), nullptr);
}

TEST_F(Registry, FindUnknownNameListsWhatWasFound) {
  PluginRegistry r;
  auto msg = error_of([&] { r.find(PluginKind::comm, "nccl-typo"); });
  EXPECT_CONTAINS(msg, "no comm plugin named 'nccl-typo'");
  EXPECT_CONTAINS(msg, "found: ");
  EXPECT_CONTAINS(msg, "local");
  EXPECT_CONTAINS(msg, kBuildDir);
  msg = error_of([&] { r.make_optimizer("sgd", neox::Options()); });
  EXPECT_CONTAINS(msg, "no optimizer plugin named 'sgd'");
  EXPECT_CONTAINS(msg, "adamw");
  msg = error_of([&] { r.find(PluginKind::tokenizer, "none-here"); });
  EXPECT_CONTAINS(msg, "none of that kind was found");
}

TEST_F(Registry, FindRejectedNameGivesTheReason) {
  PluginRegistry r({kTestDir});
  auto msg = error_of([&] { r.find(PluginKind::backend, "abi-major"); });
  EXPECT_CONTAINS(msg, "no backend plugin named 'abi-major'");
  EXPECT_CONTAINS(msg, "rejected");
  EXPECT_CONTAINS(msg, kind_abi(PluginKind::backend, kBackend.major + 1, kBackend.minor));
}

TEST_F(Registry, FactoryErrorsAreWrappedWithThePluginName) {
  PluginRegistry r({kTestDir});
  auto msg = error_of([&] { r.make_comm("throws-error", neox::Options()); });
  EXPECT_CONTAINS(msg, "comm plugin 'throws-error'");
  EXPECT_CONTAINS(msg, "test factory refuses: bad option 'x'");
  msg = error_of([&] { r.make_comm("throws-std", neox::Options()); });
  EXPECT_CONTAINS(msg, "comm plugin 'throws-std'");
  EXPECT_CONTAINS(msg, "test factory failed with a std::runtime_error");
  msg = error_of([&] { r.make_comm("null-factory", neox::Options()); });
  EXPECT_CONTAINS(msg, "null-factory");
  EXPECT_CONTAINS(msg, "returned null");
  // The registry is still usable after a factory failed.
  EXPECT_EQ(r.make_comm("local", neox::Options())->size(), 1);
}

TEST_F(Registry, HonoursPluginPathEnvironment) {
  {
    ScopedEnv env("NEOX_PLUGIN_PATH", ("/nonexistent-neox-dir::" + kTestDir).c_str());
    PluginRegistry r({"/manifest-dir"});
    const auto& paths = r.search_paths();
    ASSERT_GE(paths.size(), 4u);
    EXPECT_EQ(paths[0], "/manifest-dir");
    EXPECT_EQ(paths[1], "/nonexistent-neox-dir");
    EXPECT_EQ(paths[2], kTestDir);
    EXPECT_EQ(paths[3], kBuildDir);
    const PluginInfo* gelu = find_info(r, PluginKind::kernels, "test-gelu-tanh");
    ASSERT_NE(gelu, nullptr);
    EXPECT_EQ(gelu->path, test_plugin("neox_kernels_test-gelu-tanh.so"));
  }
  ::unsetenv("NEOX_PLUGIN_PATH");
  PluginRegistry r;
  EXPECT_EQ(find_info(r, PluginKind::kernels, "test-gelu-tanh"), nullptr);
  for (const auto& p : r.search_paths()) EXPECT_NE(p, kTestDir);
}

TEST_F(Registry, FirstMatchInSearchOrderWinsAndLaterOnesAreShadowed) {
  fs::path dir = fs::temp_directory_path() / ("neox-registry-test-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::copy_file(build_plugin("neox_comm_local.so"), dir / "neox_comm_local.so", fs::copy_options::overwrite_existing);
  {
    PluginRegistry r({dir.string()});
    const PluginInfo& local = r.find(PluginKind::comm, "local");
    EXPECT_EQ(local.path, (dir / "neox_comm_local.so").string());
    const auto* shadowed = find_rejection(r, build_plugin("neox_comm_local.so"));
    ASSERT_NE(shadowed, nullptr);
    EXPECT_CONTAINS(shadowed->reason, "shadowed");
    EXPECT_EQ(r.make_comm("local", neox::Options())->rank(), 0);
  }
  fs::remove_all(dir);
}

TEST_F(Registry, ObjectsOutliveTheRegistry) {
  auto registry = std::make_unique<PluginRegistry>();
  std::shared_ptr<neox::Communicator> comm = registry->make_comm("local", neox::Options());
  std::shared_ptr<neox::Optimizer> opt = registry->make_optimizer("adamw", neox::Options());
  registry.reset();
  // The plugins' code is still mapped: virtual calls and their errors work.
  EXPECT_EQ(comm->name(), "local");
  EXPECT_EQ(comm->size(), 1);
  Tensor t = Tensor::zeros_host({3}, neox::DType::f32);
  t.ptr<float>()[2] = 4.5f;
  comm->all_reduce(t, neox::ReduceOp::sum);
  EXPECT_EQ(t.ptr<float>()[2], 4.5f);
  comm->barrier();
  auto msg = error_of([&] { comm->send(t, 1, 0); });
  EXPECT_CONTAINS(msg, "no peers");
  EXPECT_EQ(opt->name(), "adamw");
  EXPECT_EQ(opt->state_bytes(), 0);
  comm.reset();  // the libraries stay loaded (pinned) after their last object
  opt.reset();
}

// ---------------------------------------------------------------- one ABI version per kind

TEST_F(Registry, EachKindHasItsOwnAbiVersion) {
  static_assert(neox::abi_version(PluginKind::kernels) == neox::abi_version(PluginKind::backend),
                "backend and kernels share the Backend and its kernel table, and one version");
  EXPECT_EQ(neox::abi_version(PluginKind::backend), neox::kBackendAbi);
  EXPECT_EQ(neox::abi_version(PluginKind::comm), neox::kCommAbi);
  EXPECT_EQ(neox::abi_version(PluginKind::optimizer), neox::kOptimizerAbi);
  EXPECT_EQ(neox::abi_version(PluginKind::data), neox::kDataAbi);
  EXPECT_EQ(neox::abi_version(PluginKind::tokenizer), neox::kTokenizerAbi);
  EXPECT_EQ(neox::abi_version(static_cast<PluginKind>(99)).major, 0u);
  // Every plugin built before the versions were split (at the single ABI 6.0) still loads.
  for (PluginKind kind : neox::kPluginKinds) EXPECT_GE(neox::abi_version(kind).major, 6u) << plugin_kind_name(kind);
  // The kernel table is checked where the kind's plugins index it.
  for (PluginKind kind : {PluginKind::backend, PluginKind::kernels, PluginKind::optimizer})
    EXPECT_TRUE(neox::uses_kernel_table(kind)) << plugin_kind_name(kind);
  for (PluginKind kind : {PluginKind::comm, PluginKind::data, PluginKind::tokenizer})
    EXPECT_FALSE(neox::uses_kernel_table(kind)) << plugin_kind_name(kind);
}

// A comm plugin built at ABI 6.0, before the optimizer's ABI went to 7.0,
// the backend's to 6.1 and the kernel table last changed (its descriptor
// says comm 6.0 and has another table's fingerprint), loads and works:
// with one version for every kind it would have been refused. A backend or
// an optimizer with that fingerprint is refused.
TEST_F(Registry, CommBuiltAgainstAnotherKernelTableLoadsAndWorks) {
  PluginInfo info = PluginRegistry::check_file(test_plugin("neox_comm_stale-kernels.so"));
  EXPECT_EQ(info.kind, PluginKind::comm);
  EXPECT_EQ(info.name, "stale-kernels");
  EXPECT_EQ(abi(info.abi_major, info.abi_minor), "6.0");
  EXPECT_GT(neox::kOptimizerAbi.major, 6u) << "another kind's major has moved on since 6.0";
  EXPECT_FALSE(neox::kBackendAbi == (neox::AbiVersion{6, 0})) << "and the backend's minor";
  PluginRegistry r({kTestDir});
  auto comm = r.make_comm("stale-kernels", neox::Options());
  ASSERT_NE(comm, nullptr);
  EXPECT_EQ(comm->name(), "stale-kernels");
  EXPECT_EQ(comm->size(), 1);
  Tensor in = Tensor::zeros_host({4}, neox::DType::f32), out = Tensor::zeros_host({4}, neox::DType::f32);
  in.ptr<float>()[3] = 2.5f;
  comm->all_reduce(in, neox::ReduceOp::sum);
  comm->all_gather(in, out);
  EXPECT_EQ(out.ptr<float>()[3], 2.5f);
  EXPECT_CONTAINS(error_of([&] { comm->send(in, 1, 0); }), "no peers");
}

TEST_F(Registry, OptimizerBuiltAgainstAnotherKernelTableIsRefused) {
  auto path = test_plugin("neox_optimizer_stale-kernels.so");
  auto msg = check_file_error(path);
  EXPECT_CONTAINS(msg, path + ": plugin was built against another kernel table");
  EXPECT_CONTAINS(msg, "rebuild the plugin against this neox");
  PluginRegistry r({kTestDir});
  msg = error_of([&] { r.make_optimizer("stale-kernels", neox::Options()); });
  EXPECT_CONTAINS(msg, "no optimizer plugin named 'stale-kernels'");
  EXPECT_CONTAINS(msg, "rejected " + path + ": plugin was built against another kernel table");
}

// The comm plugin's major is above the comm version (as a plugin built for
// another kind's newer version would carry): refused, in comm terms, whatever
// the other kinds' versions are.
TEST_F(Registry, AbiIsCheckedAgainstThePluginsOwnKind) {
  auto path = test_plugin("neox_comm_abi-major.so");
  auto msg = check_file_error(path);
  EXPECT_CONTAINS(msg, path + ": plugin's " + kind_abi(PluginKind::comm, kComm.major + 1, 0) +
                           " is incompatible with this neox (" + kind_abi(PluginKind::comm) +
                           "; needs the same major and a minor not above " + std::to_string(kComm.minor) +
                           "): rebuild the plugin against this neox");
  PluginRegistry r({kTestDir});
  msg = error_of([&] { r.make_comm("abi-major", neox::Options()); });
  EXPECT_CONTAINS(msg, "no comm plugin named 'abi-major'");
  EXPECT_CONTAINS(msg, kind_abi(PluginKind::comm, kComm.major + 1, 0));
  // The backend of the same name is another candidate: not loaded for a comm.
  EXPECT_EQ(msg.find("neox_backend_abi-major.so"), std::string::npos) << msg;
}

// ---------------------------------------------------------------- loading on demand

// Asking for one plugin loads the candidates named for it and nothing else;
// the full listing loads and checks the rest.
TEST_F(Registry, LoadsOnlyThePluginAskedFor) {
  TempDir dir("on-demand");
  const auto local = dir.copy(build_plugin("neox_comm_local.so"), "neox_comm_local.so");
  const auto broken = dir.copy(test_plugin("neox_backend_abi-major.so"), "neox_backend_abi-major.so");
  const auto other = dir.copy(test_plugin("neox_comm_throws-error.so"), "neox_comm_throws-error.so");
  const auto garbage = dir.write("neox_data_garbage.so", "not a library\n");
  PluginRegistry r({dir.str()});
  // Listing the candidates reads file names only.
  EXPECT_TRUE(contains(r.candidates(PluginKind::backend), "abi-major"));
  EXPECT_TRUE(contains(r.candidates(PluginKind::data), "garbage"));
  EXPECT_FALSE(is_loaded(local));
  EXPECT_FALSE(is_loaded(broken));

  auto comm = r.make_comm("local", neox::Options());
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(r.find(PluginKind::comm, "local").path, local);
  EXPECT_TRUE(is_loaded(local));
  EXPECT_FALSE(is_loaded(broken));  // neither loaded nor rejected
  EXPECT_FALSE(is_loaded(other));

  // The full listing: every candidate loaded and checked, in search order.
  const auto* rejection = find_rejection(r, broken);
  ASSERT_NE(rejection, nullptr);
  EXPECT_CONTAINS(rejection->reason, kind_abi(PluginKind::backend, kBackend.major + 1, kBackend.minor));
  ASSERT_NE(find_rejection(r, garbage), nullptr);
  EXPECT_CONTAINS(find_rejection(r, garbage)->reason, "not a shared library");
  EXPECT_TRUE(is_loaded(broken));  // loaded to be checked, and pinned
  EXPECT_TRUE(is_loaded(other));
  const PluginInfo* listed = find_info(r, PluginKind::comm, "throws-error");
  ASSERT_NE(listed, nullptr);
  EXPECT_EQ(listed->path, other);
  // The build tree's `local`, after the one in dir, is shadowed.
  const auto* shadowed = find_rejection(r, build_plugin("neox_comm_local.so"));
  ASSERT_NE(shadowed, nullptr);
  EXPECT_CONTAINS(shadowed->reason, "shadowed by an earlier comm plugin 'local'");
  EXPECT_CONTAINS(shadowed->reason, local);
  // find() after the listing gives the same plugin.
  EXPECT_EQ(r.find(PluginKind::comm, "local").path, local);
}

// A rejected candidate is recorded and the next one named for the plugin is tried.
TEST_F(Registry, FirstAcceptedCandidateWins) {
  TempDir dir("first-accepted");
  const auto broken = dir.write("neox_comm_local.so", "a text file where neox_comm_local.so was\n");
  PluginRegistry r({dir.str()});
  auto comm = r.make_comm("local", neox::Options());
  EXPECT_EQ(comm->name(), "local");
  EXPECT_EQ(fs::path(r.find(PluginKind::comm, "local").path), fs::path(build_plugin("neox_comm_local.so")));
  const auto* rejection = find_rejection(r, broken);
  ASSERT_NE(rejection, nullptr);
  EXPECT_CONTAINS(rejection->reason, broken + ": not a shared library");
  // Not shadowed: the one in the build tree is the accepted one.
  EXPECT_EQ(find_rejection(r, build_plugin("neox_comm_local.so")), nullptr);
}

// candidates() reads the names of the files, once each, without loading;
// a file whose name does not parse as neox_<kind>_<name>.so is no candidate
// of any kind, but the full listing checks it and says why it is refused.
TEST_F(Registry, CandidatesAreNamedByTheirFiles) {
  TempDir dir("names");
  const auto local = dir.copy(build_plugin("neox_comm_local.so"), "neox_comm_local.so");
  const auto unknown_kind = dir.copy(build_plugin("neox_comm_local.so"), "neox_widget_local.so");
  const auto no_name = dir.copy(build_plugin("neox_comm_local.so"), "neox_local.so");
  PluginRegistry r({dir.str(), kTestDir});
  const auto comms = r.candidates(PluginKind::comm);
  EXPECT_EQ(std::count(comms.begin(), comms.end(), "local"), 1);
  EXPECT_EQ(comms.front(), "local");  // search order
  for (const char* name : {"misnamed", "throws-error", "stale-kernels", "abi-major"})
    EXPECT_TRUE(contains(comms, name)) << name;
  EXPECT_FALSE(contains(comms, "other"));  // the descriptor's name: unknown until loaded
  const auto backends = r.candidates(PluginKind::backend);
  for (const char* name : {"abi-major", "garbage", "x", "nosym"}) EXPECT_TRUE(contains(backends, name)) << name;
  if (cpu_built()) {
    EXPECT_TRUE(contains(backends, "cpu"));
  }
  EXPECT_EQ(r.candidates(PluginKind::tokenizer), std::vector<std::string>{"test-words"});
  EXPECT_FALSE(is_loaded(local));
  EXPECT_FALSE(is_loaded(unknown_kind));

  for (const auto& path : {unknown_kind, no_name}) {
    const auto* rejection = find_rejection(r, path);
    ASSERT_NE(rejection, nullptr) << path;
    EXPECT_CONTAINS(rejection->reason, path +
                                           ": file name does not match the plugin's descriptor (kind 'comm', "
                                           "name 'local' must be in a file named neox_comm_local.so)");
  }
}

// Exact and tanh-approximation GeLU.
double gelu_erf(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
double gelu_tanh(double x) {
  const double k = std::sqrt(2.0 / 3.14159265358979323846);
  return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}

std::vector<float> run_gelu(neox::Backend& backend, const std::vector<float>& x) {
  Tensor in = backend.to_device(
      Tensor::wrap(const_cast<float*>(x.data()), {static_cast<std::int64_t>(x.size())}, neox::DType::f32));
  Tensor out = Tensor::empty(&backend, in.shape(), neox::DType::f32);
  backend.kernels.gelu_forward(out, in);
  Tensor host = backend.to_host(out);
  return std::vector<float>(host.ptr<float>(), host.ptr<float>() + host.numel());
}

std::vector<float> run_gelu_backward(neox::Backend& backend, const std::vector<float>& x) {
  const std::int64_t n = static_cast<std::int64_t>(x.size());
  Tensor in = backend.to_device(Tensor::wrap(const_cast<float*>(x.data()), {n}, neox::DType::f32));
  Tensor dout = Tensor::empty(&backend, {n}, neox::DType::f32);
  backend.kernels.fill(dout, 1.0f);
  Tensor din = Tensor::empty(&backend, {n}, neox::DType::f32);
  backend.kernels.gelu_backward(din, in, dout);
  Tensor host = backend.to_host(din);
  return std::vector<float>(host.ptr<float>(), host.ptr<float>() + host.numel());
}

TEST_F(Registry, KernelOverrideReplacesOnlyTheNamedOp) {
  if (!cpu_built()) GTEST_SKIP() << "neox_backend_cpu.so is not built";
  auto registry = std::make_unique<PluginRegistry>(std::vector<std::string>{kTestDir});
  auto plain = registry->make_backend("cpu", {}, {});
  auto mixed = registry->make_backend("cpu", {{"gelu_forward", "test-gelu-tanh"}}, {});
  registry.reset();  // the backend keeps its provider and both libraries

  std::vector<float> x;
  for (int i = -40; i <= 40; ++i) x.push_back(static_cast<float>(i) * 0.1f);
  auto y_plain = run_gelu(*plain, x);
  auto y_mixed = run_gelu(*mixed, x);
  double max_diff_from_erf = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    EXPECT_NEAR(y_mixed[i], gelu_tanh(x[i]), 1e-6) << "x = " << x[i];
    EXPECT_NEAR(y_plain[i], gelu_erf(x[i]), 1e-5) << "x = " << x[i];
    max_diff_from_erf = std::max(max_diff_from_erf, std::abs(y_mixed[i] - gelu_erf(x[i])));
  }
  EXPECT_GT(max_diff_from_erf, 1e-4) << "the override did not run";
  // Every other op is still the cpu backend's own.
  EXPECT_EQ(run_gelu_backward(*mixed, x), run_gelu_backward(*plain, x));
  for (auto op : neox::kernel_op_names()) EXPECT_TRUE(neox::kernel_op_present(mixed->kernels, op)) << op;
  EXPECT_EQ(mixed->name(), plain->name());
}

TEST_F(Registry, KernelOverrideErrors) {
  if (!cpu_built()) GTEST_SKIP() << "neox_backend_cpu.so is not built";
  PluginRegistry r({kTestDir});
  auto msg = error_of([&] { r.make_backend("cpu", {{"gelu_fwd", "test-gelu-tanh"}}, {}); });
  EXPECT_CONTAINS(msg, "unknown kernel operation 'gelu_fwd'");
  EXPECT_CONTAINS(msg, "gelu_forward");  // the known names are listed
  msg = error_of([&] { r.make_backend("cpu", {{"matmul", "test-gelu-tanh"}}, {}); });
  EXPECT_CONTAINS(msg, "test-gelu-tanh");
  EXPECT_CONTAINS(msg, "does not provide operation 'matmul'");
  msg = error_of([&] { r.make_backend("cpu", {{"gelu_forward", "no-such-provider"}}, {}); });
  EXPECT_CONTAINS(msg, "no kernels plugin named 'no-such-provider'");
  EXPECT_CONTAINS(msg, "test-gelu-tanh");  // what was found
  msg = error_of([&] { r.make_backend("cpu", {{"gelu_forward", "test-cuda-only"}}, {}); });
  EXPECT_CONTAINS(msg, "test-cuda-only");
  EXPECT_CONTAINS(msg, "another device");
  // The provider's options come from the options map, by plugin name.
  neox::Options typo("plugins.options.test-gelu-tanh");
  typo.set("fast", true);
  msg = error_of([&] { r.make_backend("cpu", {{"gelu_forward", "test-gelu-tanh"}}, {{"test-gelu-tanh", typo}}); });
  EXPECT_CONTAINS(msg, "kernels plugin 'test-gelu-tanh'");
  EXPECT_CONTAINS(msg, "plugins.options.test-gelu-tanh.fast");
}

}  // namespace
