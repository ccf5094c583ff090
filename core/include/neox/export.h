// SPDX-License-Identifier: Apache-2.0
// NEOX_API marks classes whose type information must be shared between the
// core and plugins (plugins are built with -fvisibility=hidden; without this,
// an exception thrown in a plugin could not be caught as neox::Error).
#pragma once

#if defined(__GNUC__)
#define NEOX_API __attribute__((visibility("default")))
#else
#define NEOX_API
#endif
