// SPDX-License-Identifier: Apache-2.0
// Unicode for the tokenizers (private to the core): UTF-8 decoding and
// validation, the character classes of the GPT-2 pre-tokenizer regex
// (\p{L}, \p{N}, \s) and Unicode normalization. Every property comes from
// ICU (libicu, Debian's package), never from tables written here; the BMP is
// cached in a 64 KiB table filled from ICU on first use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace neox::unicode {

// The classes the GPT-2 regex distinguishes.
enum class CharClass : std::uint8_t {
  letter,  // \p{L}: general category Lu, Ll, Lt, Lm, Lo
  number,  // \p{N}: Nd, Nl, No
  space,   // \s: the White_Space property
  other,   // everything else
};

CharClass char_class(char32_t cp);
// The class of each BMP code point (0x10000 entries), for inner loops.
const CharClass* bmp_class_table();

// Rust's char::is_alphanumeric (Alphabetic or a number category) and
// char::is_whitespace (White_Space): used for added tokens' single_word,
// lstrip and rstrip, as Hugging Face tokenizers does.
bool is_alphanumeric(char32_t cp);
bool is_whitespace(char32_t cp);

// The code point starting at s[i] of valid UTF-8 text; `len` gets its byte length.
inline char32_t decode_utf8(std::string_view s, std::size_t i, std::size_t& len) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    len = 1;
    return b0;
  }
  const auto b = [&](std::size_t k) { return static_cast<char32_t>(static_cast<unsigned char>(s[i + k]) & 0x3F); };
  if (b0 < 0xE0) {
    len = 2;
    return (static_cast<char32_t>(b0 & 0x1F) << 6) | b(1);
  }
  if (b0 < 0xF0) {
    len = 3;
    return (static_cast<char32_t>(b0 & 0x0F) << 12) | (b(1) << 6) | b(2);
  }
  len = 4;
  return (static_cast<char32_t>(b0 & 0x07) << 18) | (b(1) << 12) | (b(2) << 6) | b(3);
}

// The code point ending just before s[end] of valid UTF-8 text; `len` gets its byte length.
char32_t decode_utf8_before(std::string_view s, std::size_t end, std::size_t& len);

// Appends the UTF-8 encoding of `cp` to `out`.
void append_utf8(std::string& out, char32_t cp);

// The byte offset of the first ill-formed UTF-8 sequence in `s` (overlong
// forms, surrogates and code points above U+10FFFF are ill-formed), or
// std::string_view::npos when `s` is valid UTF-8.
std::size_t find_invalid_utf8(std::string_view s);

// `bytes` as UTF-8 with every ill-formed sequence replaced by U+FFFD, one per
// maximal subpart as the Unicode standard recommends (what Rust's
// String::from_utf8_lossy and Python's errors="replace" do).
std::string utf8_lossy(std::string_view bytes);

// The normalization forms of a tokenizer.json "normalizer", as Hugging Face
// tokenizers computes them: with the characters of Unicode 9.0 (those
// assigned later pass through unchanged).
enum class NormalForm : std::uint8_t { nfc, nfd, nfkc, nfkd };

// `text` (valid UTF-8) in the normal form `form`. Returns false and leaves
// `out` untouched when `text` is already normalized (the common case, which
// costs no copy); otherwise writes the normalized text to `out`.
bool normalize(NormalForm form, std::string_view text, std::string& out);

}  // namespace neox::unicode
