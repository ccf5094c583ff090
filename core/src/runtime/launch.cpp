// SPDX-License-Identifier: Apache-2.0
// detect_launch(): the launchers' variables, read and resolved as described
// in neox/launch.h.
#include "neox/launch.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "neox/error.h"

namespace neox {

const char* launcher_name(Launcher launcher) {
  switch (launcher) {
    case Launcher::none:
      return "none";
    case Launcher::torchrun:
      return "torchrun";
    case Launcher::open_mpi:
      return "Open MPI (mpirun)";
    case Launcher::pmix:
      return "PMIx";
    case Launcher::pmi:
      return "PMI";
    case Launcher::slurm:
      return "Slurm (srun)";
    case Launcher::env:
      return "environment (RANK, WORLD_SIZE)";
  }
  return "unknown";
}

std::string LaunchInfo::str() const {
  std::string s = "rank " + std::to_string(rank) + " of " + std::to_string(world_size) + " (local " +
                  std::to_string(local_rank) + " of " + std::to_string(local_size) + ")";
  return launcher == Launcher::none ? s + ", no launcher" : s + " from " + launcher_name(launcher);
}

namespace {

const char* kWhere = "launch environment: ";

// One value of a source: the variable it came from, and the number or why
// the variable's text is not one. Unset when both are empty.
struct Field {
  std::string origin;  // "RANK=3", for messages
  std::optional<int> value;
  std::string error;  // "RANK='x' is not a non-negative integer"
  bool set() const { return value.has_value() || !error.empty(); }
  // The value; throws the error when the text was not a number.
  int get() const {
    if (!error.empty()) throw Error(kWhere + error);
    return *value;
  }
};

// What one launcher's variables say (fields may be unset).
struct Reading {
  Launcher launcher = Launcher::none;
  Field rank, size, local_rank, local_size;
  bool present() const { return rank.set() || size.set() || local_rank.set() || local_size.set(); }
};

// Non-empty value of `name`, or null.
const char* lookup_set(const EnvLookup& lookup, const char* name) {
  const char* v = lookup(name);
  return v && *v ? v : nullptr;
}

// Decimal digits only, at most INT_MAX; nullopt otherwise.
std::optional<int> parse_count(const std::string& text) {
  if (text.empty() || text.size() > 10) return std::nullopt;
  long long v = 0;
  for (char c : text) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
    v = v * 10 + (c - '0');
  }
  if (v > INT_MAX) return std::nullopt;
  return static_cast<int>(v);
}

Field int_field(const EnvLookup& lookup, const char* name) {
  Field f;
  const char* text = lookup_set(lookup, name);
  if (!text) return f;
  f.origin = std::string(name) + "=" + text;
  f.value = parse_count(text);
  if (!f.value) f.error = std::string(name) + "='" + text + "' is not a non-negative integer";
  return f;
}

// The first of `names` that is set.
Field first_int_field(const EnvLookup& lookup, std::initializer_list<const char*> names) {
  for (const char* name : names) {
    Field f = int_field(lookup, name);
    if (f.set()) return f;
  }
  return {};
}

// Slurm's tasks-per-node list ("2(x3),1": two tasks on each of the first
// three nodes, one on the fourth), expanded; nullopt when malformed.
std::optional<std::vector<int>> parse_tasks_per_node(const std::string& text) {
  std::vector<int> counts;
  std::size_t at = 0;
  while (at <= text.size()) {
    std::size_t end = text.find(',', at);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(at, end - at);
    const std::size_t paren = item.find("(x");
    std::optional<int> count = parse_count(item.substr(0, paren));
    std::optional<int> repeat = 1;
    if (paren != std::string::npos) {
      if (item.back() != ')') return std::nullopt;
      repeat = parse_count(item.substr(paren + 2, item.size() - paren - 3));
    }
    if (!count || !repeat || *repeat < 1 || counts.size() + static_cast<std::size_t>(*repeat) > 1000000)
      return std::nullopt;
    counts.insert(counts.end(), static_cast<std::size_t>(*repeat), *count);
    at = end + 1;
  }
  return counts;
}

// The tasks on this node: the step's (or job's) list at SLURM_NODEID, or
// SLURM_NTASKS_PER_NODE.
Field slurm_local_size(const EnvLookup& lookup) {
  for (const char* name : {"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"}) {
    const char* text = lookup_set(lookup, name);
    if (!text) continue;
    Field f;
    f.origin = std::string(name) + "=" + text;
    const auto counts = parse_tasks_per_node(text);
    if (!counts) {
      f.error = std::string(name) + "='" + text + "' is not a list of task counts like '2(x3),1'";
      return f;
    }
    if (counts->size() == 1) {
      f.value = counts->front();
      return f;
    }
    const Field node = int_field(lookup, "SLURM_NODEID");
    if (!node.set()) return {};  // several nodes, and we do not know which one is ours
    if (!node.error.empty()) return node;
    if (*node.value >= static_cast<int>(counts->size())) {
      f.error = "SLURM_NODEID=" + std::to_string(*node.value) + " is not a node of " + name + "='" + text + "' (" +
                std::to_string(counts->size()) + " nodes)";
      return f;
    }
    f.origin += " at " + node.origin;
    f.value = (*counts)[static_cast<std::size_t>(*node.value)];
    return f;
  }
  return int_field(lookup, "SLURM_NTASKS_PER_NODE");
}

// Every source that is present, in order of precedence.
std::vector<Reading> read_sources(const EnvLookup& lookup) {
  std::vector<Reading> out;
  auto add = [&](Reading r) {
    if (r.present()) out.push_back(std::move(r));
  };
  auto torch_style = [&](Launcher l) {
    return Reading{l, int_field(lookup, "RANK"), int_field(lookup, "WORLD_SIZE"), int_field(lookup, "LOCAL_RANK"),
                   int_field(lookup, "LOCAL_WORLD_SIZE")};
  };
  const bool torchrun = lookup_set(lookup, "TORCHELASTIC_RUN_ID") != nullptr;
  if (torchrun) add(torch_style(Launcher::torchrun));
  add({Launcher::open_mpi, int_field(lookup, "OMPI_COMM_WORLD_RANK"), int_field(lookup, "OMPI_COMM_WORLD_SIZE"),
       int_field(lookup, "OMPI_COMM_WORLD_LOCAL_RANK"), int_field(lookup, "OMPI_COMM_WORLD_LOCAL_SIZE")});
  add({Launcher::pmix, int_field(lookup, "PMIX_RANK"), {}, {}, {}});
  add({Launcher::pmi, int_field(lookup, "PMI_RANK"), int_field(lookup, "PMI_SIZE"),
       int_field(lookup, "MPI_LOCALRANKID"), int_field(lookup, "MPI_LOCALNRANKS")});
  if (lookup_set(lookup, "SLURM_STEP_ID") || lookup_set(lookup, "SLURM_STEPID"))
    add({Launcher::slurm, int_field(lookup, "SLURM_PROCID"),
         first_int_field(lookup, {"SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS"}),
         int_field(lookup, "SLURM_LOCALID"), slurm_local_size(lookup)});
  if (!torchrun) add(torch_style(Launcher::env));
  return out;
}

// Both set, readable and equal (or either unset).
bool agrees(const Field& a, const Field& b) { return !a.value || !b.value || *a.value == *b.value; }

// A launcher's rank variable, for messages.
const char* rank_variable(Launcher l) {
  switch (l) {
    case Launcher::torchrun:
    case Launcher::env:
      return "RANK";
    case Launcher::open_mpi:
      return "OMPI_COMM_WORLD_RANK";
    case Launcher::pmix:
      return "PMIX_RANK";
    case Launcher::pmi:
      return "PMI_RANK";
    case Launcher::slurm:
      return "SLURM_PROCID";
    case Launcher::none:
      break;
  }
  return "the rank";
}

}  // namespace

LaunchInfo detect_launch(const EnvLookup& lookup) {
  LaunchInfo info;
  if (const char* a = lookup_set(lookup, "MASTER_ADDR")) info.master_addr = a;
  if (const char* p = lookup_set(lookup, "MASTER_PORT")) info.master_port = p;
  std::vector<Reading> sources = read_sources(lookup);
  if (sources.empty()) return info;

  // The winner, with what it lacks taken from later sources that agree with
  // it on the rank and the size.
  Reading w = sources.front();
  const char* who = launcher_name(w.launcher);
  for (const Field* f : {&w.rank, &w.size, &w.local_rank, &w.local_size})
    if (!f->error.empty()) throw Error(kWhere + f->error);
  if (!w.rank.set()) {
    const Field& given = w.size.set() ? w.size : w.local_rank.set() ? w.local_rank : w.local_size;
    throw Error(std::string(kWhere) + given.origin + " is set but " + rank_variable(w.launcher) +
                " is not: a launcher sets both" +
                (w.size.set() ? std::string()
                              : " (to choose the GPU of a single process, use the backend's `device` option or "
                                "CUDA_VISIBLE_DEVICES)"));
  }
  for (std::size_t i = 1; i < sources.size(); ++i) {
    const Reading& r = sources[i];
    if (!agrees(r.rank, w.rank) || !r.rank.value || !agrees(r.size, w.size)) continue;
    for (auto [mine, theirs] : {std::pair{&w.size, &r.size}, std::pair{&w.local_rank, &r.local_rank},
                                std::pair{&w.local_size, &r.local_size}})
      if (!mine->set() && theirs->set()) *mine = *theirs;
  }
  if (!w.size.set())
    throw Error(std::string(kWhere) + w.rank.origin + " is set (" + who +
                ") but no variable gives the number of processes" +
                (w.launcher == Launcher::pmix ? " (PMIx exports none: under srun the Slurm variables give it; "
                                                "elsewhere set RANK and WORLD_SIZE too)"
                                              : ""));

  info.launcher = w.launcher;
  info.rank = w.rank.get();
  info.world_size = w.size.get();
  if (info.world_size < 1) throw Error(std::string(kWhere) + w.size.origin + ": a job has at least one process");
  if (info.rank >= info.world_size)
    throw Error(std::string(kWhere) + w.rank.origin + " is not below " + w.size.origin +
                ": ranks go from 0 to the number of processes - 1");
  // The node: a local size must fit in the job, a local rank in the node.
  // Without a local rank, ranks are assumed to fill nodes in order.
  if (w.local_size.set()) {
    info.local_size = w.local_size.get();
    if (info.local_size < 1 || info.local_size > info.world_size)
      throw Error(std::string(kWhere) + w.local_size.origin + " is not between 1 and " + w.size.origin);
  } else {
    info.local_size = info.world_size;
    info.notes.push_back(std::string(who) + " gives no local size: assuming one node of " +
                         std::to_string(info.world_size) + " processes");
  }
  if (w.local_rank.set()) {
    info.local_rank = w.local_rank.get();
    if (info.local_rank >= info.local_size)
      throw Error(std::string(kWhere) + w.local_rank.origin + " is not below " +
                  (w.local_size.set() ? w.local_size.origin : "the number of processes " + w.size.origin));
  } else {
    info.local_rank = info.rank % info.local_size;
    info.notes.push_back(std::string(who) + " gives no local rank: assuming local rank = rank mod local size = " +
                         std::to_string(info.local_rank));
  }

  // What the other launchers say, where it differs.
  for (std::size_t i = 1; i < sources.size(); ++i) {
    const Reading& r = sources[i];
    std::string differ;
    auto compare = [&](const Field& f, int used) {
      if (f.set() && (!f.value || *f.value != used)) differ += (differ.empty() ? "" : ", ") + f.origin;
    };
    compare(r.rank, info.rank);
    compare(r.size, info.world_size);
    compare(r.local_rank, info.local_rank);
    compare(r.local_size, info.local_size);
    if (!differ.empty())
      info.notes.push_back("ignored " + differ + " (" + launcher_name(r.launcher) + "): " + who +
                           " started this process");
  }
  return info;
}

LaunchInfo detect_launch() {
  return detect_launch([](const char* name) -> const char* { return std::getenv(name); });
}

namespace {
std::mutex g_job_handlers_mutex;
std::vector<void (*)()>& job_handlers() {
  static auto* handlers = new std::vector<void (*)()>;  // never destroyed: plugins may register at any time
  return *handlers;
}
}  // namespace

void on_job_failed_alone(void (*handler)()) {
  std::lock_guard<std::mutex> lock(g_job_handlers_mutex);
  auto& handlers = job_handlers();
  if (handler && std::find(handlers.begin(), handlers.end(), handler) == handlers.end()) handlers.push_back(handler);
}

void job_failed_alone() {
  std::vector<void (*)()> handlers;
  {
    std::lock_guard<std::mutex> lock(g_job_handlers_mutex);
    handlers.swap(job_handlers());
  }
  for (auto* h : handlers) h();
}

}  // namespace neox
