# SPDX-License-Identifier: Apache-2.0
# neox_add_plugin(<target> KIND <kind> NAME <name> SOURCES <files...>
#                 [OUTPUT_DIRECTORY <dir>] [COMPONENT <component>] [NO_INSTALL])
#
# Builds a plugin: a MODULE library named neox_<kind>_<name>.so (no "lib"
# prefix: the registry checks the file name against the plugin's descriptor)
# with hidden visibility, so that the only symbol it exports is the entry
# symbol that NEOX_PLUGIN(...) of neox/plugin.h defines, linked against
# NeoX::core, and installs it where neox looks for plugins.
#
#   KIND       backend, kernels, comm, optimizer, data or tokenizer
#   NAME       [a-z0-9-]+, as in the plugin's NEOX_PLUGIN(...)
#   OUTPUT_DIRECTORY  where the build puts it (in the neox tree: the build
#              tree's plugins/; elsewhere: CMake's default unless given)
#   COMPONENT  the install component (default: NEOX_PLUGIN_COMPONENT when set)
#   NO_INSTALL no install rule
#
# One implementation for both uses: the neox tree includes this file from
# cmake/, and the installed CMake package (NeoXConfig.cmake, from
# find_package(NeoX)) includes its installed copy. The installed package sets
#   NEOX_INSTALL_PLUGIN_DIR  where plugins are installed (see NeoXConfig.cmake)
#   NEOX_PLUGIN_DIR          the plugin directory of the installed neox
#   NEOX_PLUGIN_INSTALL_RPATH  the directory of the installed libneox.so
# and the neox tree sets NEOX_INSTALL_PLUGIN_DIR (relative to the prefix) and
# NEOX_BUILD_PLUGIN_DIR.
function(neox_add_plugin target)
  cmake_parse_arguments(P "NO_INSTALL" "KIND;NAME;OUTPUT_DIRECTORY;COMPONENT" "SOURCES" ${ARGN})
  if(P_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "neox_add_plugin(${target}): unknown arguments: ${P_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT P_KIND OR NOT P_NAME OR NOT P_SOURCES)
    message(FATAL_ERROR "neox_add_plugin(${target}): KIND, NAME and SOURCES are required")
  endif()
  if(NOT P_KIND MATCHES "^(backend|kernels|comm|optimizer|data|tokenizer)$")
    message(FATAL_ERROR "neox_add_plugin(${target}): KIND '${P_KIND}' is not one of backend, kernels, "
                        "comm, optimizer, data, tokenizer")
  endif()
  if(NOT P_NAME MATCHES "^[a-z0-9-]+$")
    message(FATAL_ERROR "neox_add_plugin(${target}): NAME '${P_NAME}' must match [a-z0-9-]+ "
                        "(the name given to NEOX_PLUGIN(...))")
  endif()
  if(NOT P_OUTPUT_DIRECTORY AND DEFINED NEOX_BUILD_PLUGIN_DIR)
    set(P_OUTPUT_DIRECTORY ${NEOX_BUILD_PLUGIN_DIR})
  endif()
  if(NOT P_COMPONENT AND DEFINED NEOX_PLUGIN_COMPONENT)
    set(P_COMPONENT ${NEOX_PLUGIN_COMPONENT})
  endif()
  if(DEFINED NEOX_PLUGIN_INSTALL_RPATH)
    # None where libneox.so is in a directory the loader searches anyway (/usr/lib).
    set(_rpath "")
    if(NOT NEOX_PLUGIN_INSTALL_RPATH IN_LIST CMAKE_CXX_IMPLICIT_LINK_DIRECTORIES)
      set(_rpath "${NEOX_PLUGIN_INSTALL_RPATH}")
    endif()
  else()
    set(_rpath "$ORIGIN/../..")  # <libdir>/neox/plugins -> <libdir>, where libneox.so is
  endif()

  add_library(${target} MODULE ${P_SOURCES})
  target_link_libraries(${target} PRIVATE NeoX::core)
  set_target_properties(${target} PROPERTIES
    PREFIX ""
    SUFFIX ".so"
    OUTPUT_NAME "neox_${P_KIND}_${P_NAME}"
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden
    CUDA_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    INSTALL_RPATH "${_rpath}")
  if(P_OUTPUT_DIRECTORY)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${P_OUTPUT_DIRECTORY})
  endif()

  if(NOT P_NO_INSTALL AND DEFINED NEOX_INSTALL_PLUGIN_DIR)
    if(P_COMPONENT)
      install(TARGETS ${target} LIBRARY DESTINATION ${NEOX_INSTALL_PLUGIN_DIR} COMPONENT ${P_COMPONENT})
    else()
      install(TARGETS ${target} LIBRARY DESTINATION ${NEOX_INSTALL_PLUGIN_DIR})
    endif()
    # Out of the neox tree: say when the installed neox will not find it.
    if(DEFINED NEOX_PLUGIN_DIR)
      if(IS_ABSOLUTE "${NEOX_INSTALL_PLUGIN_DIR}")
        set(_dest "${NEOX_INSTALL_PLUGIN_DIR}")
      else()
        set(_dest "${CMAKE_INSTALL_PREFIX}/${NEOX_INSTALL_PLUGIN_DIR}")
      endif()
      get_filename_component(_dest "${_dest}" ABSOLUTE)
      get_filename_component(_neox_dir "${NEOX_PLUGIN_DIR}" ABSOLUTE)
      if(NOT _dest STREQUAL _neox_dir)
        message(STATUS "neox_add_plugin(${target}): installs into ${_dest}, which the neox at "
                       "${NEOX_PREFIX} does not search; run neox with NEOX_PLUGIN_PATH=${_dest} or add the "
                       "directory to [plugins] search_paths")
      endif()
    endif()
  endif()
endfunction()
