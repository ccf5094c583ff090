# SPDX-License-Identifier: Apache-2.0
# The CMake package for plugin authors, installed to <libdir>/cmake/NeoX:
#   NeoXConfig.cmake         find_package(NeoX): the imported target NeoX::core,
#                            neox_add_plugin() and the NEOX_* variables below
#   NeoXConfigVersion.cmake  version compatibility (see below)
#   NeoXTargets*.cmake       the exported neox_core (as NeoX::core)
#   NeoxPlugin.cmake         neox_add_plugin(), the same file the tree uses
# Component `dev` (the neox-dev package), with the headers.
#
# Versions. Whether a built plugin loads into a neox is decided at run time by
# the plugin ABI of neox/plugin.h (the version of the plugin's kind: same
# major, a minor not above the core's; the same kernel table for the kinds
# that use it), not by the package version: the registry refuses a stale
# plugin with a message that says to rebuild it. The package version is
# about the source API of the headers: while neox is 0.x every minor release
# may change it (as semantic versioning allows before 1.0), so
# find_package(NeoX 0.1) accepts 0.1.y only (SameMinorVersion); from 1.0 on,
# any 1.y with y >= the requested one (SameMajorVersion). Each kind's ABI
# version is exported as NEOX_ABI_<KIND> ("6.0"), NEOX_ABI_<KIND>_MAJOR and
# NEOX_ABI_<KIND>_MINOR (KIND: BACKEND, KERNELS, COMM, OPTIMIZER, DATA,
# TOKENIZER) for projects that want to check it.
include(CMakePackageConfigHelpers)

set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/core/include/neox/plugin.h)
# One constant per kind, `inline constexpr AbiVersion k<Kind>Abi{M, m};`,
# read into NEOX_ABI_<KIND> ("M.m") for NeoXConfig.cmake; kernels plugins
# share the backend's.
foreach(_kind Backend Comm Optimizer Data Tokenizer)
  file(STRINGS ${PROJECT_SOURCE_DIR}/core/include/neox/plugin.h _neox_abi_line
       REGEX "inline constexpr AbiVersion k${_kind}Abi\\{[0-9]+, [0-9]+\\};")
  string(REGEX REPLACE ".*k${_kind}Abi\\{([0-9]+), ([0-9]+)\\}.*" "\\1.\\2" _neox_abi "${_neox_abi_line}")
  if(NOT _neox_abi MATCHES "^[0-9]+\\.[0-9]+$")
    message(FATAL_ERROR "cmake/NeoxInstall.cmake: cannot read k${_kind}Abi from core/include/neox/plugin.h")
  endif()
  string(TOUPPER ${_kind} _upper)
  set(NEOX_ABI_${_upper} ${_neox_abi})
endforeach()
set(NEOX_ABI_KERNELS ${NEOX_ABI_BACKEND})

if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(_neox_compatibility SameMinorVersion)
else()
  set(_neox_compatibility SameMajorVersion)
endif()

install(EXPORT NeoXTargets
  NAMESPACE NeoX::
  FILE NeoXTargets.cmake
  DESTINATION ${NEOX_INSTALL_CMAKE_DIR}
  COMPONENT dev)
configure_package_config_file(
  ${PROJECT_SOURCE_DIR}/cmake/NeoXConfig.cmake.in
  ${PROJECT_BINARY_DIR}/cmake/NeoXConfig.cmake
  INSTALL_DESTINATION ${NEOX_INSTALL_CMAKE_DIR}
  PATH_VARS CMAKE_INSTALL_INCLUDEDIR CMAKE_INSTALL_LIBDIR CMAKE_INSTALL_BINDIR NEOX_INSTALL_PLUGIN_DIR)
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/cmake/NeoXConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY ${_neox_compatibility})
install(FILES
  ${PROJECT_BINARY_DIR}/cmake/NeoXConfig.cmake
  ${PROJECT_BINARY_DIR}/cmake/NeoXConfigVersion.cmake
  ${PROJECT_SOURCE_DIR}/cmake/NeoxPlugin.cmake
  DESTINATION ${NEOX_INSTALL_CMAKE_DIR}
  COMPONENT dev)
