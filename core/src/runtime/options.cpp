// SPDX-License-Identifier: Apache-2.0
#include "neox/options.h"

#include <cmath>
#include <sstream>

#include "neox/error.h"

namespace neox {

std::string SourceLocation::str() const {
  if (file.empty()) return "<command line>";
  std::string s = file;
  if (line > 0) s += ":" + std::to_string(line);
  if (column > 0) s += ":" + std::to_string(column);
  return s;
}

void Options::set(const std::string& key, Value value, SourceLocation where) {
  entries_[key] = Entry{std::move(value), std::move(where)};
}

bool Options::has(const std::string& key) const { return entries_.count(key) != 0; }

std::vector<std::string> Options::keys() const {
  std::vector<std::string> k;
  for (auto& [name, e] : entries_) k.push_back(name);
  return k;
}

const Options::Entry* Options::find(const std::string& key) const {
  used_.insert(key);
  auto it = entries_.find(key);
  return it == entries_.end() ? nullptr : &it->second;
}

std::string Options::where(const std::string& key) const {
  auto it = entries_.find(key);
  std::string loc = it == entries_.end() ? std::string("<default>") : it->second.where.str();
  return loc + ": " + (table_.empty() ? key : table_ + "." + key);
}

namespace {
const char* type_name(const Options::Value& v) {
  switch (v.index()) {
    case 0:
      return "a boolean";
    case 1:
      return "an integer";
    case 2:
      return "a float";
    case 3:
      return "a string";
    default:
      return "an array of strings";
  }
}
}  // namespace

bool Options::get_bool(const std::string& key, bool def) const {
  const Entry* e = find(key);
  if (!e) return def;
  if (auto* b = std::get_if<bool>(&e->value)) return *b;
  throw Error(where(key) + ": expected a boolean, got " + type_name(e->value));
}

std::int64_t Options::get_int(const std::string& key, std::int64_t def, std::int64_t min, std::int64_t max) const {
  const Entry* e = find(key);
  if (!e) return def;
  auto* i = std::get_if<std::int64_t>(&e->value);
  if (!i) throw Error(where(key) + ": expected an integer, got " + type_name(e->value));
  if (*i < min || *i > max)
    throw Error(where(key) + ": " + std::to_string(*i) + " is out of range [" + std::to_string(min) + ", " +
                std::to_string(max) + "]");
  return *i;
}

double Options::get_double(const std::string& key, double def, double min, double max) const {
  const Entry* e = find(key);
  if (!e) return def;
  double v;
  if (auto* d = std::get_if<double>(&e->value))
    v = *d;
  else if (auto* i = std::get_if<std::int64_t>(&e->value))
    v = static_cast<double>(*i);
  else
    throw Error(where(key) + ": expected a number, got " + type_name(e->value));
  if (!(v >= min && v <= max)) {
    std::ostringstream os;
    os << where(key) << ": " << v << " is out of range [" << min << ", " << max << "]";
    throw Error(os.str());
  }
  return v;
}

std::string Options::get_string(const std::string& key, const std::string& def,
                                const std::vector<std::string>& allowed) const {
  const Entry* e = find(key);
  if (!e) return def;
  auto* s = std::get_if<std::string>(&e->value);
  if (!s) throw Error(where(key) + ": expected a string, got " + type_name(e->value));
  if (!allowed.empty()) {
    bool ok = false;
    std::string list;
    for (auto& a : allowed) {
      ok |= a == *s;
      list += (list.empty() ? "" : ", ") + a;
    }
    if (!ok) throw Error(where(key) + ": '" + *s + "' is not one of: " + list);
  }
  return *s;
}

std::vector<std::string> Options::get_strings(const std::string& key) const {
  const Entry* e = find(key);
  if (!e) return {};
  if (auto* v = std::get_if<std::vector<std::string>>(&e->value)) return *v;
  if (auto* s = std::get_if<std::string>(&e->value)) return {*s};
  throw Error(where(key) + ": expected an array of strings, got " + type_name(e->value));
}

const Options::Value& Options::raw(const std::string& key) const {
  auto it = entries_.find(key);
  if (it == entries_.end()) throw Error(where(key) + ": no such option");
  return it->second.value;
}

void Options::reject_unknown() const {
  for (auto& [key, e] : entries_)
    if (!used_.count(key)) throw Error(where(key) + ": unknown option");
}

}  // namespace neox
