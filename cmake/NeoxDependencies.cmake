# SPDX-License-Identifier: Apache-2.0
# Finds every dependency and fails with the Debian package that provides it.
# packaging/install-deps.sh installs them all.

macro(neox_require found_var debian_package what)
  if(NOT ${found_var})
    message(FATAL_ERROR
      "neox needs ${what}, which was not found. On Debian/Ubuntu install it with:\n"
      "  sudo apt-get install ${debian_package}\n"
      "or run packaging/install-deps.sh, which installs everything neox needs.")
  endif()
endmacro()

find_package(Threads REQUIRED)

find_package(spdlog CONFIG QUIET)
neox_require(spdlog_FOUND libspdlog-dev "spdlog")

find_package(cxxopts CONFIG QUIET)
neox_require(cxxopts_FOUND libcxxopts-dev "cxxopts")

find_package(nlohmann_json 3.9 CONFIG QUIET)
neox_require(nlohmann_json_FOUND nlohmann-json3-dev "nlohmann-json (JSON for safetensors headers and config.json)")

# TOML++ is used header-only, in one translation unit (core/src/train/config.cpp).
find_path(TOMLPP_INCLUDE_DIR toml++/toml.h)
neox_require(TOMLPP_INCLUDE_DIR libtomlplusplus-dev "TOML++ (toml++/toml.h)")

# ICU's common library: the Unicode categories and normalization of the
# tokenizers (core/src/text/unicode_text.cpp).
find_package(ICU QUIET COMPONENTS uc)
neox_require(ICU_FOUND libicu-dev "ICU (Unicode properties and normalization for the tokenizers)")

find_package(Boost 1.71 QUIET COMPONENTS filesystem)
neox_require(Boost_FOUND "libboost-dev libboost-filesystem-dev" "Boost.DLL and Boost.Filesystem")

find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(OPENBLAS QUIET IMPORTED_TARGET openblas)
endif()
neox_require(OPENBLAS_FOUND "libopenblas-dev pkg-config" "OpenBLAS (found through pkg-config 'openblas')")

# zlib and zstd: reading .gz and .zst corpora in `neox preprocess`
# (core/src/io/line_reader.cpp).
find_package(ZLIB QUIET)
neox_require(ZLIB_FOUND zlib1g-dev "zlib (gzip input for neox preprocess)")
if(PkgConfig_FOUND)
  pkg_check_modules(ZSTD QUIET IMPORTED_TARGET libzstd)
endif()
neox_require(ZSTD_FOUND "libzstd-dev pkg-config" "zstd (found through pkg-config 'libzstd'; .zst input for neox preprocess)")

find_package(OpenMP QUIET COMPONENTS CXX)
neox_require(OpenMP_CXX_FOUND "libgomp1 (part of g++)" "OpenMP")

# Optional: Open MPI (C bindings) for the `mpi` comm plugin (plugins/comm-mpi).
find_package(MPI QUIET COMPONENTS C)
if(MPI_C_FOUND)
  message(STATUS "neox: MPI ${MPI_C_VERSION} found: building the 'mpi' comm plugin")
else()
  message(STATUS "neox: MPI not found: the 'mpi' comm plugin is not built "
                 "(sudo apt-get install libopenmpi-dev openmpi-bin)")
endif()

if(NEOX_BUILD_TESTS)
  find_package(GTest QUIET)
  neox_require(GTest_FOUND "libgtest-dev" "GoogleTest")
endif()
