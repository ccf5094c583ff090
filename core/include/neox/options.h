// SPDX-License-Identifier: Apache-2.0
// Options: one table of scalar settings with the place each came from.
//
// The config loader hands each plugin the table [plugins.options.<name>] of
// the TOML file as an Options object. A plugin reads what it understands with
// the typed getters (which check type and range) and then calls
// reject_unknown(), so a misspelt key is an error naming file, line and key.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <variant>
#include <vector>

namespace neox {

struct SourceLocation {
  std::string file;  // empty for values set in code or from the command line
  int line = 0;
  int column = 0;
  std::string str() const;  // "configs/x.toml:12:3" or "<command line>"
};

class Options {
 public:
  using Value = std::variant<bool, std::int64_t, double, std::string, std::vector<std::string>>;

  Options() = default;
  // `table` is the dotted name used in messages, e.g. "plugins.options.cpu".
  explicit Options(std::string table) : table_(std::move(table)) {}

  void set(const std::string& key, Value value, SourceLocation where = {});
  bool has(const std::string& key) const;
  const std::string& table() const { return table_; }
  std::vector<std::string> keys() const;

  // Typed getters: return the default when the key is absent; throw
  // neox::Error "<file>:<line>: <table>.<key>: ..." on a wrong type or a value
  // out of [min, max] / not among `allowed`.
  bool get_bool(const std::string& key, bool def) const;
  std::int64_t get_int(const std::string& key, std::int64_t def, std::int64_t min, std::int64_t max) const;
  double get_double(const std::string& key, double def, double min, double max) const;
  std::string get_string(const std::string& key, const std::string& def,
                         const std::vector<std::string>& allowed = {}) const;
  std::vector<std::string> get_strings(const std::string& key) const;

  // The stored value, unchecked and not marked as used (for writing configs
  // back out); throws neox::Error when absent.
  const Value& raw(const std::string& key) const;

  // Throws for the first key that no getter has asked for.
  void reject_unknown() const;
  // "<file>:<line>: <table>.<key>" for messages.
  std::string where(const std::string& key) const;

 private:
  struct Entry {
    Value value;
    SourceLocation where;
  };
  const Entry* find(const std::string& key) const;
  std::string table_;
  std::map<std::string, Entry> entries_;
  mutable std::set<std::string> used_;
};

}  // namespace neox
