// SPDX-License-Identifier: Apache-2.0
// The cuda backend plugin itself (plugins/backend-cuda): loading, options, the
// missing-device error, and on a GPU the allocator, memory statistics,
// copies, argument and CUDA error messages, timing, and what the kernel
// suite (test_kernels.cpp, f32) does not cover: bit-exact dtype conversion,
// fills of every dtype, and matmul with bf16/f16 inputs.
//
// Where the plugin is not built every test skips. Without a GPU the tests
// that need one skip (NEOX_TEST_REQUIRE_CUDA=1 turns those skips into
// failures); the others check that the plugin loads and that making the
// backend throws neox::DeviceUnavailable saying that there is no CUDA device.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "neox/backend.h"
#include "neox/dtype.h"
#include "neox/error.h"
#include "neox/options.h"
#include "neox/plugin.h"
#include "neox/registry.h"
#include "neox/tensor.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace {

using neox::DType;
using neox::Shape;
using neox::Tensor;

std::string plugin_path() { return (fs::path(neox::test::build_plugin_dir()) / "neox_backend_cuda.so").string(); }

bool plugin_built() {
  std::error_code ec;
  return fs::exists(plugin_path(), ec);
}

bool nvidia_device_present() {
  std::error_code ec;
  return fs::exists("/dev/nvidia0", ec) || fs::exists("/dev/nvidiactl", ec);
}

bool require_cuda() {
  const char* v = std::getenv("NEOX_TEST_REQUIRE_CUDA");
  return v && *v && std::string(v) != "0";
}

#define SKIP_UNLESS_PLUGIN_BUILT()                                                                       \
  do {                                                                                                   \
    if (!plugin_built())                                                                                 \
      GTEST_SKIP() << "the cuda plugin is not built (no " << plugin_path()                               \
                   << "; configure with -DNEOX_WITH_CUDA=ON where nvcc and the CUDA toolkit are found)"; \
  } while (0)

// The plugin's factory called directly (not through the registry, which may
// rewrap its exceptions), so that the exception type can be checked.
neox::BackendFactory direct_factory() {
  void* handle = dlopen(plugin_path().c_str(), RTLD_NOW | RTLD_LOCAL);  // kept loaded
  if (!handle) throw std::runtime_error(std::string("dlopen: ") + dlerror());
  auto entry = reinterpret_cast<const neox::PluginDescriptor* (*)()>(dlsym(handle, NEOX_PLUGIN_ENTRY_SYMBOL));
  if (!entry) throw std::runtime_error("no " NEOX_PLUGIN_ENTRY_SYMBOL " in " + plugin_path());
  return reinterpret_cast<neox::BackendFactory>(const_cast<void*>(entry()->factory));
}

// The backend for the GPU tests, once for the program, or why there is none.
// Never destroyed: a CUDA backend torn down during static destruction may run
// after the CUDA runtime has shut down.
struct CudaSetup {
  std::unique_ptr<neox::PluginRegistry> registry;
  std::shared_ptr<neox::Backend> backend;
  std::string unavailable;  // skip reason
  std::string error;        // making the backend failed for another reason
};

const CudaSetup& cuda_setup() {
  static const CudaSetup* s = [] {
    auto* st = new CudaSetup;
    if (!plugin_built()) {
      st->unavailable = "the cuda plugin is not built";
      return st;
    }
    try {
      st->registry = std::make_unique<neox::PluginRegistry>(std::vector<std::string>{neox::test::build_plugin_dir()});
      st->backend = st->registry->make_backend("cuda", {}, {});
    } catch (const neox::DeviceUnavailable& e) {
      st->unavailable = std::string("no usable GPU: ") + e.what();
    } catch (const neox::Error& e) {
      // The registry may rewrap the factory's DeviceUnavailable as a plain Error.
      const std::string what = e.what();
      if (what.find("no CUDA device") != std::string::npos || !nvidia_device_present())
        st->unavailable = "no usable GPU: " + what;
      else
        st->error = what;
    }
    return st;
  }();
  return *s;
}

#define REQUIRE_GPU()                                                                        \
  do {                                                                                       \
    const CudaSetup& s_ = cuda_setup();                                                      \
    if (!s_.error.empty()) FAIL() << "making the cuda backend failed: " << s_.error;         \
    if (!s_.backend) {                                                                       \
      if (require_cuda()) FAIL() << "NEOX_TEST_REQUIRE_CUDA is set, but " << s_.unavailable; \
      GTEST_SKIP() << s_.unavailable;                                                        \
    }                                                                                        \
  } while (0)

// Runs fn and expects a neox::Error whose message contains every fragment.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& fragments) {
  const std::string msg = neox::test::error_of(fn);
  for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
}

template <typename T>
Tensor to_dev(neox::Backend& be, std::vector<T>& host, Shape shape, DType dtype) {
  return be.to_device(Tensor::wrap(host.data(), std::move(shape), dtype));
}

template <typename T>
std::vector<T> from_dev(neox::Backend& be, const Tensor& t) {
  Tensor h = be.to_host(t);
  const T* p = h.ptr<T>();
  return std::vector<T>(p, p + h.numel());
}

float bits_to_float(std::uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// ------------------------------------------------------------------ no GPU needed

TEST(CudaBackend, PluginLoadsAndDescribesItself) {
  SKIP_UNLESS_PLUGIN_BUILT();
  // Loading must not need a driver (the runtime is linked statically and
  // loads libcuda.so.1 lazily).
  neox::PluginInfo info = neox::PluginRegistry::check_file(plugin_path());
  EXPECT_EQ(info.kind, neox::PluginKind::backend);
  EXPECT_EQ(info.name, "cuda");
}

TEST(CudaBackend, FactoryThrowsDeviceUnavailableWithoutGpu) {
  SKIP_UNLESS_PLUGIN_BUILT();
  neox::BackendFactory factory = direct_factory();
  neox::Options options("plugins.options.cuda");
  try {
    std::unique_ptr<neox::Backend> be(factory(options));
    ASSERT_NE(be, nullptr);
    EXPECT_EQ(be->name(), "cuda");
    GTEST_SKIP() << "a CUDA device is available (" << neox::device_name(be->device()) << ")";
  } catch (const neox::DeviceUnavailable& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cuda backend"), std::string::npos) << msg;
    if (!nvidia_device_present()) {
      EXPECT_NE(msg.find("no CUDA device"), std::string::npos) << msg;
    }
  }
}

TEST(CudaBackend, RegistryReportsMissingDevice) {
  SKIP_UNLESS_PLUGIN_BUILT();
  if (nvidia_device_present()) GTEST_SKIP() << "this machine has an NVIDIA device";
  neox::PluginRegistry registry({neox::test::build_plugin_dir()});
  expect_error([&] { registry.make_backend("cuda", {}, {}); }, {"cuda", "no CUDA device"});
}

TEST(CudaBackend, RejectsUnknownOptions) {
  SKIP_UNLESS_PLUGIN_BUILT();
  // Options are read before the device is looked for: this runs without a GPU.
  neox::BackendFactory factory = direct_factory();
  neox::Options options("plugins.options.cuda");
  options.set("workspace_mb", std::int64_t{16});
  options.set("alow_tf32", true);
  try {
    std::unique_ptr<neox::Backend> be(factory(options));
    ADD_FAILURE() << "expected an error for the unknown option alow_tf32";
  } catch (const neox::DeviceUnavailable& e) {
    ADD_FAILURE() << "options must be checked before the device: " << e.what();
  } catch (const neox::Error& e) {
    EXPECT_NE(std::string(e.what()).find("alow_tf32"), std::string::npos) << e.what();
  }
}

TEST(CudaBackend, RejectsABadLocalRank) {
  SKIP_UNLESS_PLUGIN_BUILT();
  neox::BackendFactory factory = direct_factory();
  const char* old = std::getenv("LOCAL_RANK");
  const std::string saved = old ? old : "";
  setenv("LOCAL_RANK", "two", 1);
  std::string msg;
  try {
    std::unique_ptr<neox::Backend> be(factory(neox::Options("plugins.options.cuda")));
  } catch (const neox::DeviceUnavailable& e) {
    msg = std::string("DeviceUnavailable: ") + e.what();
  } catch (const neox::Error& e) {
    msg = e.what();
  }
  if (old)
    setenv("LOCAL_RANK", saved.c_str(), 1);
  else
    unsetenv("LOCAL_RANK");
  EXPECT_NE(msg.find("LOCAL_RANK='two'"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("DeviceUnavailable"), std::string::npos) << msg;
}

// ------------------------------------------------------------------ on a GPU

TEST(CudaBackend, AllocatorReusesFreedBlocks) {
  REQUIRE_GPU();
  neox::Backend& be = *cuda_setup().backend;
  const std::size_t bytes = (3u << 20) + 123;
  void* a = be.allocate(bytes);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a) % 256, 0u);
  const auto before = be.memory_stats();
  be.deallocate(a, bytes);
  EXPECT_EQ(be.memory_stats().in_use, before.in_use - bytes);
  EXPECT_EQ(be.memory_stats().reserved, before.reserved) << "a freed block stays cached";
  void* b = be.allocate(bytes);
  EXPECT_EQ(a, b) << "a freed block of the same size must be reused";
  const auto after = be.memory_stats();
  EXPECT_EQ(after.reserved, before.reserved) << "reusing a cached block must not reserve more";
  EXPECT_EQ(after.in_use, before.in_use);
  be.deallocate(b, bytes);
  // Small sizes, including 0, give distinct usable blocks.
  void* z = be.allocate(0);
  void* one = be.allocate(1);
  EXPECT_NE(z, nullptr);
  EXPECT_NE(one, nullptr);
  EXPECT_NE(z, one);
  be.deallocate(z, 0);
  be.deallocate(one, 1);
}

TEST(CudaBackend, MemoryStatsTrackPeak) {
  REQUIRE_GPU();
  neox::Backend& be = *cuda_setup().backend;
  be.synchronize();
  be.reset_peak_memory();
  const auto base = be.memory_stats();
  EXPECT_EQ(base.peak_in_use, base.in_use);
  EXPECT_GE(base.reserved, base.in_use);
  // in_use counts the bytes asked for (not the rounded blocks); reserved
  // what the allocator got from cudaMalloc.
  const std::size_t big = (64u << 20) + 100, small = (16u << 20) + 7;
  void* a = be.allocate(big);
  void* b = be.allocate(small);
  auto s = be.memory_stats();
  EXPECT_EQ(s.in_use, base.in_use + big + small);
  EXPECT_EQ(s.peak_in_use, base.in_use + big + small);
  EXPECT_GE(s.reserved, s.in_use);
  be.deallocate(a, big);
  s = be.memory_stats();
  EXPECT_EQ(s.in_use, base.in_use + small);
  EXPECT_EQ(s.peak_in_use, base.in_use + big + small);  // the peak stays until reset
  EXPECT_GE(s.reserved, base.reserved);
  be.deallocate(b, small);
  s = be.memory_stats();
  EXPECT_EQ(s.in_use, base.in_use);
  EXPECT_EQ(s.peak_in_use, base.in_use + big + small);
  be.reset_peak_memory();
  EXPECT_EQ(be.memory_stats().peak_in_use, base.in_use);
}

TEST(CudaBackend, CopiesRoundTrip) {
  REQUIRE_GPU();
  neox::Backend& be = *cuda_setup().backend;
  EXPECT_EQ(be.name(), "cuda");
  EXPECT_EQ(be.device().type, neox::DeviceType::cuda);
  std::vector<float> host(100003);
  for (std::size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>(i) * 0.5f - 7.0f;
  Tensor d1 = to_dev(be, host, {static_cast<std::int64_t>(host.size())}, DType::f32);
  EXPECT_EQ(d1.device(), be.device());
  Tensor d2 = Tensor::empty(&be, d1.shape(), DType::f32);
  be.copy_tensor(d2, d1);  // device -> device, queued on the stream
  std::vector<float> back = from_dev<float>(be, d2);
  EXPECT_EQ(back, host);
  // Host -> host through the backend, and a zero-byte copy.
  std::vector<float> other(host.size());
  be.copy(other.data(), neox::Device{}, host.data(), neox::Device{}, host.size() * sizeof(float));
  EXPECT_EQ(other, host);
  be.copy(d2.data(), d2.device(), host.data(), neox::Device{}, 0);
  // Another device index is refused.
  expect_error(
      [&] {
        be.copy(d2.data(), neox::Device{neox::DeviceType::cuda, be.device().index + 1}, host.data(), neox::Device{}, 4);
      },
      {"cuda backend", "cannot copy"});
}

TEST(CudaBackend, RejectsHostTensors) {
  REQUIRE_GPU();
  neox::Backend& be = *cuda_setup().backend;
  std::vector<float> x(16, 1.0f);
  Tensor host = Tensor::wrap(x.data(), {16}, DType::f32);
  Tensor dev = to_dev(be, x, {16}, DType::f32);
  Tensor out = Tensor::empty(&be, {16}, DType::f32);
  expect_error([&] { be.kernels.add(out, host, dev); }, {"add: a f32[16] on cpu is not on cuda:", "to_device"});
  expect_error([&] { be.kernels.gelu_forward(host, dev); }, {"gelu_forward: out", "is not on cuda:"});
  Tensor c = Tensor::empty(&be, {4, 4}, DType::f32);
  Tensor a = Tensor::empty(&be, {4, 3}, DType::f32);
  expect_error(
      [&] {
        be.kernels.matmul(c, a, dev.view({4, 4}), false, false, 1.0f, 0.0f);
      },
      {"matmul: op(b) = b is [4, 4]"});
}

TEST(CudaBackend, FailedAllocationNamesTheSize) {
  REQUIRE_GPU();
  neox::Backend& be = *cuda_setup().backend;
  const std::size_t absurd = std::size_t{1} << 50;  // 1 PiB
  const auto before = be.memory_stats();
  expect_error([&] { be.allocate(absurd); },
               {"cuda backend", "cuda:", std::to_string(absurd), "in use", "reserved", "cudaMalloc"});
  // The backend keeps working afterwards.
  std::vector<float> x(8, 3.0f);
  Tensor d = to_dev(be, x, {8}, DType::f32);
  EXPECT_EQ(from_dev<float>(be, d), x);
  EXPECT_LE(be.memory_stats().reserved, before.reserved + (4u << 20));
}

TEST(CudaBackend, TimeRunsReturnsDeviceTimes) {
  REQUIRE_GPU();
  neox::Backend& be = *cuda_setup().backend;
  Tensor t = Tensor::empty(&be, {16 << 20}, DType::f32);
  std::vector<double> ms = be.time_runs([&] { be.kernels.fill(t, 1.5f); }, 2, 3);
  ASSERT_EQ(ms.size(), 3u);
  for (double m : ms) {
    EXPECT_GT(m, 0.0);
    EXPECT_LT(m, 10000.0);
  }
  EXPECT_EQ(be.kernels.sum(t), 1.5 * (16 << 20));
  EXPECT_TRUE(be.time_runs([] {}, 0, 0).empty());
}

TEST(CudaBackend, ConvertIsBitExactWithTheHost) {
  REQUIRE_GPU();
  neox::Backend& be = *cuda_setup().backend;
  // Every bf16 and f16 bit pattern to f32.
  std::vector<std::uint16_t> all(65536);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::uint16_t>(i);
  Tensor f32 = Tensor::empty(&be, {65536}, DType::f32);
  for (DType dt : {DType::bf16, DType::f16}) {
    Tensor h = to_dev(be, all, {65536}, dt);
    be.kernels.convert(f32, h);
    std::vector<std::uint32_t> got = from_dev<std::uint32_t>(be, f32);
    int bad = 0;
    for (std::size_t i = 0; i < all.size() && bad < 5; ++i) {
      const float want = dt == DType::bf16 ? neox::bf16_to_float(all[i]) : neox::f16_to_float(all[i]);
      std::uint32_t want_bits;
      std::memcpy(&want_bits, &want, 4);
      if (got[i] != want_bits) {
        ++bad;
        ADD_FAILURE() << neox::dtype_name(dt) << " 0x" << std::hex << all[i] << " -> f32 0x" << got[i] << ", host 0x"
                      << want_bits;
      }
    }
  }
  // f32 to bf16 and f16: special values, halfway cases, subnormals, and random bit patterns.
  std::vector<std::uint32_t> bits = {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00001u,
                                     0x7f800001u, 0x7fbfffffu, 0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0x00000001u,
                                     0x807fffffu, 0x477ff000u, 0x477fefffu, 0x477fe000u, 0x33000000u, 0x33000001u,
                                     0x38800000u, 0x387fffffu, 0x38000000u, 0x7f7fffffu, 0x3f800000u, 0xc0490fdbu};
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; ++i) bits.push_back(static_cast<std::uint32_t>(rng()));
  const auto n = static_cast<std::int64_t>(bits.size());
  Tensor src = to_dev(be, bits, {n}, DType::f32);
  for (DType dt : {DType::bf16, DType::f16}) {
    Tensor out = Tensor::empty(&be, {n}, dt);
    be.kernels.convert(out, src);
    std::vector<std::uint16_t> got = from_dev<std::uint16_t>(be, out);
    int bad = 0;
    for (std::size_t i = 0; i < bits.size() && bad < 5; ++i) {
      const float f = bits_to_float(bits[i]);
      const std::uint16_t want = dt == DType::bf16 ? neox::float_to_bf16(f) : neox::float_to_f16(f);
      if (got[i] != want) {
        ++bad;
        ADD_FAILURE() << "f32 0x" << std::hex << bits[i] << " -> " << neox::dtype_name(dt) << " 0x" << got[i]
                      << ", host 0x" << want;
      }
    }
  }
  // bf16 -> f16 goes through f32, as on the host.
  Tensor b = to_dev(be, all, {65536}, DType::bf16);
  Tensor h = Tensor::empty(&be, {65536}, DType::f16);
  be.kernels.convert(h, b);
  std::vector<std::uint16_t> got = from_dev<std::uint16_t>(be, h);
  for (std::size_t i = 0; i < all.size(); ++i)
    if (got[i] != neox::float_to_f16(neox::bf16_to_float(all[i]))) {
      ADD_FAILURE() << "bf16 0x" << std::hex << all[i] << " -> f16 0x" << got[i];
      break;
    }
}

TEST(CudaBackend, FillsEveryDtype) {
  REQUIRE_GPU();
  neox::Backend& be = *cuda_setup().backend;
  const float value = -1.3f;
  Tensor t32 = Tensor::empty(&be, {1001}, DType::f32);
  Tensor t64 = Tensor::empty(&be, {1001}, DType::f64);
  Tensor tb = Tensor::empty(&be, {1001}, DType::bf16);
  Tensor th = Tensor::empty(&be, {1001}, DType::f16);
  be.kernels.fill(t32, value);
  be.kernels.fill(t64, value);
  be.kernels.fill(tb, value);
  be.kernels.fill(th, value);
  for (float v : from_dev<float>(be, t32)) ASSERT_EQ(v, value);
  for (double v : from_dev<double>(be, t64)) ASSERT_EQ(v, static_cast<double>(value));
  for (std::uint16_t v : from_dev<std::uint16_t>(be, tb)) ASSERT_EQ(v, neox::float_to_bf16(value));
  for (std::uint16_t v : from_dev<std::uint16_t>(be, th)) ASSERT_EQ(v, neox::float_to_f16(value));
  Tensor ti = Tensor::empty(&be, {4}, DType::i32);
  expect_error([&] { be.kernels.fill(ti, 1.0f); }, {"fill: t", "must be f32, f64, bf16 or f16"});
  // Reductions of bf16 / f16 accumulate in double.
  EXPECT_NEAR(be.kernels.sum(tb), 1001.0 * neox::bf16_to_float(neox::float_to_bf16(value)), 1e-9);
  EXPECT_NEAR(be.kernels.sum_squares(th),
              1001.0 * std::pow(static_cast<double>(neox::f16_to_float(neox::float_to_f16(value))), 2), 1e-9);
}

TEST(CudaBackend, KernelArgumentErrorsNameThePosition) {
  REQUIRE_GPU();
  neox::Backend& be = *cuda_setup().backend;
  std::vector<std::int32_t> ids = {1, 2, 0, 7, 3, -1};
  Tensor dids = to_dev(be, ids, {2, 3}, DType::i32);
  Tensor table = Tensor::empty(&be, {5, 4}, DType::f32);
  be.kernels.fill(table, 1.0f);
  Tensor out = Tensor::empty(&be, {6, 4}, DType::f32);
  expect_error([&] { be.kernels.embedding_forward(out, dids, table, false); },
               {"embedding_forward: id 7 at position 3 (row 1, column 0)", "[0, 5)"});
  std::vector<std::int32_t> targets = {2, -1, 9, 11};
  Tensor dt = to_dev(be, targets, {4}, DType::i32);
  Tensor logits = Tensor::empty(&be, {4, 10}, DType::f32);
  be.kernels.fill(logits, 0.5f);
  Tensor losses = Tensor::empty(&be, {4}, DType::f32);
  Tensor lse = Tensor::empty(&be, {4}, DType::f32);
  expect_error([&] { be.kernels.cross_entropy_forward(losses, lse, logits, dt); },
               {"cross_entropy_forward: target 11 in row 3", "[0, 10)"});
  // The backend works on after a kernel-side error.
  targets[3] = 4;
  Tensor ok = to_dev(be, targets, {4}, DType::i32);
  be.kernels.cross_entropy_forward(losses, lse, logits, ok);
  std::vector<float> l = from_dev<float>(be, losses);
  EXPECT_NEAR(l[0], std::log(10.0), 1e-5);
  EXPECT_EQ(l[1], 0.0f);
}

// bf16 / f16 inputs with f32 accumulation into an f32 c (weight gradients)
// or a c of the input dtype; beta = 0 ignores NaN in c.
TEST(CudaBackend, MatmulMixedPrecision) {
  REQUIRE_GPU();
  neox::Backend& be = *cuda_setup().backend;
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const std::int64_t M = 37, N = 53, K = 70;
  for (DType dt : {DType::bf16, DType::f16}) {
    auto round = [&](float f) {
      return dt == DType::bf16 ? neox::bf16_to_float(neox::float_to_bf16(f))
                               : neox::f16_to_float(neox::float_to_f16(f));
    };
    auto encode = [&](float f) { return dt == DType::bf16 ? neox::float_to_bf16(f) : neox::float_to_f16(f); };
    auto decode = [&](std::uint16_t h) { return dt == DType::bf16 ? neox::bf16_to_float(h) : neox::f16_to_float(h); };
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        std::vector<float> a(static_cast<std::size_t>(M * K)), b(static_cast<std::size_t>(K * N));
        for (auto& x : a) x = round(dist(rng));
        for (auto& x : b) x = round(dist(rng));
        std::vector<std::uint16_t> a16(a.size()), b16(b.size());
        for (std::size_t i = 0; i < a.size(); ++i) a16[i] = encode(a[i]);
        for (std::size_t i = 0; i < b.size(); ++i) b16[i] = encode(b[i]);
        // a is [M,K] or [K,M] (ta), stored row-major; element (m, k) of op(a):
        auto A = [&](std::int64_t m, std::int64_t k) { return ta ? a[k * M + m] : a[m * K + k]; };
        auto B = [&](std::int64_t k, std::int64_t n) { return tb ? b[n * K + k] : b[k * N + n]; };
        Tensor da = to_dev(be, a16, ta ? Shape{K, M} : Shape{M, K}, dt);
        Tensor db = to_dev(be, b16, tb ? Shape{N, K} : Shape{K, N}, dt);
        std::vector<float> c0(static_cast<std::size_t>(M * N));
        for (auto& x : c0) x = dist(rng);
        Tensor c32 = to_dev(be, c0, {M, N}, DType::f32);
        be.kernels.matmul(c32, da, db, ta, tb, 0.5f, 1.0f);  // accumulate into f32
        std::vector<std::uint16_t> nan16(static_cast<std::size_t>(M * N), encode(std::nanf("")));
        Tensor c16 = to_dev(be, nan16, {M, N}, dt);
        be.kernels.matmul(c16, da, db, ta, tb, 1.0f, 0.0f);  // overwrite NaNs
        std::vector<float> got32 = from_dev<float>(be, c32);
        std::vector<std::uint16_t> got16 = from_dev<std::uint16_t>(be, c16);
        double num32 = 0, den32 = 0, num16 = 0, den16 = 0;
        for (std::int64_t m = 0; m < M; ++m)
          for (std::int64_t n = 0; n < N; ++n) {
            double s = 0;
            for (std::int64_t k = 0; k < K; ++k) s += static_cast<double>(A(m, k)) * B(k, n);
            const std::size_t i = static_cast<std::size_t>(m * N + n);
            const double want32 = 0.5 * s + c0[i];
            num32 += (got32[i] - want32) * (got32[i] - want32);
            den32 += want32 * want32;
            const double g16 = decode(got16[i]);
            num16 += (g16 - s) * (g16 - s);
            den16 += s * s;
          }
        EXPECT_LT(std::sqrt(num32 / den32), 1e-5) << neox::dtype_name(dt) << " -> f32, trans " << ta << tb;
        EXPECT_LT(std::sqrt(num16 / den16), 1e-2)
            << neox::dtype_name(dt) << " -> " << neox::dtype_name(dt) << ", trans " << ta << tb;
      }
  }
  // a and b must share a dtype; c is theirs or f32.
  Tensor a = Tensor::empty(&be, {4, 4}, DType::bf16);
  Tensor b = Tensor::empty(&be, {4, 4}, DType::f16);
  Tensor c = Tensor::empty(&be, {4, 4}, DType::f16);
  expect_error([&] { be.kernels.matmul(c, a, b, false, false, 1.0f, 0.0f); }, {"matmul: b", "must be bf16"});
  Tensor b2 = Tensor::empty(&be, {4, 4}, DType::bf16);
  expect_error([&] { be.kernels.matmul(c, a, b2, false, false, 1.0f, 0.0f); }, {"matmul: c", "or f32"});
}

// [plugins.kernels] gelu_forward = "test-cuda-gelu-tanh": a CUDA kernels
// plugin (tests/plugins/cuda) replaces one op of the cuda backend and runs on
// its stream, in order with the backend's own kernels, in every dtype.
TEST(CudaBackend, KernelOverrideFromTheManifestRunsOnTheGpu) {
  REQUIRE_GPU();
  neox::PluginRegistry registry({neox::test::test_plugin_dir(), neox::test::build_plugin_dir()});
  auto be = registry.make_backend("cuda", {{"gelu_forward", "test-cuda-gelu-tanh"}}, {});
  const auto& plain = *cuda_setup().backend;
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  std::vector<float> x(1 << 16);
  for (auto& v : x) v = dist(rng);
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(std::string(neox::dtype_name(dt)));
    Tensor host = Tensor::wrap(x.data(), {static_cast<std::int64_t>(x.size())}, DType::f32);
    Tensor in32 = be->to_device(host);
    Tensor in = Tensor::empty(be.get(), in32.shape(), dt), out = Tensor::empty(be.get(), in32.shape(), dt);
    be->kernels.convert(in, in32);
    be->kernels.fill(out, std::nanf(""));  // every element must be written
    be->kernels.gelu_forward(out, in);     // the plugin's kernel, on the backend's stream
    Tensor out32 = Tensor::empty(be.get(), in32.shape(), DType::f32);
    be->kernels.convert(out32, out);  // the backend's kernel, after it
    Tensor got = be->to_host(out32), rounded_in = Tensor::empty(be.get(), in32.shape(), DType::f32);
    be->kernels.convert(rounded_in, in);
    Tensor xin = be->to_host(rounded_in);
    double num = 0, den = 0, exact_num = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double v = xin.ptr<float>()[i];
      const double tanh_gelu = 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
      const double erf_gelu = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
      const double g = got.ptr<float>()[i];
      num += (g - tanh_gelu) * (g - tanh_gelu);
      exact_num += (g - erf_gelu) * (g - erf_gelu);
      den += tanh_gelu * tanh_gelu;
    }
    const double tol = dt == DType::f32 ? 1e-6 : dt == DType::bf16 ? 1e-2 : 2e-3;
    EXPECT_LT(std::sqrt(num / den), tol) << "the override's tanh GeLU";
    if (dt == DType::f32) {
      EXPECT_GT(std::sqrt(exact_num / den), 1e-5) << "the exact GeLU ran, not the override";
    }
  }
  EXPECT_NE(&plain, be.get());
}

}  // namespace
