// SPDX-License-Identifier: Apache-2.0
#include "neox/registry.h"

#include <spdlog/spdlog.h>

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <cstdlib>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

#include "neox/backend.h"
#include "neox/communicator.h"
#include "neox/data_source.h"
#include "neox/error.h"
#include "neox/optimizer.h"
#include "neox/tokenizer.h"

namespace fs = std::filesystem;

namespace neox {

struct LoadedPlugin {
  boost::dll::shared_library library;
  const PluginDescriptor* descriptor = nullptr;
};

namespace {

constexpr const char* kPrefix = "neox_";

std::string abi_str(std::uint32_t major, std::uint32_t minor) {
  return std::to_string(major) + "." + std::to_string(minor);
}

// The directory holding the libneox.so this code was loaded from
// (canonical), or empty when the loader cannot say.
fs::path core_library_dir() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<const void*>(&core_library_dir), &info) == 0 || !info.dli_fname || !*info.dli_fname)
    return {};
  std::error_code ec;
  fs::path lib = fs::weakly_canonical(fs::path(info.dli_fname), ec);
  return ec ? fs::path() : lib.parent_path();
}

// The plugin directory that belongs to the running libneox.so: the build
// tree's plugins/ when it is the build tree's library (<build>/lib), else the
// install layout <libdir>/neox/plugins next to it, so that an installed neox
// never loads plugins of a build tree that happens to exist on the machine,
// and any program linking an installed libneox finds the installed plugins.
// Without dladdr's answer: the install layout relative to the executable,
// <prefix>/bin/neox -> <prefix>/<libdir>/neox/plugins.
std::string own_plugin_dir() {
  const fs::path lib = core_library_dir();
  if (lib.empty()) {
    boost::system::error_code ec;
    auto exe = boost::dll::program_location(ec);
    if (ec) return {};
    return (fs::path(exe.string()).parent_path().parent_path() / NEOX_INSTALL_PLUGIN_DIR).string();
  }
  std::error_code ec;
  if (fs::equivalent(lib, fs::path(NEOX_BUILD_LIB_DIR), ec)) return NEOX_BUILD_PLUGIN_DIR;
  return (lib / NEOX_PLUGIN_SUBDIR).string();
}

const char* file_type(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "a special file";
}

std::string elf_type_name(unsigned type) {
  switch (type) {
    case ET_REL:
      return "a relocatable object (.o)";
    case ET_EXEC:
      return "an executable";
    case ET_CORE:
      return "a core dump";
    default:
      return "ELF type " + std::to_string(type);
  }
}

// Checks, without loading it, that `path` is something dlopen can be given:
// a regular file (dlopen blocks on a FIFO until a writer comes, and reads a
// device), an ELF shared object of this machine's class, byte order and
// architecture, whose program headers and loadable segments lie within the
// file (dlopen maps a truncated library, and touching a page past the end
// of the file kills the process with SIGBUS). Anything else is refused here
// with a reason the loader would not give.
void check_loadable(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) throw Error(path + ": no such file");
    throw Error(path + ": cannot read: " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode))
    throw Error(path + ": not a regular file (" + file_type(st.st_mode) + "): a plugin is a shared library");
  // O_NONBLOCK: should the file have become a FIFO since stat, open returns
  // at once; fstat below then refuses it.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
    throw Error(path + ": not a regular file: a plugin is a shared library");
  const auto size = static_cast<std::uint64_t>(st.st_size);
  auto read_at = [&](void* buf, std::size_t bytes, std::uint64_t offset) {
    std::size_t got = 0;
    while (got < bytes) {
      const ssize_t n = ::pread(fd, static_cast<char*>(buf) + got, bytes - got, static_cast<off_t>(offset + got));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw Error(path + ": cannot read: " + std::strerror(errno));
      if (n == 0) break;
      got += static_cast<std::size_t>(n);
    }
    return got;
  };

  ElfW(Ehdr) eh{};
  const std::size_t got = read_at(&eh, sizeof eh, 0);
  if (got < SELFMAG || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
    throw Error(path + ": not a shared library: " +
                (size == 0 ? std::string("the file is empty")
                           : "it does not start with the ELF magic number (a text file, a linker script or "
                             "another format)"));
  const std::string truncated = ": truncated shared library (" + std::to_string(size) + " bytes";
  if (got < sizeof eh) throw Error(path + truncated + ", shorter than an ELF header): rebuild or reinstall it");
  constexpr unsigned char elf_class = sizeof(void*) == 8 ? ELFCLASS64 : ELFCLASS32;
  if (eh.e_ident[EI_CLASS] != elf_class)
    throw Error(path + ": not a shared library for this machine: a " +
                (eh.e_ident[EI_CLASS] == ELFCLASS32   ? "32"
                 : eh.e_ident[EI_CLASS] == ELFCLASS64 ? "64"
                                                      : "?") +
                "-bit ELF file, this neox is " + std::to_string(sizeof(void*) * 8) + "-bit");
  constexpr unsigned char elf_data = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? ELFDATA2LSB : ELFDATA2MSB;
  if (eh.e_ident[EI_DATA] != elf_data)
    throw Error(path + ": not a shared library for this machine: ELF file of the other byte order");
  if (eh.e_type != ET_DYN)
    throw Error(path + ": not a shared library: " + elf_type_name(eh.e_type) + " (build plugins as MODULE libraries)");
#if defined(__x86_64__)
  constexpr unsigned machine = EM_X86_64;
#elif defined(__aarch64__)
  constexpr unsigned machine = EM_AARCH64;
#elif defined(__powerpc64__)
  constexpr unsigned machine = EM_PPC64;
#else
  constexpr unsigned machine = 0;  // unknown here: left to dlopen
#endif
  if (machine != 0 && eh.e_machine != machine)
    throw Error(path + ": not a shared library for this machine: built for ELF machine " +
                std::to_string(eh.e_machine) + ", this neox for " + std::to_string(machine));
  if (eh.e_phentsize != sizeof(ElfW(Phdr)) || eh.e_phnum == 0)
    throw Error(path + ": not a loadable shared library: it has no valid program headers");
  const std::uint64_t ph_end = static_cast<std::uint64_t>(eh.e_phoff) + std::uint64_t{eh.e_phnum} * sizeof(ElfW(Phdr));
  if (ph_end > size)
    throw Error(path + truncated + "; its program headers end at byte " + std::to_string(ph_end) +
                "): rebuild or reinstall it");
  std::vector<ElfW(Phdr)> ph(eh.e_phnum);
  if (read_at(ph.data(), ph.size() * sizeof(ElfW(Phdr)), eh.e_phoff) != ph.size() * sizeof(ElfW(Phdr)))
    throw Error(path + truncated + "): rebuild or reinstall it");
  std::uint64_t needed = 0;
  for (const auto& h : ph)
    if (h.p_type == PT_LOAD) needed = std::max<std::uint64_t>(needed, std::uint64_t{h.p_offset} + h.p_filesz);
  if (needed > size)
    throw Error(path + truncated + "; its segments need " + std::to_string(needed) +
                " bytes): rebuild or reinstall it");
}

// Loads `path`, checks its descriptor, and fills `info`.
std::shared_ptr<LoadedPlugin> load_checked(const std::string& path, PluginInfo& info) {
  check_loadable(path);
  auto loaded = std::make_shared<LoadedPlugin>();
  auto& lib = loaded->library;
  boost::system::error_code ec;
  lib.load(path, boost::dll::load_mode::rtld_lazy | boost::dll::load_mode::rtld_local, ec);
  if (ec) {
    const char* msg = dlerror();  // Boost's error code loses the loader's detail
    throw Error(path + ": cannot load library: " + (msg ? std::string(msg) : ec.message()));
  }
  // Libraries are never unmapped, accepted or not, even when the last object
  // they made is gone: their static constructors have run, and their
  // dependencies (libgomp, OpenBLAS, CUDA) keep threads and atexit handlers
  // whose code must stay mapped until the process ends.
  dlopen(path.c_str(), RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
  if (!lib.has(NEOX_PLUGIN_ENTRY_SYMBOL))
    throw Error(path + ": not a neox plugin: missing entry symbol '" NEOX_PLUGIN_ENTRY_SYMBOL
                       "' (define it with NEOX_PLUGIN(...) from neox/plugin.h)");
  auto& entry = lib.get<const PluginDescriptor*()>(NEOX_PLUGIN_ENTRY_SYMBOL);
  const PluginDescriptor* d = nullptr;
  try {
    d = entry();
  } catch (const std::exception& e) {
    throw Error(path + ": entry symbol '" NEOX_PLUGIN_ENTRY_SYMBOL "' threw: " + e.what());
  } catch (...) {
    throw Error(path + ": entry symbol '" NEOX_PLUGIN_ENTRY_SYMBOL "' threw an exception that is not a std::exception");
  }
  if (!d) throw Error(path + ": entry symbol '" NEOX_PLUGIN_ENTRY_SYMBOL "' returned null");
  info.path = path;
  info.kind = d->kind;
  info.name = d->name ? d->name : "";
  info.version = d->version ? d->version : "";
  info.description = d->description ? d->description : "";
  info.abi_major = d->abi_major;
  info.abi_minor = d->abi_minor;
  // The kind first: it says which version the plugin's ABI is compared with.
  const std::string kind = plugin_kind_name(d->kind);
  const AbiVersion own = abi_version(d->kind);
  if (own.major == 0) throw Error(path + ": plugin '" + info.name + "' declares an unknown kind " + kind);
  if (d->abi_major != own.major || d->abi_minor > own.minor)
    throw Error(path + ": plugin's " + kind + " ABI " + abi_str(d->abi_major, d->abi_minor) +
                " is incompatible with this neox (" + kind + " ABI " + abi_str(own.major, own.minor) +
                "; needs the same major and a minor not above " + std::to_string(own.minor) +
                "): rebuild the plugin against this neox");
  if (uses_kernel_table(d->kind) && d->kernels_fingerprint != kernel_table_fingerprint())
    throw Error(path + ": plugin was built against another kernel table (neox/kernels.h changed; fingerprint " +
                std::to_string(d->kernels_fingerprint) + ", this neox " + std::to_string(kernel_table_fingerprint()) +
                "): rebuild the plugin against this neox");
  if (info.name.empty()) throw Error(path + ": plugin declares an empty name");
  std::string expected = std::string(kPrefix) + kind + "_" + info.name;
  std::string stem = fs::path(path).stem().string();
  if (stem != expected)
    throw Error(path + ": file name does not match the plugin's descriptor (kind '" + kind + "', name '" + info.name +
                "' must be in a file named " + expected + ".so)");
  if (!d->factory) throw Error(path + ": plugin '" + info.name + "' has no factory");
  loaded->descriptor = d;
  return loaded;
}

// The kind and name a file name neox_<kind>_<name>.so gives, if it has that
// form with a known kind. Kind names have no '_', so the name is the rest,
// whatever it holds: the descriptor is checked against it when loaded.
std::optional<std::pair<PluginKind, std::string>> parse_file_name(const fs::path& file) {
  if (file.extension() != ".so") return std::nullopt;
  const std::string stem = file.stem().string();
  if (stem.rfind(kPrefix, 0) != 0) return std::nullopt;
  const std::string rest = stem.substr(std::string(kPrefix).size());
  const auto sep = rest.find('_');
  if (sep == std::string::npos || sep + 1 == rest.size()) return std::nullopt;
  for (PluginKind kind : kPluginKinds)
    if (rest.compare(0, sep, plugin_kind_name(kind)) == 0) return std::pair{kind, rest.substr(sep + 1)};
  return std::nullopt;
}

}  // namespace

struct PluginRegistry::Candidate {
  enum class State { unchecked, accepted, rejected };
  std::string path;
  bool named = false;  // the file name parses as neox_<kind>_<name>.so
  PluginKind kind{};   // from the file name, when named
  std::string name;
  State state = State::unchecked;
  PluginInfo info;     // when accepted
  std::string reason;  // when rejected
  std::shared_ptr<LoadedPlugin> loaded;
};

PluginRegistry::PluginRegistry(std::vector<std::string> search_paths) {
  for (auto& p : search_paths)
    if (!p.empty()) paths_.push_back(p);
  if (const char* env = std::getenv("NEOX_PLUGIN_PATH")) {
    std::stringstream ss(env);
    std::string item;
    while (std::getline(ss, item, ':'))
      if (!item.empty()) paths_.push_back(item);
  }
  if (auto dir = own_plugin_dir(); !dir.empty()) paths_.push_back(dir);
  scan();
}

PluginRegistry::~PluginRegistry() = default;

// Lists the candidates by file name; opens none of them.
void PluginRegistry::scan() {
  std::set<std::string> seen_files;
  for (const auto& dir : paths_) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    std::vector<fs::path> files;
    for (auto& entry : fs::directory_iterator(dir, ec)) {
      auto name = entry.path().filename().string();
      if (name.rfind(kPrefix, 0) == 0 && entry.path().extension() == ".so") files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    for (auto& file : files) {
      auto canonical = fs::weakly_canonical(file, ec).string();
      if (!seen_files.insert(canonical).second) continue;
      Candidate c;
      c.path = file.string();
      if (auto parsed = parse_file_name(file)) {
        c.named = true;
        c.kind = parsed->first;
        c.name = parsed->second;
      }
      candidates_.push_back(std::move(c));
    }
  }
}

void PluginRegistry::check(std::size_t index) const {
  Candidate& c = candidates_[index];
  if (c.state != Candidate::State::unchecked) return;
  try {
    PluginInfo info;
    auto loaded = load_checked(c.path, info);
    // Accepted means the descriptor matches the file name, so the earlier
    // candidates of the same kind and name are the ones named for it.
    for (std::size_t i = 0; i < index; ++i) {
      const Candidate& earlier = candidates_[i];
      if (earlier.state == Candidate::State::accepted && earlier.kind == c.kind && earlier.name == c.name) {
        c.state = Candidate::State::rejected;
        c.reason = c.path + ": shadowed by an earlier " + plugin_kind_name(c.kind) + " plugin '" + c.name +
                   "' found first in the search path (" + earlier.path + ")";
        return;
      }
    }
    c.info = std::move(info);
    c.loaded = std::move(loaded);
    c.state = Candidate::State::accepted;
  } catch (const Error& e) {
    c.state = Candidate::State::rejected;
    c.reason = e.what();
  }
}

const std::vector<PluginInfo>& PluginRegistry::plugins() const {
  std::lock_guard lock(mutex_);
  if (!listed_) {
    for (std::size_t i = 0; i < candidates_.size(); ++i) check(i);
    for (const auto& c : candidates_) {
      if (c.state == Candidate::State::accepted)
        plugins_.push_back(c.info);
      else
        rejected_.push_back({c.path, c.reason});
    }
    listed_ = true;
  }
  return plugins_;
}

const std::vector<PluginRejection>& PluginRegistry::rejected() const {
  plugins();
  return rejected_;
}

std::vector<std::string> PluginRegistry::candidates(PluginKind kind) const {
  std::vector<std::string> names;
  for (const auto& c : candidates_)  // named, kind and name are fixed after scan()
    if (c.named && c.kind == kind && std::find(names.begin(), names.end(), c.name) == names.end())
      names.push_back(c.name);
  return names;
}

PluginInfo PluginRegistry::check_file(const std::string& path) {
  PluginInfo info;
  load_checked(path, info);
  return info;
}

const PluginRegistry::Candidate& PluginRegistry::accepted(PluginKind kind, const std::string& name) const {
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < candidates_.size(); ++i) {
    const Candidate& c = candidates_[i];
    if (!c.named || c.kind != kind || c.name != name) continue;
    check(i);
    if (c.state == Candidate::State::accepted) return c;
  }
  std::string msg = std::string("no ") + plugin_kind_name(kind) + " plugin named '" + name + "'";
  std::string found;
  for (const auto& other : candidates(kind)) found += (found.empty() ? "" : ", ") + other;
  msg += found.empty() ? std::string(" (none of that kind was found)") : " (found: " + found + ")";
  msg += "; searched:";
  for (auto& d : paths_) msg += " " + d;
  // The candidates named for it, and any other rejected so far whose file
  // name ends in the name (a plugin of another kind, a misnamed file).
  for (const auto& c : candidates_)
    if (c.state == Candidate::State::rejected && c.path.size() > name.size() + 4 &&
        c.path.compare(c.path.size() - name.size() - 4, std::string::npos, "_" + name + ".so") == 0)
      msg += "\n  rejected " + c.reason;
  throw Error(msg);
}

const PluginInfo& PluginRegistry::find(PluginKind kind, const std::string& name) const {
  return accepted(kind, name).info;
}

namespace {

// Wraps a raw object made by a plugin so that it holds its library. The
// library is pinned (RTLD_NODELETE) and never unmapped, so this is not what
// keeps the code mapped; it keeps the Boost handle, and so the library's
// reference, owned by whoever still uses an object after the registry is
// gone.
template <typename T>
std::shared_ptr<T> hold(T* object, std::shared_ptr<LoadedPlugin> lib, const PluginInfo& info) {
  if (!object) throw Error(info.path + ": factory of plugin '" + info.name + "' returned null");
  return std::shared_ptr<T>(object, [lib = std::move(lib)](T* p) { delete p; });
}

template <typename Factory, typename... Args>
auto call_factory(const PluginInfo& info, const LoadedPlugin& lib, Args&&... args) {
  auto factory = reinterpret_cast<Factory>(const_cast<void*>(lib.descriptor->factory));
  try {
    return factory(std::forward<Args>(args)...);
  } catch (const DeviceUnavailable& e) {  // keeps its type: callers skip rather than fail
    throw DeviceUnavailable(std::string(plugin_kind_name(info.kind)) + " plugin '" + info.name + "': " + e.what());
  } catch (const Error& e) {
    throw Error(std::string(plugin_kind_name(info.kind)) + " plugin '" + info.name + "': " + e.what());
  } catch (const std::exception& e) {
    throw Error(std::string(plugin_kind_name(info.kind)) + " plugin '" + info.name + "' failed: " + e.what());
  } catch (...) {
    throw Error(std::string(plugin_kind_name(info.kind)) + " plugin '" + info.name +
                "' failed with an exception that is not a std::exception");
  }
}

}  // namespace

std::shared_ptr<Backend> PluginRegistry::make_backend(const std::string& name,
                                                      const std::map<std::string, std::string>& overrides,
                                                      const std::map<std::string, Options>& options) {
  auto options_for = [&](const std::string& plugin) {
    auto it = options.find(plugin);
    return it == options.end() ? Options("plugins.options." + plugin) : it->second;
  };
  const Candidate& c = accepted(PluginKind::backend, name);
  const PluginInfo& info = c.info;
  auto backend = hold(call_factory<BackendFactory>(info, *c.loaded, options_for(name)), c.loaded, info);
  backend->register_kernels(backend->kernels);

  std::map<std::string, std::shared_ptr<KernelProvider>> providers;
  for (const auto& [op, provider_name] : overrides) {
    kernel_op_present(backend->kernels, op);  // throws for an unknown op
    auto& provider = providers[provider_name];
    if (!provider) {
      provider = make_kernels(provider_name, options_for(provider_name));
      if (provider->device() != backend->device().type)
        throw Error("kernels plugin '" + provider_name + "' is for another device than backend '" + name + "' (" +
                    device_name(backend->device()) + ")");
      provider->attach(*backend);
    }
    Kernels table;
    provider->register_kernels(table);
    if (!kernel_op_present(table, op))
      throw Error("kernels plugin '" + provider_name + "' does not provide operation '" + op + "'");
    kernel_op_copy(backend->kernels, table, op);
    spdlog::debug("kernel {} of backend {} provided by {}", op, name, provider_name);
  }
  auto missing = kernel_ops_missing(backend->kernels);
  if (!missing.empty()) {
    std::string list;
    for (auto m : missing) list += (list.empty() ? "" : ", ") + std::string(m);
    throw Error("backend '" + name + "' (" + info.path + ") does not provide: " + list);
  }
  if (providers.empty()) return backend;
  // Override kernels may capture provider state: keep the providers alive with the backend.
  // The backend (second) is destroyed before the providers (first): its kernel table holds
  // std::functions whose code lives in the providers' libraries.
  auto keep = std::make_shared<std::pair<decltype(providers), std::shared_ptr<Backend>>>(std::move(providers),
                                                                                         std::move(backend));
  Backend* raw = keep->second.get();
  return std::shared_ptr<Backend>(keep, raw);
}

std::shared_ptr<KernelProvider> PluginRegistry::make_kernels(const std::string& name, const Options& options) {
  const Candidate& c = accepted(PluginKind::kernels, name);
  return hold(call_factory<KernelsFactory>(c.info, *c.loaded, options), c.loaded, c.info);
}

std::shared_ptr<Communicator> PluginRegistry::make_comm(const std::string& name, const Options& options) {
  const Candidate& c = accepted(PluginKind::comm, name);
  return hold(call_factory<CommFactory>(c.info, *c.loaded, options), c.loaded, c.info);
}

std::shared_ptr<Optimizer> PluginRegistry::make_optimizer(const std::string& name, const Options& options,
                                                          const OptimizerContext& context) {
  const Candidate& c = accepted(PluginKind::optimizer, name);
  return hold(call_factory<OptimizerFactory>(c.info, *c.loaded, options, context), c.loaded, c.info);
}

std::shared_ptr<DataSource> PluginRegistry::make_data(const std::string& name, const Options& options,
                                                      const DataContext& context) {
  const Candidate& c = accepted(PluginKind::data, name);
  return hold(call_factory<DataFactory>(c.info, *c.loaded, options, context), c.loaded, c.info);
}

std::shared_ptr<Tokenizer> PluginRegistry::make_tokenizer(const std::string& name, const Options& options) {
  const Candidate& c = accepted(PluginKind::tokenizer, name);
  return hold(call_factory<TokenizerFactory>(c.info, *c.loaded, options), c.loaded, c.info);
}

}  // namespace neox
