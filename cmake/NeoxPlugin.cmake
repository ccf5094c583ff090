# SPDX-License-Identifier: Apache-2.0
# neox_add_plugin(<target> KIND <kind> NAME <name> SOURCES <files...>
#                 [OUTPUT_DIRECTORY <dir>] [NO_INSTALL])
# Builds a plugin module named neox_<kind>_<name>.so with hidden visibility,
# linked against the core, placed where the registry looks for it.
function(neox_add_plugin target)
  cmake_parse_arguments(P "NO_INSTALL" "KIND;NAME;OUTPUT_DIRECTORY" "SOURCES" ${ARGN})
  if(NOT P_KIND OR NOT P_NAME OR NOT P_SOURCES)
    message(FATAL_ERROR "neox_add_plugin(${target}): KIND, NAME and SOURCES are required")
  endif()
  if(NOT P_OUTPUT_DIRECTORY)
    set(P_OUTPUT_DIRECTORY ${NEOX_BUILD_PLUGIN_DIR})
  endif()
  add_library(${target} MODULE ${P_SOURCES})
  target_link_libraries(${target} PRIVATE neox::core)
  set_target_properties(${target} PROPERTIES
    PREFIX ""
    OUTPUT_NAME "neox_${P_KIND}_${P_NAME}"
    CXX_VISIBILITY_PRESET hidden
    CUDA_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    LIBRARY_OUTPUT_DIRECTORY ${P_OUTPUT_DIRECTORY}
    INSTALL_RPATH "$ORIGIN/../..")
  if(NOT P_NO_INSTALL AND DEFINED NEOX_INSTALL_PLUGIN_DIR)
    install(TARGETS ${target} LIBRARY DESTINATION ${NEOX_INSTALL_PLUGIN_DIR})
  endif()
endfunction()
