// SPDX-License-Identifier: Apache-2.0
// Byte-level BPE as Hugging Face tokenizers does it (docs/tokenizers.md).
// The pipeline of encode, in HF's order:
//   1. added tokens whose "normalized" is false are split out of the raw text
//      (leftmost-longest match, with their single_word/lstrip/rstrip rules);
//   2. each remaining piece is normalized (NFC for GPT-NeoX-20B), then added
//      tokens whose "normalized" is true are split out of it;
//   3. each remaining piece is pre-tokenized: ByteLevel's add_prefix_space,
//      then the GPT-2 regex (a hand-written scanner below), then every
//      pre-token's bytes go through BPE (with a word cache);
//   4. a TemplateProcessing post-processor adds its tokens.
#include "neox/text/bpe_tokenizer.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "neox/error.h"
#include "unicode_text.h"

namespace neox {
namespace {

using json = nlohmann::json;
using unicode::CharClass;

// ---------------------------------------------------------------------------
// GPT-2's byte <-> unicode table: the printable bytes 33-126, 161-172 and
// 174-255 stand for themselves; the others become U+0100 + n, in byte order.
struct ByteLevelAlphabet {
  std::array<char32_t, 256> byte_to_cp{};
  std::array<int, 324> cp_to_byte{};  // -1 where no byte maps
  ByteLevelAlphabet() {
    cp_to_byte.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      byte_to_cp[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      cp_to_byte[byte_to_cp[b]] = b;
    }
  }
};
const ByteLevelAlphabet& alphabet() {
  static const ByteLevelAlphabet a;
  return a;
}

// The byte-level spelling of raw bytes ("Ġthe" for " the").
std::string to_byte_level(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) unicode::append_utf8(out, alphabet().byte_to_cp[b]);
  return out;
}

// What ByteLevel's decoder makes of one token: the bytes its characters
// stand for, or the token's own UTF-8 when a character is outside the
// alphabet (as for added tokens such as "\n\n").
std::string from_byte_level(std::string_view token) {
  std::string out;
  std::size_t i = 0, len = 0;
  while (i < token.size()) {
    const char32_t cp = unicode::decode_utf8(token, i, len);
    const int b = cp < 324 ? alphabet().cp_to_byte[cp] : -1;
    if (b < 0) return std::string(token);
    out.push_back(static_cast<char>(b));
    i += len;
  }
  return out;
}

inline std::uint64_t load64(const char* p) {
  std::uint64_t w;
  std::memcpy(&w, p, 8);
  return w;
}
inline std::uint32_t load32(const char* p) {
  std::uint32_t w;
  std::memcpy(&w, p, 4);
  return w;
}

// The first min(n, 8) bytes of p as a little-endian word, zero-padded.
inline std::uint64_t load_upto8(const char* p, std::size_t n) {
  if (n >= 8) return load64(p);
  if (n >= 4) {
    const std::uint64_t lo = load32(p), hi = load32(p + n - 4);
    return lo | ((hi >> (8 * (8 - n))) << 32);  // hi's last n-4 bytes above lo
  }
  std::uint64_t w = 0;
  for (std::size_t i = 0; i < n; ++i) w |= static_cast<std::uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return w;
}

inline std::uint64_t hash_bytes(std::string_view s) {
  const char* p = s.data();
  const std::size_t n = s.size();
  std::uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    h = (h ^ load64(p + i)) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 31;
  }
  if (i < n) {
    h = (h ^ load_upto8(p + i, n - i)) * 0x94d049bb133111ebull;
    h ^= h >> 29;
  }
  h *= 0xbf58476d1ce4e5b9ull;
  return h ^ (h >> 32);
}

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return hash_bytes(s); }
  std::size_t operator()(const std::string& s) const { return hash_bytes(s); }
};

// (left id, right id) -> (rank, merged id): open addressing, linear probing.
class MergeTable {
 public:
  struct Value {
    std::int32_t rank;
    std::int32_t id;
  };
  void reserve(std::size_t n) {
    std::size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    slots_.assign(cap, Slot{kEmpty, {0, 0}});
    mask_ = cap - 1;
  }
  // Inserts or overwrites (a later duplicate merge wins, as in HF's HashMap).
  void put(std::int32_t a, std::int32_t b, Value v) {
    const std::uint64_t key = pack(a, b);
    for (std::size_t i = mix(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == kEmpty || slots_[i].key == key) {
        slots_[i] = Slot{key, v};
        return;
      }
    }
  }
  const Value* get(std::int32_t a, std::int32_t b) const {
    const std::uint64_t key = pack(a, b);
    for (std::size_t i = mix(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return &slots_[i].value;
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr std::uint64_t kEmpty = ~0ull;
  struct Slot {
    std::uint64_t key;
    Value value;
  };
  static std::uint64_t pack(std::int32_t a, std::int32_t b) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
  }
  static std::size_t mix(std::uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return static_cast<std::size_t>(k);
  }
  std::vector<Slot> slots_{16, Slot{kEmpty, {0, 0}}};
  std::size_t mask_ = 15;
};

// Added tokens, found leftmost-longest like HF's Aho-Corasick automaton
// (MatchKind::LeftmostLongest): the match that starts first, and of those
// the longest. A byte trie suffices for the few tokens a tokenizer adds.
class TokenMatcher {
 public:
  void add(std::string_view pattern, int index) {
    if (pattern.empty()) return;  // an empty token can never be split out
    std::uint32_t node = 0;
    for (unsigned char b : pattern) {
      std::uint32_t next = 0;
      for (const auto& [byte, child] : nodes_[node].next)
        if (byte == b) next = child;
      if (next == 0) {
        next = static_cast<std::uint32_t>(nodes_.size());
        nodes_[node].next.emplace_back(b, next);
        nodes_.emplace_back();
      }
      node = next;
    }
    if (nodes_[node].index < 0) nodes_[node].index = index;  // the first of duplicates wins
    first_[static_cast<unsigned char>(pattern[0])] = true;
    empty_ = false;
  }
  bool empty() const { return empty_; }
  // The leftmost-longest match at or after `from`.
  bool find(std::string_view text, std::size_t from, std::size_t& start, std::size_t& end, int& index) const {
    for (std::size_t p = from; p < text.size(); ++p) {
      if (!first_[static_cast<unsigned char>(text[p])]) continue;
      std::uint32_t node = 0;
      int best = -1;
      std::size_t best_end = 0;
      for (std::size_t q = p; q < text.size(); ++q) {
        const auto b = static_cast<unsigned char>(text[q]);
        std::uint32_t next = 0;
        for (const auto& [byte, child] : nodes_[node].next)
          if (byte == b) next = child;
        if (next == 0) break;
        node = next;
        if (nodes_[node].index >= 0) {
          best = nodes_[node].index;
          best_end = q + 1;
        }
      }
      if (best >= 0) {
        start = p;
        end = best_end;
        index = best;
        return true;
      }
    }
    return false;
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, std::uint32_t>> next;
    int index = -1;
  };
  std::vector<Node> nodes_{1};
  std::array<bool, 256> first_{};
  bool empty_ = true;
};

struct AddedToken {
  std::string content;
  std::int32_t id = 0;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// ---------------------------------------------------------------------------
// Word caches. Each thread keeps its own cache of words (no lock on a hit)
// in front of one cache shared by all threads (sharded by hash, each shard
// behind a mutex), which keeps words across encode_batch calls, whose
// threads are new each time. A thread cache belongs to one tokenizer (its
// serial number); a thread keeps the caches of its last few tokenizers.

// Open addressing. A word of up to 8 bytes with up to 2 ids (most words,
// with a GPT-NeoX-size vocabulary) lives in its 32-byte slot; others keep
// their bytes and ids in an arena.
class ThreadWordCache {
 public:
  explicit ThreadWordCache(std::uint64_t owner) : owner_(owner) { reset(kMinBits); }
  std::uint64_t owner() const { return owner_; }
  std::uint64_t last_use = 0;

  void prefetch(std::uint64_t h) const { __builtin_prefetch(&slots_[(h | 1) & mask_]); }

  // Appends the ids of `word` (hash h) to `out`; false when it is not cached.
  bool find(std::string_view word, std::uint64_t h, std::vector<std::int32_t>& out) const {
    h |= 1;  // 0 marks an empty slot
    const bool short_key = word.size() <= 8;
    const std::uint64_t key8 = short_key ? load_upto8(word.data(), word.size()) : 0;
    for (std::size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& slot = slots_[i];
      if (slot.hash == 0) return false;
      if (slot.hash != h || slot.key_len != word.size()) continue;
      if (slot.inline_entry) {
        if (slot.key8 != key8) continue;
        out.insert(out.end(), slot.ids, slot.ids + slot.n_ids);
        return true;
      }
      if (std::memcmp(arena_.data() + slot.offset, word.data(), word.size()) != 0) continue;
      const std::uint32_t* ids = arena_.data() + slot.offset + words_for(slot.key_len);
      const std::size_t at = out.size();
      out.resize(at + slot.n_ids);
      std::memcpy(out.data() + at, ids, slot.n_ids * sizeof(std::int32_t));
      return true;
    }
  }

  void insert(std::string_view word, std::uint64_t h, const std::int32_t* ids, std::size_t n) {
    if (word.size() > 0xFFFF || n > 0xFFFF) return;
    h |= 1;
    if ((count_ + 1) * 2 > slots_.size()) {
      if (bits_ < kMaxBits) {
        grow();
      } else {
        reset(bits_);  // full: start again; frequent words come back first
      }
    }
    Slot slot{};
    slot.hash = h;
    slot.key_len = static_cast<std::uint16_t>(word.size());
    slot.n_ids = static_cast<std::uint16_t>(n);
    if (word.size() <= 8 && n <= 2) {
      slot.inline_entry = 1;
      slot.key8 = load_upto8(word.data(), word.size());
      std::copy(ids, ids + n, slot.ids);
    } else {
      const std::size_t need = words_for(word.size()) + n;
      if (arena_.size() + need > kMaxArenaWords) reset(bits_);
      slot.offset = static_cast<std::uint32_t>(arena_.size());
      arena_.resize(arena_.size() + need);
      std::memcpy(arena_.data() + slot.offset, word.data(), word.size());
      std::memcpy(arena_.data() + slot.offset + words_for(word.size()), ids, n * sizeof(std::int32_t));
    }
    place(slot);
    ++count_;
  }

 private:
  static constexpr int kMinBits = 12;
  static constexpr int kMaxBits = 17;                                  // 128k slots (4 MiB), 64k words
  static constexpr std::size_t kMaxArenaWords = std::size_t{4} << 20;  // 16 MiB
  struct Slot {
    std::uint64_t hash;
    std::uint16_t key_len;
    std::uint16_t n_ids;
    std::uint32_t inline_entry;
    union {
      std::uint64_t key8;    // inline: the word's bytes
      std::uint32_t offset;  // otherwise: where its bytes and ids are in arena_, in 4-byte words
    };
    std::int32_t ids[2];  // inline: its ids
  };
  static_assert(sizeof(Slot) == 32, "two slots per cache line");
  static std::size_t words_for(std::size_t bytes) { return (bytes + 3) / 4; }
  void place(const Slot& slot) {
    std::size_t i = slot.hash & mask_;
    while (slots_[i].hash != 0) i = (i + 1) & mask_;
    slots_[i] = slot;
  }
  void reset(int bits) {
    bits_ = bits;
    slots_.assign(std::size_t{1} << bits, Slot{});
    mask_ = slots_.size() - 1;
    arena_.clear();
    count_ = 0;
  }
  void grow() {
    std::vector<Slot> old;
    old.swap(slots_);
    ++bits_;
    slots_.assign(std::size_t{1} << bits_, Slot{});
    mask_ = slots_.size() - 1;
    for (const Slot& s : old)
      if (s.hash) place(s);
  }
  std::uint64_t owner_;
  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
  int bits_ = 0;
  std::size_t count_ = 0;
  std::vector<std::uint32_t> arena_;
};

struct ThreadCaches {
  static constexpr std::size_t kMax = 4;
  std::vector<std::unique_ptr<ThreadWordCache>> caches;
  std::uint64_t tick = 0;
};
thread_local ThreadCaches t_caches;

// This thread's cache for the tokenizer `serial` (replacing the least
// recently used of kMax).
ThreadWordCache& thread_cache(std::uint64_t serial) {
  ThreadCaches& tc = t_caches;
  ++tc.tick;
  for (auto& c : tc.caches)
    if (c->owner() == serial) {
      c->last_use = tc.tick;
      return *c;
    }
  if (tc.caches.size() < ThreadCaches::kMax) {
    tc.caches.push_back(std::make_unique<ThreadWordCache>(serial));
  } else {
    auto lru = std::min_element(tc.caches.begin(), tc.caches.end(),
                                [](const auto& a, const auto& b) { return a->last_use < b->last_use; });
    std::rotate(lru, lru + 1, tc.caches.end());
    tc.caches.back() = std::make_unique<ThreadWordCache>(serial);
  }
  tc.caches.back()->last_use = tc.tick;
  return *tc.caches.back();
}

class SharedWordCache {
 public:
  // Appends the cached ids of `word` to `out`; false when it is not cached.
  bool find(std::string_view word, std::uint64_t h, std::vector<std::int32_t>& out) {
    Shard& s = shards_[h % kShards];
    std::lock_guard<std::mutex> lock(s.mutex);
    auto it = s.map.find(word);
    if (it == s.map.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }
  void insert(std::string_view word, std::uint64_t h, const std::int32_t* ids, std::size_t n) {
    Shard& s = shards_[h % kShards];
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.map.size() >= kShardCapacity) s.map.clear();  // bounded memory; it refills with what is frequent
    s.map.try_emplace(std::string(word), ids, ids + n);
  }

 private:
  static constexpr std::size_t kShards = 64;
  static constexpr std::size_t kShardCapacity = 4096;  // 256k words in all
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<std::int32_t>, StringHash, std::equal_to<>> map;
  };
  std::array<Shard, kShards> shards_;
};

std::atomic<std::uint64_t> g_next_serial{1};

// ---------------------------------------------------------------------------
// Reading files.

std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(what + " " + path + ": cannot open (" + std::strerror(errno) + ")");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json parse_json_file(const std::string& path, const std::string& what) {
  const std::string text = read_file(path, what);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(what + " " + path + ": not valid JSON: " + e.what());
  }
}

}  // namespace

// ---------------------------------------------------------------------------

struct BpeTokenizer::Impl {
  std::string name;    // HFTokenizer or GPT2BPETokenizer
  std::string source;  // the file(s), for messages
  std::uint64_t serial = g_next_serial.fetch_add(1);

  // The BPE model.
  std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>> vocab;
  MergeTable merges;
  // True when no two merges make the same token (as in every trained BPE):
  // then short words can take the simpler merge loop of bpe_short.
  bool merges_unique = true;
  std::array<std::int32_t, 256> byte_id{};  // the id of each byte's character; -1 if not in the vocabulary
  std::int32_t unk_id = -1;
  bool fuse_unk = false;
  bool ignore_merges = false;

  // Normalizer, pre-tokenizer, post-processor, decoder.
  std::vector<unicode::NormalForm> normalizers;
  bool add_prefix_space = false;
  bool use_regex = true;
  std::vector<std::int32_t> prefix_ids, suffix_ids;  // TemplateProcessing's "single"
  bool byte_level_decoder = true;

  // Added tokens.
  std::vector<AddedToken> added;
  TokenMatcher raw_matcher;         // "normalized": false, matched in the raw text
  TokenMatcher normalized_matcher;  // "normalized": true, matched in normalized pieces

  // Per id: spelling, decoded bytes, flags.
  std::vector<std::string> tokens;
  std::vector<std::string> decoded;
  std::vector<std::uint8_t> flags;  // kKnown | kSpecial
  static constexpr std::uint8_t kKnown = 1, kSpecial = 2;
  std::int32_t eod = -1;
  // Whether a text may be cut before a "\n" followed by a letter or a
  // number (can_split_before_newline), decided by finish().
  bool splittable = false;

  mutable SharedWordCache cache;

  std::string where() const { return name + " (" + source + ")"; }

  // --- building -----------------------------------------------------------
  void set_vocab_from_json(const json& v, const std::string& key) {
    if (!v.is_object()) throw Error(source + ": " + key + " must be an object of token: id");
    vocab.reserve(v.size() * 2);
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (!it.value().is_number_integer() || it.value().get<std::int64_t>() < 0 ||
          it.value().get<std::int64_t>() > INT32_MAX)
        throw Error(source + ": " + key + "[\"" + it.key() + "\"] must be a non-negative integer id");
      vocab.emplace(it.key(), it.value().get<std::int32_t>());
    }
  }

  std::int32_t vocab_id(const std::string& token, const std::string& where_in_file) const {
    auto it = vocab.find(token);
    if (it == vocab.end())
      throw Error(source + ": " + where_in_file + ": token \"" + token + "\" is not in the vocabulary");
    return it->second;
  }

  void add_merges(const std::vector<std::pair<std::string, std::string>>& pairs,
                  const std::vector<std::string>& places) {
    merges.reserve(pairs.size());
    std::unordered_map<std::int32_t, std::pair<std::int32_t, std::int32_t>> made_by;
    made_by.reserve(pairs.size());
    for (std::size_t r = 0; r < pairs.size(); ++r) {
      const auto& [a, b] = pairs[r];
      const std::int32_t ia = vocab_id(a, places[r]);
      const std::int32_t ib = vocab_id(b, places[r]);
      const std::int32_t merged = vocab_id(a + b, places[r]);
      merges.put(ia, ib, {static_cast<std::int32_t>(r), merged});
      auto [it, fresh] = made_by.try_emplace(merged, ia, ib);
      if (!fresh && it->second != std::make_pair(ia, ib)) merges_unique = false;
    }
  }

  void finish() {
    for (int b = 0; b < 256; ++b) {
      std::string ch;
      unicode::append_utf8(ch, alphabet().byte_to_cp[b]);
      auto it = vocab.find(ch);
      byte_id[b] = it == vocab.end() ? -1 : it->second;
    }
    std::int64_t size = 0;
    for (const auto& [tok, id] : vocab) size = std::max<std::int64_t>(size, std::int64_t{id} + 1);
    for (const auto& t : added) size = std::max<std::int64_t>(size, std::int64_t{t.id} + 1);
    tokens.assign(size, {});
    flags.assign(size, 0);
    for (const auto& [tok, id] : vocab) {
      tokens[id] = tok;
      flags[id] = kKnown;
    }
    // Cutting a text just before "\n" + a letter or number X keeps every
    // step of encode apart on both sides: no TemplateProcessing tokens (they
    // would come with each piece), no added prefix space (each piece would
    // get one), the GPT-2 regex (it ends a pre-token before such a "\n",
    // whatever comes before it), NFC/NFD only (NFKC maps some letters to text
    // starting with a space, U+037A; NFC/NFD never turn a letter or number
    // into anything else and do not compose across "\n"), and added tokens
    // that cannot match across the "\n" or at X (which would leave the "\n"
    // at the end of a gap, where the regex joins it to the whitespace before
    // it) and have no rstrip (which would take the "\n").
    splittable = prefix_ids.empty() && suffix_ids.empty() && !add_prefix_space && use_regex;
    for (auto form : normalizers)
      if (form != unicode::NormalForm::nfc && form != unicode::NormalForm::nfd) splittable = false;
    const auto unsplittable_token = [](std::string_view content) {
      if (content.empty()) return false;  // never matched
      std::size_t len = 0;
      const CharClass first = unicode::char_class(unicode::decode_utf8(content, 0, len));
      return content.find('\n') != std::string_view::npos || first == CharClass::letter || first == CharClass::number;
    };
    std::unordered_set<std::string> special_contents;
    for (std::size_t i = 0; i < added.size(); ++i) {
      const AddedToken& t = added[i];
      tokens[t.id] = t.content;  // an added token's spelling wins, as in HF's decode
      flags[t.id] = kKnown;
      if (t.special) special_contents.insert(t.content);
      if (t.rstrip || unsplittable_token(t.content)) splittable = false;
      if (t.normalized) {
        std::string norm = t.content, tmp;
        for (auto form : normalizers)
          if (unicode::normalize(form, norm, tmp)) norm = tmp;
        if (unsplittable_token(norm)) splittable = false;
        normalized_matcher.add(norm, static_cast<int>(i));
      } else {
        raw_matcher.add(t.content, static_cast<int>(i));
      }
    }
    decoded.assign(size, {});
    for (std::int64_t id = 0; id < size; ++id) {
      if (!flags[id]) continue;
      if (special_contents.count(tokens[id])) flags[id] |= kSpecial;
      decoded[id] = from_byte_level(tokens[id]);
    }
    for (const auto& t : added)
      if (t.content == "<|endoftext|>") eod = t.id;
    if (eod < 0) {
      auto it = vocab.find(std::string_view("<|endoftext|>"));
      if (it != vocab.end()) eod = it->second;
    }
    if (eod < 0)
      throw Error(source +
                  ": no \"<|endoftext|>\" token, GPT-NeoX's end-of-document token; add it to the "
                  "vocabulary or the added tokens");
  }

  // --- encoding -----------------------------------------------------------

  // Words of up to kShortWord symbols when merges are unique: the ranks of
  // the adjacent pairs in an array; each step merges the leftmost pair of
  // lowest rank and looks up the two pairs it changes. This is what HF's
  // heap (below) does: it too takes the lowest (rank, position) among the
  // current pairs, and with unique merges its check for expired entries
  // keeps exactly the current pairs. Returns false for a longer word.
  static constexpr std::size_t kShortWord = 64;
  bool bpe_short(std::string_view word, std::vector<std::int32_t>& out) const {
    if (word.size() > kShortWord || !merges_unique) return false;
    std::int32_t ids[kShortWord], ranks[kShortWord], made[kShortWord];
    std::size_t n = 0;
    bool pending_unk = false;
    for (unsigned char b : word) {
      const std::int32_t id = byte_id[b];
      if (id >= 0) {
        ids[n++] = id;
        pending_unk = false;
      } else if (unk_id >= 0) {
        if (!(fuse_unk && pending_unk)) ids[n++] = unk_id;
        pending_unk = true;
      }
    }
    constexpr std::int32_t kNone = INT32_MAX;
    const auto look = [&](std::size_t i) {
      const auto* m = merges.get(ids[i], ids[i + 1]);
      ranks[i] = m ? m->rank : kNone;
      made[i] = m ? m->id : 0;
    };
    for (std::size_t i = 0; i + 1 < n; ++i) look(i);
    while (n > 1) {
      std::size_t j = 0;
      for (std::size_t i = 1; i + 1 < n; ++i)
        if (ranks[i] < ranks[j]) j = i;
      if (ranks[j] == kNone) break;
      ids[j] = made[j];
      // Remove symbol j+1 and pair j+1 (pair j is recomputed).
      for (std::size_t i = j + 1; i + 1 < n; ++i) ids[i] = ids[i + 1];
      for (std::size_t i = j + 1; i + 2 < n; ++i) {
        ranks[i] = ranks[i + 1];
        made[i] = made[i + 1];
      }
      --n;
      if (j > 0) look(j - 1);
      if (j + 1 < n) look(j);
    }
    out.insert(out.end(), ids, ids + n);
    return true;
  }

  // HF's BPE::merge_word + Word::merge_all for one pre-token, appending ids.
  void bpe(std::string_view word, std::vector<std::int32_t>& out) const {
    if (bpe_short(word, out)) return;
    struct Symbol {
      std::int32_t id, prev, next, len;
    };
    struct Merge {
      std::int32_t rank, pos, new_id;
    };
    thread_local std::vector<Symbol> sym;
    thread_local std::vector<Merge> heap;
    sym.clear();
    heap.clear();
    std::int32_t pending_unk_len = 0;  // an unknown run not yet added
    const auto flush_unk = [&] {
      if (pending_unk_len) sym.push_back({unk_id, 0, 0, pending_unk_len});
      pending_unk_len = 0;
    };
    for (unsigned char b : word) {
      const std::int32_t id = byte_id[b];
      if (id >= 0) {
        flush_unk();
        sym.push_back({id, 0, 0, 1});
      } else if (unk_id >= 0) {
        if (!fuse_unk) flush_unk();
        ++pending_unk_len;
      }  // else: dropped, as HF does without an unk token
    }
    flush_unk();
    const auto n = static_cast<std::int32_t>(sym.size());
    for (std::int32_t i = 0; i < n; ++i) {
      sym[i].prev = i - 1;
      sym[i].next = i + 1 < n ? i + 1 : -1;
    }
    // Min-heap on (rank, pos).
    const auto later = [](const Merge& x, const Merge& y) {
      return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
    };
    for (std::int32_t i = 0; i + 1 < n; ++i)
      if (const auto* m = merges.get(sym[i].id, sym[i + 1].id)) heap.push_back({m->rank, i, m->id});
    std::make_heap(heap.begin(), heap.end(), later);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), later);
      const Merge top = heap.back();
      heap.pop_back();
      Symbol& cur = sym[top.pos];
      if (cur.len == 0 || cur.next == -1) continue;
      const Symbol right = sym[cur.next];
      const auto* now = merges.get(cur.id, right.id);
      if (!now || now->id != top.new_id) continue;  // an expired entry
      cur.id = top.new_id;
      cur.len += right.len;
      sym[cur.next].len = 0;
      cur.next = right.next;
      if (right.next >= 0) sym[right.next].prev = top.pos;
      if (cur.prev >= 0)
        if (const auto* m = merges.get(sym[cur.prev].id, cur.id)) {
          heap.push_back({m->rank, cur.prev, m->id});
          std::push_heap(heap.begin(), heap.end(), later);
        }
      if (cur.next >= 0)
        if (const auto* m = merges.get(cur.id, sym[cur.next].id)) {
          heap.push_back({m->rank, top.pos, m->id});
          std::push_heap(heap.begin(), heap.end(), later);
        }
    }
    for (const Symbol& s : sym)
      if (s.len) out.push_back(s.id);
  }

  // One pre-token, through the caches.
  void encode_byte(unsigned char b, std::vector<std::int32_t>& out) const {
    const std::int32_t id = byte_id[b];
    if (id >= 0) {
      out.push_back(id);
    } else if (unk_id >= 0) {
      out.push_back(unk_id);
    }
  }

  void encode_word(std::string_view word, std::uint64_t h, std::vector<std::int32_t>& out,
                   ThreadWordCache& local) const {
    if (local.find(word, h, out)) return;
    const std::size_t start = out.size();
    if (!cache.find(word, h, out)) {
      bool whole = false;
      if (ignore_merges) {
        auto it = vocab.find(to_byte_level(word));
        if (it != vocab.end()) {
          out.push_back(it->second);
          whole = true;
        }
      }
      if (!whole) bpe(word, out);
      cache.insert(word, h, out.data() + start, out.size() - start);
    }
    local.insert(word, h, out.data() + start, out.size() - start);
  }

  // The GPT-2 regex
  //   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  // as a scanner over valid UTF-8: at each position the first alternative
  // that matches, greedily. \s+(?!\S) backtracks to leave the last
  // whitespace character of a run before a non-space to the next match.
  template <typename Emit>
  static void split_gpt2(std::string_view s, Emit&& emit) {
    const CharClass* bmp = unicode::bmp_class_table();
    const auto class_at = [&](std::size_t i, std::size_t& len) {
      const auto b = static_cast<unsigned char>(s[i]);
      if (b < 0x80) {
        len = 1;
        return bmp[b];
      }
      const char32_t cp = unicode::decode_utf8(s, i, len);
      return cp < 0x10000 ? bmp[cp] : unicode::char_class(cp);
    };
    const std::size_t n = s.size();
    std::size_t i = 0;
    while (i < n) {
      const char c = s[i];
      if (c == '\'' && i + 1 < n) {
        const char c1 = s[i + 1];
        if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
          emit(s.substr(i, 2));
          i += 2;
          continue;
        }
        if (i + 2 < n) {
          const char c2 = s[i + 2];
          if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
            emit(s.substr(i, 3));
            i += 3;
            continue;
          }
        }
      }
      std::size_t len = 0;
      CharClass k = class_at(i, len);
      std::size_t run = i;  // where the run of class k starts (after an optional space)
      if (c == ' ' && i + 1 < n) {
        std::size_t len2 = 0;
        const CharClass k2 = class_at(i + 1, len2);
        if (k2 != CharClass::space) {
          k = k2;
          run = i + 1;
          len = len2;
        }
      }
      if (k != CharClass::space) {
        std::size_t e = run + len;
        while (e < n) {
          std::size_t l = 0;
          if (class_at(e, l) != k) break;
          e += l;
        }
        emit(s.substr(i, e - i));
        i = e;
        continue;
      }
      std::size_t e = i + len, last = i;  // last: where the run's last character starts
      while (e < n) {
        std::size_t l = 0;
        if (class_at(e, l) != CharClass::space) break;
        last = e;
        e += l;
      }
      if (e == n || last == i) {
        emit(s.substr(i, e - i));
        i = e;
      } else {
        emit(s.substr(i, last - i));
        i = last;
      }
    }
  }

  // Step 3: ByteLevel pre-tokenization and BPE of one piece.
  void encode_pretokenized(std::string_view piece, std::vector<std::int32_t>& out, ThreadWordCache& local) const {
    if (piece.empty()) return;
    thread_local std::string prefixed;
    if (add_prefix_space && piece[0] != ' ') {
      prefixed.assign(1, ' ');
      prefixed.append(piece);
      piece = prefixed;  // stays valid: nothing below reuses `prefixed`
    }
    if (!use_regex) {
      if (piece.size() == 1 && !ignore_merges) {
        encode_byte(static_cast<unsigned char>(piece[0]), out);
      } else {
        encode_word(piece, hash_bytes(piece), out, local);
      }
      return;
    }
    // Words go through the cache in batches: the hashes of a batch are
    // computed and their slots prefetched first, so that the cache misses
    // of a batch overlap. A one-byte word needs no cache.
    constexpr std::size_t kBatch = 16;
    std::string_view words[kBatch];
    std::uint64_t hashes[kBatch];
    std::size_t n = 0;
    const auto flush = [&] {
      for (std::size_t k = 0; k < n; ++k) {
        if (words[k].size() == 1 && !ignore_merges) continue;
        hashes[k] = hash_bytes(words[k]);
        local.prefetch(hashes[k]);
      }
      for (std::size_t k = 0; k < n; ++k) {
        if (words[k].size() == 1 && !ignore_merges) {
          encode_byte(static_cast<unsigned char>(words[k][0]), out);
        } else {
          encode_word(words[k], hashes[k], out, local);
        }
      }
      n = 0;
    };
    split_gpt2(piece, [&](std::string_view word) {
      words[n++] = word;
      if (n == kBatch) flush();
    });
    flush();
  }

  // Step 2: normalization, then the added tokens of normalized text.
  void encode_piece(std::string_view piece, std::vector<std::int32_t>& out, ThreadWordCache& local) const {
    std::string normalized, tmp;
    std::string_view text = piece;
    for (auto form : normalizers) {
      if (unicode::normalize(form, text, tmp)) {
        normalized.swap(tmp);
        text = normalized;
      }
    }
    if (normalized_matcher.empty()) {
      encode_pretokenized(text, out, local);
      return;
    }
    split_added(text, normalized_matcher, out, [&](std::string_view gap) { encode_pretokenized(gap, out, local); });
  }

  // HF's AddedVocabulary::find_matches: splits `text` at the matches of
  // `matcher`, pushing each match's id and passing the gaps to `gap`.
  template <typename Gap>
  void split_added(std::string_view text, const TokenMatcher& matcher, std::vector<std::int32_t>& out,
                   Gap&& gap) const {
    std::size_t offset = 0, from = 0, start = 0, stop = 0;
    int index = -1;
    while (matcher.find(text, from, start, stop, index)) {
      from = stop;
      if (start < offset) continue;  // inside the spaces a previous rstrip took
      const AddedToken& t = added[index];
      if (t.single_word) {
        std::size_t len = 0;
        const bool word_before = start > 0 && unicode::is_alphanumeric(unicode::decode_utf8_before(text, start, len));
        const bool word_after = stop < text.size() && unicode::is_alphanumeric(unicode::decode_utf8(text, stop, len));
        if (word_before || word_after) continue;
      }
      if (t.lstrip) {
        std::size_t s = start, len = 0;
        while (s > 0 && unicode::is_whitespace(unicode::decode_utf8_before(text, s, len))) s -= len;
        start = std::max(s, offset);
      }
      if (t.rstrip) {
        std::size_t len = 0;
        while (stop < text.size() && unicode::is_whitespace(unicode::decode_utf8(text, stop, len))) stop += len;
        from = stop;
      }
      if (offset < start) gap(text.substr(offset, start - offset));
      out.push_back(t.id);
      offset = stop;
    }
    if (offset < text.size()) gap(text.substr(offset));
  }

  void encode(std::string_view text, std::vector<std::int32_t>& out) const {
    const std::size_t bad = unicode::find_invalid_utf8(text);
    if (bad != std::string_view::npos)
      throw Error(where() + ": the text is not valid UTF-8 (byte offset " + std::to_string(bad) + ")");
    ThreadWordCache& local = thread_cache(serial);
    out.reserve(out.size() + prefix_ids.size() + suffix_ids.size() + text.size() / 3 + 4);
    out.insert(out.end(), prefix_ids.begin(), prefix_ids.end());
    if (raw_matcher.empty()) {
      encode_piece(text, out, local);
    } else {
      split_added(text, raw_matcher, out, [&](std::string_view gap) { encode_piece(gap, out, local); });
    }
    out.insert(out.end(), suffix_ids.begin(), suffix_ids.end());
  }
};

// ---------------------------------------------------------------------------
// tokenizer.json

namespace {

std::string json_type(const json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : "";
}

bool json_bool(const json& obj, const char* key, bool fallback, const std::string& source, const std::string& path) {
  if (!obj.contains(key) || obj[key].is_null()) return fallback;
  if (!obj[key].is_boolean()) throw Error(source + ": " + path + "." + key + " must be true or false");
  return obj[key].get<bool>();
}

void read_normalizer(const json& n, const std::string& path, BpeTokenizer::Impl& t) {
  if (n.is_null()) return;
  const std::string type = json_type(n);
  if (type == "NFC")
    t.normalizers.push_back(unicode::NormalForm::nfc);
  else if (type == "NFD")
    t.normalizers.push_back(unicode::NormalForm::nfd);
  else if (type == "NFKC")
    t.normalizers.push_back(unicode::NormalForm::nfkc);
  else if (type == "NFKD")
    t.normalizers.push_back(unicode::NormalForm::nfkd);
  else if (type == "Sequence" && n.contains("normalizers") && n["normalizers"].is_array()) {
    for (std::size_t i = 0; i < n["normalizers"].size(); ++i)
      read_normalizer(n["normalizers"][i], path + ".normalizers[" + std::to_string(i) + "]", t);
  } else {
    throw Error(t.source + ": " + path + ": normalizer type \"" + type +
                "\" is not supported (supported: NFC, NFD, NFKC, NFKD, a Sequence of them, or null)");
  }
}

void read_pre_tokenizer(const json& p, const std::string& path, BpeTokenizer::Impl& t, bool& found) {
  const std::string type = json_type(p);
  if (type == "ByteLevel" && !found) {
    t.add_prefix_space = json_bool(p, "add_prefix_space", true, t.source, path);
    t.use_regex = json_bool(p, "use_regex", true, t.source, path);
    // trim_offsets changes only offsets, which neox does not report.
    found = true;
  } else if (type == "Sequence" && p.contains("pretokenizers") && p["pretokenizers"].is_array()) {
    for (std::size_t i = 0; i < p["pretokenizers"].size(); ++i)
      read_pre_tokenizer(p["pretokenizers"][i], path + ".pretokenizers[" + std::to_string(i) + "]", t, found);
  } else {
    throw Error(t.source + ": " + path + ": pre-tokenizer type \"" + type +
                "\" is not supported (supported: one ByteLevel, alone or in a Sequence)");
  }
}

void read_post_processor(const json& p, const std::string& path, BpeTokenizer::Impl& t) {
  if (p.is_null()) return;
  const std::string type = json_type(p);
  if (type == "ByteLevel") return;  // offsets only
  if (type == "Sequence" && p.contains("processors") && p["processors"].is_array()) {
    for (std::size_t i = 0; i < p["processors"].size(); ++i)
      read_post_processor(p["processors"][i], path + ".processors[" + std::to_string(i) + "]", t);
    return;
  }
  if (type != "TemplateProcessing")
    throw Error(t.source + ": " + path + ": post-processor type \"" + type +
                "\" is not supported (supported: ByteLevel, TemplateProcessing, a Sequence of them, or null)");
  const json& single = p.value("single", json());
  const json& specials = p.value("special_tokens", json::object());
  if (!single.is_array()) throw Error(t.source + ": " + path + ".single must be a list");
  bool seen_sequence = false;
  for (std::size_t i = 0; i < single.size(); ++i) {
    const json& item = single[i];
    const std::string where = path + ".single[" + std::to_string(i) + "]";
    if (item.contains("Sequence")) {
      seen_sequence = true;
      continue;
    }
    if (!item.contains("SpecialToken") || !item["SpecialToken"].contains("id"))
      throw Error(t.source + ": " + where + " must be a SpecialToken or a Sequence");
    const std::string name = item["SpecialToken"]["id"].get<std::string>();
    if (!specials.contains(name) || !specials[name].contains("ids") || !specials[name]["ids"].is_array())
      throw Error(t.source + ": " + where + ": special token \"" + name + "\" is not in " + path + ".special_tokens");
    for (const auto& id : specials[name]["ids"])
      (seen_sequence ? t.suffix_ids : t.prefix_ids).push_back(id.get<std::int32_t>());
  }
}

}  // namespace

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_hf_json(const std::string& path) {
  auto t = std::make_unique<Impl>();
  t->name = "HFTokenizer";
  t->source = path;
  const json j = parse_json_file(path, "tokenizer file");
  try {
    if (!j.is_object()) throw Error(path + ": not a tokenizer.json (the top level is not an object)");
    if (!j.contains("model") || !j["model"].is_object())
      throw Error(path + ": not a tokenizer.json (no \"model\" object)");
    const json& m = j["model"];
    const std::string model_type = json_type(m);
    if (!model_type.empty() && model_type != "BPE")
      throw Error(path + ": model.type \"" + model_type + "\" is not supported (only BPE)");
    if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() > 0)
      throw Error(path + ": model.dropout is set; BPE dropout is for training, set it to null");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (m.contains(key) && !m[key].is_null() && !m[key].get<std::string>().empty())
        throw Error(path + ": model." + key + " is not supported with byte-level BPE (set it to null)");
    if (json_bool(m, "byte_fallback", false, path, "model"))
      throw Error(path + ": model.byte_fallback is not supported with byte-level BPE (set it to false)");
    t->fuse_unk = json_bool(m, "fuse_unk", false, path, "model");
    t->ignore_merges = json_bool(m, "ignore_merges", false, path, "model");
    if (!m.contains("vocab")) throw Error(path + ": model.vocab is missing");
    t->set_vocab_from_json(m["vocab"], "model.vocab");
    if (m.contains("unk_token") && m["unk_token"].is_string())
      t->unk_id = t->vocab_id(m["unk_token"].get<std::string>(), "model.unk_token");

    std::vector<std::pair<std::string, std::string>> pairs;
    std::vector<std::string> places;
    const json& merges = m.value("merges", json::array());
    if (!merges.is_array()) throw Error(path + ": model.merges must be a list");
    pairs.reserve(merges.size());
    places.reserve(merges.size());
    for (std::size_t i = 0; i < merges.size(); ++i) {
      const json& e = merges[i];
      std::string place = "model.merges[" + std::to_string(i) + "]";
      if (e.is_string()) {  // "a b"
        const std::string s = e.get<std::string>();
        const auto space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
          throw Error(path + ": " + place + " \"" + s + "\" is not two tokens separated by one space");
        pairs.emplace_back(s.substr(0, space), s.substr(space + 1));
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {  // ["a", "b"]
        pairs.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
      } else {
        throw Error(path + ": " + place + " must be \"a b\" or [\"a\", \"b\"]");
      }
      places.push_back(std::move(place));
    }
    t->add_merges(pairs, places);

    if (j.contains("truncation") && !j["truncation"].is_null())
      throw Error(path + ": \"truncation\" is set; neox does not truncate documents, set it to null");
    read_normalizer(j.value("normalizer", json()), "normalizer", *t);
    bool byte_level = false;
    if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null())
      read_pre_tokenizer(j["pre_tokenizer"], "pre_tokenizer", *t, byte_level);
    if (!byte_level) throw Error(path + ": pre_tokenizer must be ByteLevel (neox implements byte-level BPE only)");
    read_post_processor(j.value("post_processor", json()), "post_processor", *t);
    const json& decoder = j.value("decoder", json());
    if (decoder.is_null()) {
      t->byte_level_decoder = false;  // HF joins the tokens with spaces
    } else if (json_type(decoder) != "ByteLevel") {
      throw Error(path + ": decoder type \"" + json_type(decoder) + "\" is not supported (only ByteLevel or null)");
    }

    const json& added = j.value("added_tokens", json::array());
    if (!added.is_array()) throw Error(path + ": added_tokens must be a list");
    for (std::size_t i = 0; i < added.size(); ++i) {
      const json& a = added[i];
      const std::string place = "added_tokens[" + std::to_string(i) + "]";
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || a["id"].get<std::int64_t>() < 0 ||
          !a.contains("content") || !a["content"].is_string())
        throw Error(path + ": " + place + " needs an integer \"id\" >= 0 and a string \"content\"");
      AddedToken tok;
      tok.id = a["id"].get<std::int32_t>();
      tok.content = a["content"].get<std::string>();
      if (unicode::find_invalid_utf8(tok.content) != std::string_view::npos)
        throw Error(path + ": " + place + ".content is not valid UTF-8");
      tok.special = json_bool(a, "special", false, path, place);
      tok.single_word = json_bool(a, "single_word", false, path, place);
      tok.lstrip = json_bool(a, "lstrip", false, path, place);
      tok.rstrip = json_bool(a, "rstrip", false, path, place);
      tok.normalized = json_bool(a, "normalized", !tok.special, path, place);
      t->added.push_back(std::move(tok));
    }
    t->finish();
  } catch (const json::exception& e) {
    throw Error(path + ": unexpected value in the tokenizer file: " + e.what());
  }
  return std::unique_ptr<BpeTokenizer>(new BpeTokenizer(std::move(t)));
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_gpt2_files(const std::string& vocab_json,
                                                            const std::string& merges_txt) {
  auto t = std::make_unique<Impl>();
  t->name = "GPT2BPETokenizer";
  t->source = vocab_json + ", " + merges_txt;
  const json v = parse_json_file(vocab_json, "vocab file");
  {
    const std::string saved = t->source;
    t->source = vocab_json;
    t->set_vocab_from_json(v, "the vocabulary");
    t->source = saved;
  }
  const std::string text = read_file(merges_txt, "merge file");
  std::vector<std::pair<std::string, std::string>> pairs;
  std::vector<std::string> places;
  std::size_t line_no = 0, pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.rfind("#version", 0) == 0 || line.empty()) continue;
    const auto space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
      throw Error(merges_txt + ":" + std::to_string(line_no) + ": \"" + line +
                  "\" is not two tokens separated by one space");
    pairs.emplace_back(line.substr(0, space), line.substr(space + 1));
    places.push_back("line " + std::to_string(line_no));
  }
  t->source = merges_txt;
  t->add_merges(pairs, places);
  t->source = vocab_json;
  t->add_prefix_space = false;
  t->use_regex = true;
  t->finish();
  t->source = vocab_json + ", " + merges_txt;
  return std::unique_ptr<BpeTokenizer>(new BpeTokenizer(std::move(t)));
}

BpeTokenizer::BpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeTokenizer::~BpeTokenizer() = default;

std::string BpeTokenizer::name() const { return impl_->name; }
std::int64_t BpeTokenizer::vocab_size() const { return static_cast<std::int64_t>(impl_->tokens.size()); }
std::int32_t BpeTokenizer::eod_id() const { return impl_->eod; }

std::vector<std::int32_t> BpeTokenizer::encode(std::string_view text) const {
  std::vector<std::int32_t> ids;
  impl_->encode(text, ids);
  return ids;
}

std::string BpeTokenizer::decode(const std::vector<std::int32_t>& ids) const { return decode(ids, false); }

std::string BpeTokenizer::decode(const std::vector<std::int32_t>& ids, bool skip_special_tokens) const {
  const Impl& t = *impl_;
  std::string bytes;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::int32_t id = ids[i];
    if (id < 0 || id >= static_cast<std::int64_t>(t.flags.size()) || !(t.flags[id] & Impl::kKnown))
      throw Error(t.where() + ": id " + std::to_string(id) + " at position " + std::to_string(i) +
                  " is not in the vocabulary (vocab_size " + std::to_string(t.flags.size()) + ")");
    if (skip_special_tokens && (t.flags[id] & Impl::kSpecial)) continue;
    if (t.byte_level_decoder) {
      bytes += t.decoded[id];
    } else {
      if (!bytes.empty()) bytes += ' ';
      bytes += t.tokens[id];
    }
  }
  return t.byte_level_decoder ? unicode::utf8_lossy(bytes) : bytes;
}

bool BpeTokenizer::can_split_before_newline(char32_t next) const {
  if (!impl_->splittable || next > 0x10FFFF) return false;
  const CharClass k = unicode::char_class(next);
  return k == CharClass::letter || k == CharClass::number;
}

std::optional<std::int32_t> BpeTokenizer::token_to_id(std::string_view token) const {
  for (const auto& a : impl_->added)
    if (a.content == token) return a.id;
  auto it = impl_->vocab.find(token);
  if (it == impl_->vocab.end()) return std::nullopt;
  return it->second;
}

std::string BpeTokenizer::id_to_token(std::int32_t id) const {
  const Impl& t = *impl_;
  if (id < 0 || id >= static_cast<std::int64_t>(t.flags.size()) || !(t.flags[id] & Impl::kKnown))
    throw Error(t.where() + ": id " + std::to_string(id) + " is not in the vocabulary");
  return t.tokens[id];
}

}  // namespace neox
