// SPDX-License-Identifier: Apache-2.0
// neox::Error — the one exception type the core and plugins throw.
//
// Contract: every message says what was wrong and where (file, line, key,
// tensor, rank) and, where it helps, what to do. Plugins catch their own
// internal exceptions at the boundary and rethrow them as neox::Error.
#pragma once

#include <stdexcept>
#include <string>

#include "neox/export.h"

namespace neox {

class NEOX_API Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// The device a backend needs is not there (no GPU, no driver, a device
// index beyond the count). Thrown by backend factories so that callers, and
// the GPU tests, can tell "cannot run here" from a real failure.
class NEOX_API DeviceUnavailable : public Error {
 public:
  explicit DeviceUnavailable(const std::string& what) : Error(what) {}
};

// An error that every rank of a job throws at the same point, having agreed
// on it through the communicator (configs that differ between ranks, a
// checkpoint save that failed on some rank). Exiting with it needs no abort
// of the job: the other ranks are not left waiting (see job_failed_alone()).
class NEOX_API CollectiveError : public Error {
 public:
  explicit CollectiveError(const std::string& what) : Error(what) {}
};

// Throws neox::Error with `message` when `condition` is false.
inline void check(bool condition, const std::string& message) {
  if (!condition) throw Error(message);
}

}  // namespace neox
