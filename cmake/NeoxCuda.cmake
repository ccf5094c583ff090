# SPDX-License-Identifier: Apache-2.0
# The optional CUDA backend plugin (plugins/backend-cuda).
#   NEOX_WITH_CUDA           AUTO (default): build it when nvcc and the CUDA
#                            toolkit are found; ON: required; OFF: never.
#   NEOX_CUDA_ARCHITECTURES  GPU architectures to compile for (default 80;90).
# Sets NEOX_BUILD_CUDA when the plugin is built. Include at the top level:
# enable_language(CUDA) must run in the top directory.
set(NEOX_WITH_CUDA AUTO CACHE STRING "Build the CUDA backend plugin: AUTO, ON or OFF")
set_property(CACHE NEOX_WITH_CUDA PROPERTY STRINGS AUTO ON OFF)
set(NEOX_CUDA_ARCHITECTURES "80;90" CACHE STRING "CUDA architectures of the CUDA backend plugin")

string(TOUPPER "${NEOX_WITH_CUDA}" _neox_with_cuda)
if(NOT _neox_with_cuda MATCHES "^(AUTO|ON|OFF|TRUE|FALSE|YES|NO|1|0)$")
  message(FATAL_ERROR "NEOX_WITH_CUDA must be AUTO, ON or OFF, got '${NEOX_WITH_CUDA}'")
endif()
if(_neox_with_cuda MATCHES "^(TRUE|YES|1)$")
  set(_neox_with_cuda ON)
elseif(_neox_with_cuda MATCHES "^(FALSE|NO|0)$")
  set(_neox_with_cuda OFF)
endif()

set(NEOX_BUILD_CUDA OFF)
if(NOT _neox_with_cuda STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  set(_neox_cuda_why "")
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES ${NEOX_CUDA_ARCHITECTURES})
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit QUIET)
    if(CUDAToolkit_FOUND AND TARGET CUDA::cudart_static AND TARGET CUDA::cublasLt)
      set(NEOX_BUILD_CUDA ON)
    else()
      set(_neox_cuda_why "the CUDA toolkit (cudart_static, cublasLt) was not found")
    endif()
  else()
    set(_neox_cuda_why "no CUDA compiler (nvcc) was found; set CMAKE_CUDA_COMPILER or put nvcc on PATH")
  endif()
  if(NEOX_BUILD_CUDA)
    message(STATUS "neox: building the cuda backend plugin (CUDA ${CUDAToolkit_VERSION}, architectures ${NEOX_CUDA_ARCHITECTURES})")
  elseif(_neox_with_cuda STREQUAL "ON")
    message(FATAL_ERROR "NEOX_WITH_CUDA=ON but ${_neox_cuda_why}")
  else()
    message(STATUS "neox: not building the cuda backend plugin: ${_neox_cuda_why}")
  endif()
else()
  message(STATUS "neox: not building the cuda backend plugin (NEOX_WITH_CUDA=OFF)")
endif()

# neox_cuda_directory(): the project's warning and sanitizer flags
# (add_compile_options at the top) are host-compiler flags that nvcc rejects:
# in the calling directory, keep them for C and C++ sources only. CUDA
# sources get -Wall -Wextra through -Xcompiler (neox_cuda_target).
macro(neox_cuda_directory)
  get_property(_neox_dir_options DIRECTORY PROPERTY COMPILE_OPTIONS)
  set(_neox_host_options "")
  foreach(_opt IN LISTS _neox_dir_options)
    list(APPEND _neox_host_options "$<$<COMPILE_LANGUAGE:C,CXX>:${_opt}>")
  endforeach()
  set_property(DIRECTORY PROPERTY COMPILE_OPTIONS "${_neox_host_options}")
  # The neox headers are C++20 (CUDA sources take the CXX_STANDARD when
  # CUDA_STANDARD is unset). CMake before 3.26 does not know nvcc's C++20 flag.
  if(NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  endif()
endmacro()

# neox_cuda_target(<target>): compiles the target's .cu sources for
# NEOX_CUDA_ARCHITECTURES as C++20 and links the static CUDA runtime, which
# loads the driver (libcuda.so.1) on first use, so that the library loads on
# machines without one.
function(neox_cuda_target target)
  set_target_properties(${target} PROPERTIES
    CUDA_ARCHITECTURES "${NEOX_CUDA_ARCHITECTURES}"
    CUDA_RUNTIME_LIBRARY Static
    CUDA_STANDARD 20 CUDA_STANDARD_REQUIRED ON CUDA_EXTENSIONS OFF)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>)
  target_link_libraries(${target} PRIVATE CUDA::cudart_static)
endfunction()
