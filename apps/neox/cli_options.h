// SPDX-License-Identifier: Apache-2.0
// cxxopts for the neox commands. A repeated option (--set a=1 --set b=2)
// gives a vector; a value is never split on commas, since values such as
// --set plugins.options.mmap.split=80,10,10 contain them.
#pragma once

#define CXXOPTS_VECTOR_DELIMITER '\x1f'
#include <cxxopts.hpp>
