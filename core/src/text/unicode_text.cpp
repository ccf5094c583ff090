// SPDX-License-Identifier: Apache-2.0
#include "unicode_text.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>
#include <unicode/uchar.h>
#include <unicode/uniset.h>
#include <unicode/unistr.h>

#include <array>
#include <climits>
#include <cstring>
#include <memory>

#include "neox/error.h"

namespace neox::unicode {
namespace {

CharClass class_from_icu(char32_t cp) {
  const auto c = static_cast<UChar32>(cp);
  if (u_isUWhiteSpace(c)) return CharClass::space;
  const std::uint32_t mask = U_GET_GC_MASK(c);
  if (mask & U_GC_L_MASK) return CharClass::letter;
  if (mask & U_GC_N_MASK) return CharClass::number;
  return CharClass::other;
}

// The class of every BMP code point, filled from ICU once (about 1 ms).
struct BmpClasses {
  std::array<CharClass, 0x10000> table;
  BmpClasses() {
    for (char32_t cp = 0; cp < 0x10000; ++cp) table[cp] = class_from_icu(cp);
  }
};

const BmpClasses& bmp_classes() {
  static const auto* classes = new BmpClasses();  // never freed: used until exit
  return *classes;
}

// The length of the well-formed UTF-8 sequence at s[i], or 0 when it is
// ill-formed; `bad_len` then gets the length of its maximal subpart (>= 1).
// Ranges from the Unicode standard, table 3-7.
std::size_t sequence_length(std::string_view s, std::size_t i, std::size_t& bad_len) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char b0 = byte(0);
  std::size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    bad_len = 1;
    return 0;
  }
  for (std::size_t k = 1; k < len; ++k) {
    if (i + k >= s.size()) {
      bad_len = k;
      return 0;
    }
    const unsigned char b = byte(k);
    const bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) {
      bad_len = k;
      return 0;
    }
  }
  return len;
}

// True when the 8 bytes at p are all ASCII.
inline bool ascii8(const char* p) {
  std::uint64_t w;
  std::memcpy(&w, p, 8);
  return (w & 0x8080808080808080ull) == 0;
}

// The characters of Unicode 9.0: Hugging Face tokenizers normalizes with the
// tables of Unicode 9.0 (its unicode-normalization-alignments crate), so a
// mark assigned later (U+08D1, U+1ABF, ...) is not reordered or composed there.
// ICU's FilteredNormalizer2 gives the same: characters outside the set pass
// through unchanged, as unassigned characters would. Checked for every code
// point against tokenizers 0.23 (docs/tokenizers.md).
constexpr const char* kNormalizationUnicodeSet = "[:age=9.0:]";

struct Normalizers {
  icu::UnicodeSet filter;
  std::unique_ptr<icu::FilteredNormalizer2> forms[4];
  Normalizers() {
    UErrorCode status = U_ZERO_ERROR;
    filter.applyPattern(icu::UnicodeString(kNormalizationUnicodeSet, -1, US_INV), status);
    if (U_FAILURE(status)) fail(status);
    filter.freeze();
    const icu::Normalizer2* base[4] = {
        icu::Normalizer2::getNFCInstance(status), icu::Normalizer2::getNFDInstance(status),
        icu::Normalizer2::getNFKCInstance(status), icu::Normalizer2::getNFKDInstance(status)};
    if (U_FAILURE(status)) fail(status);
    for (int i = 0; i < 4; ++i) forms[i] = std::make_unique<icu::FilteredNormalizer2>(*base[i], filter);
  }
  [[noreturn]] static void fail(UErrorCode status) {
    throw Error(std::string("ICU: cannot load the Unicode normalization data: ") + u_errorName(status));
  }
};

const icu::Normalizer2& normalizer(NormalForm form) {
  static const auto* n = new Normalizers();  // never freed: used until exit
  return *n->forms[static_cast<int>(form)];
}

}  // namespace

CharClass char_class(char32_t cp) {
  if (cp < 0x10000) return bmp_classes().table[cp];
  return class_from_icu(cp);
}

const CharClass* bmp_class_table() { return bmp_classes().table.data(); }

bool is_alphanumeric(char32_t cp) {
  const auto c = static_cast<UChar32>(cp);
  return u_hasBinaryProperty(c, UCHAR_ALPHABETIC) || (U_GET_GC_MASK(c) & U_GC_N_MASK) != 0;
}

bool is_whitespace(char32_t cp) { return u_isUWhiteSpace(static_cast<UChar32>(cp)); }

char32_t decode_utf8_before(std::string_view s, std::size_t end, std::size_t& len) {
  std::size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  const char32_t cp = decode_utf8(s, start, len);
  return cp;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::size_t find_invalid_utf8(std::string_view s) {
  std::size_t i = 0;
  const std::size_t n = s.size();
  while (i < n) {
    if (i + 8 <= n && ascii8(s.data() + i)) {
      i += 8;
      continue;
    }
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    std::size_t bad = 0;
    const std::size_t len = sequence_length(s, i, bad);
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  std::size_t i = 0;
  while (i < bytes.size()) {
    if (static_cast<unsigned char>(bytes[i]) < 0x80) {
      out.push_back(bytes[i++]);
      continue;
    }
    std::size_t bad = 0;
    const std::size_t len = sequence_length(bytes, i, bad);
    if (len) {
      out.append(bytes.data() + i, len);
      i += len;
    } else {
      out.append("\xEF\xBF\xBD");  // U+FFFD
      i += bad;
    }
  }
  return out;
}

bool normalize(NormalForm form, std::string_view text, std::string& out) {
  std::size_t i = 0;
  while (i + 8 <= text.size() && ascii8(text.data() + i)) i += 8;
  while (i < text.size() && static_cast<unsigned char>(text[i]) < 0x80) ++i;
  if (i == text.size()) return false;  // ASCII is unchanged by every form
  if (text.size() > static_cast<std::size_t>(INT32_MAX))
    throw Error("Unicode normalization: a text of " + std::to_string(text.size()) + " bytes is over ICU's 2 GiB limit");
  const icu::Normalizer2& n = normalizer(form);
  const icu::StringPiece piece(text.data(), static_cast<std::int32_t>(text.size()));
  UErrorCode status = U_ZERO_ERROR;
  if (n.isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return false;
  status = U_ZERO_ERROR;
  std::string result;
  result.reserve(text.size() + text.size() / 4);
  icu::StringByteSink<std::string> sink(&result);
  n.normalizeUTF8(0, piece, sink, nullptr, status);
  if (U_FAILURE(status)) throw Error(std::string("ICU: Unicode normalization failed: ") + u_errorName(status));
  out = std::move(result);
  return true;
}

}  // namespace neox::unicode
