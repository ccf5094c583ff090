// SPDX-License-Identifier: Apache-2.0
#include "neox/text/byte_tokenizer.h"

#include "neox/error.h"

namespace neox {

std::vector<std::int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<std::int32_t> ids;
  ids.reserve(text.size());
  for (unsigned char c : text) ids.push_back(c);
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<std::int32_t>& ids) const {
  std::string out;
  out.reserve(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::int32_t id = ids[i];
    if (id == kEod) continue;
    if (id < 0 || id > kEod)
      throw Error("byte tokenizer: id " + std::to_string(id) + " at position " + std::to_string(i) +
                  " is outside [0, 256]");
    out.push_back(static_cast<char>(id));
  }
  return out;
}

}  // namespace neox
