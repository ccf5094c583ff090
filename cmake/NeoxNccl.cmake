# SPDX-License-Identifier: Apache-2.0
# The optional `nccl` comm plugin (plugins/comm-nccl).
#   NEOX_WITH_NCCL  AUTO (default): build it when the CUDA plugin is built
#                   (cmake/NeoxCuda.cmake) and NCCL 2.14 or newer is found;
#                   ON: required; OFF: never.
#   NCCL_ROOT       (cache or environment) where to look first: <root>/include
#                   and <root>/lib; the CUDA toolkit's directories and the
#                   system's (Debian's libnccl-dev) are searched too.
# Sets NEOX_BUILD_NCCL and, when set, the imported target neox::nccl and
# NCCL_VERSION_STRING. Include after NeoxCuda.
set(NEOX_WITH_NCCL AUTO CACHE STRING "Build the NCCL comm plugin: AUTO, ON or OFF")
set_property(CACHE NEOX_WITH_NCCL PROPERTY STRINGS AUTO ON OFF)

string(TOUPPER "${NEOX_WITH_NCCL}" _neox_with_nccl)
if(_neox_with_nccl MATCHES "^(TRUE|YES|1)$")
  set(_neox_with_nccl ON)
elseif(_neox_with_nccl MATCHES "^(FALSE|NO|0)$")
  set(_neox_with_nccl OFF)
endif()
if(NOT _neox_with_nccl MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "NEOX_WITH_NCCL must be AUTO, ON or OFF, got '${NEOX_WITH_NCCL}'")
endif()

set(NEOX_BUILD_NCCL OFF)
set(_neox_nccl_why "")
if(_neox_with_nccl STREQUAL "OFF")
  set(_neox_nccl_why "NEOX_WITH_NCCL=OFF")
elseif(NOT NEOX_BUILD_CUDA)
  set(_neox_nccl_why "the cuda backend is not built (see the message about it above)")
else()
  set(_neox_nccl_hints ${NCCL_ROOT} $ENV{NCCL_ROOT} $ENV{NCCL_HOME} ${CUDAToolkit_LIBRARY_ROOT})
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${_neox_nccl_hints} ${CUDAToolkit_INCLUDE_DIRS} PATH_SUFFIXES include)
  find_library(NCCL_LIBRARY NAMES nccl HINTS ${_neox_nccl_hints} ${CUDAToolkit_LIBRARY_DIR}
               PATH_SUFFIXES lib lib64 lib/x86_64-linux-gnu)
  if(NOT NCCL_INCLUDE_DIR OR NOT NCCL_LIBRARY)
    set(_neox_nccl_why "NCCL was not found (nccl.h: ${NCCL_INCLUDE_DIR}; libnccl: ${NCCL_LIBRARY}); install "
                       "libnccl-dev or set NCCL_ROOT")
  else()
    file(STRINGS "${NCCL_INCLUDE_DIR}/nccl.h" _neox_nccl_defs REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) +[0-9]+")
    foreach(_part MAJOR MINOR PATCH)
      string(REGEX REPLACE ".*#define NCCL_${_part} +([0-9]+).*" "\\1" _neox_nccl_${_part} "${_neox_nccl_defs}")
    endforeach()
    set(NCCL_VERSION_STRING "${_neox_nccl_MAJOR}.${_neox_nccl_MINOR}.${_neox_nccl_PATCH}")
    # ncclCommInitRankConfig with non-blocking communicators and ncclGetLastError.
    if(NCCL_VERSION_STRING VERSION_LESS 2.14)
      set(_neox_nccl_why "NCCL ${NCCL_VERSION_STRING} at ${NCCL_INCLUDE_DIR} is older than 2.14")
    else()
      set(NEOX_BUILD_NCCL ON)
      if(NOT TARGET neox::nccl)
        add_library(neox::nccl UNKNOWN IMPORTED)
        set_target_properties(neox::nccl PROPERTIES IMPORTED_LOCATION "${NCCL_LIBRARY}"
                                                    INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}")
      endif()
    endif()
  endif()
endif()

if(NEOX_BUILD_NCCL)
  message(STATUS "neox: building the 'nccl' comm plugin (NCCL ${NCCL_VERSION_STRING}: ${NCCL_LIBRARY})")
elseif(_neox_with_nccl STREQUAL "ON")
  message(FATAL_ERROR "NEOX_WITH_NCCL=ON but ${_neox_nccl_why}")
else()
  message(STATUS "neox: not building the 'nccl' comm plugin: ${_neox_nccl_why}")
endif()
