# SPDX-License-Identifier: Apache-2.0
# CPack: `cpack --config <build>/CPackConfig.cmake` (or `cd <build> && cpack`)
# makes, from the install rules of the tree,
#   neox_<version>-1_<arch>.deb       component `runtime`: bin/neox, libneox.so.N,
#                                     every plugin that needs no CUDA (cpu,
#                                     comm local and mpi, optimizers, data)
#   neox-dev_<version>-1_<arch>.deb   component `dev`: the headers, the
#                                     libneox.so link and the CMake package
#                                     (find_package(NeoX), cmake/NeoxInstall.cmake)
#   neox-cuda_<version>-1_<arch>.deb  component `cuda`, when the CUDA plugin is
#                                     built: the cuda backend and nccl comm plugins
#   neox-<version>-Linux.tar.gz       all of them in one relocatable tree
# The .deb files install under /usr (the libraries in /usr/<libdir>, as the
# build was configured: lib for the default prefix). docs/install.md says what
# each package holds and needs.
#
# Dependencies. The neox package's Depends come from dpkg-shlibdeps (dpkg-dev,
# and `file`: packaging/install-deps.sh installs both), so they name the
# Debian packages of the libraries the binaries link (libspdlog1.10,
# libopenblas0, libopenmpi3, ...). neox-dev depends on neox of the same
# version and on the -dev packages its headers and CMake package need.
# neox-cuda depends on neox of the same version only, written by hand: the
# CUDA libraries are not Debian packages here. Its plugins link the CUDA
# runtime statically (cmake/NeoxCuda.cmake), so they need the NVIDIA driver's
# libcuda.so.1 at run time, plus cuBLASLt (libcublasLt.so.<CUDA major>) and,
# for the nccl plugin, NCCL (libnccl.so.2) on the loader's path (the CUDA
# toolkit's installer and NVIDIA's packages put them there: /etc/ld.so.conf.d);
# a plugin whose libraries are missing is listed by `neox plugins` as rejected
# with the loader's message, and the rest of neox works.

set(NEOX_PACKAGE_CONTACT "neox maintainers <maintainers@neox.invalid>" CACHE STRING
    "Maintainer of the .deb packages (Name <email>)")
set(NEOX_PACKAGE_HOMEPAGE "https://neox.invalid/" CACHE STRING "Homepage field of the packages")
set(NEOX_PACKAGE_RELEASE 1 CACHE STRING "Debian revision of the packages (the -N of <version>-N)")

# /usr/share/doc/<package>/copyright, as Debian policy asks: machine-readable,
# pointing at the system's copy of the Apache-2.0 text, plus LICENSE itself.
set(_neox_copyright ${PROJECT_BINARY_DIR}/packaging/copyright)
file(WRITE ${_neox_copyright}
  "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
  "Upstream-Name: neox\n"
  "Source: ${NEOX_PACKAGE_HOMEPAGE}\n"
  "\n"
  "Files: *\n"
  "Copyright: the neox authors\n"
  "License: Apache-2.0\n"
  " On Debian systems the full text of the Apache License 2.0 is in\n"
  " /usr/share/common-licenses/Apache-2.0; it is also in LICENSE next to this file.\n")
set(_neox_components runtime dev)
if(NEOX_BUILD_CUDA)
  list(APPEND _neox_components cuda)
endif()
set(_neox_doc_runtime neox)
set(_neox_doc_dev neox-dev)
set(_neox_doc_cuda neox-cuda)
foreach(_c IN LISTS _neox_components)
  install(FILES ${_neox_copyright} ${PROJECT_SOURCE_DIR}/LICENSE
          DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/${_neox_doc_${_c}} COMPONENT ${_c})
endforeach()

set(CPACK_PACKAGE_NAME neox)
set(CPACK_PACKAGE_VENDOR "neox")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${NEOX_PACKAGE_CONTACT}")
set(CPACK_PACKAGE_HOMEPAGE_URL "${NEOX_PACKAGE_HOMEPAGE}")
# No CPACK_PACKAGE_DESCRIPTION_SUMMARY: CPackDeb would put it in front of
# every component's description; the first line of each description below is
# that package's synopsis, the rest its extended description.
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_RESOURCE_FILE_README ${PROJECT_SOURCE_DIR}/README.md)
set(CPACK_GENERATOR DEB TGZ)
set(CPACK_SOURCE_GENERATOR "")
set(CPACK_COMPONENTS_ALL ${_neox_components})
set(CPACK_PACKAGE_DIRECTORY ${PROJECT_BINARY_DIR}/packages)
set(CPACK_VERBATIM_VARIABLES ON)

set(CPACK_COMPONENT_RUNTIME_DISPLAY_NAME "neox")
set(CPACK_COMPONENT_DEV_DISPLAY_NAME "neox-dev")
set(CPACK_COMPONENT_CUDA_DISPLAY_NAME "neox-cuda")
set(CPACK_COMPONENT_DEV_DEPENDS runtime)
set(CPACK_COMPONENT_CUDA_DEPENDS runtime)

# The archive: one tree with every component (bin/, lib/, include/, share/).
set(CPACK_ARCHIVE_COMPONENT_INSTALL OFF)

# Debian packages, one per component.
set(_neox_deb_version "${PROJECT_VERSION}-${NEOX_PACKAGE_RELEASE}")
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE ${NEOX_PACKAGE_RELEASE})
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${NEOX_PACKAGE_CONTACT}")
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "${NEOX_PACKAGE_HOMEPAGE}")
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)

set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME neox)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SHLIBDEPS ON)
# libneox.so.N is in the package itself: dpkg-shlibdeps finds it here.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS ${NEOX_BUILD_LIB_DIR})
set(CPACK_DEBIAN_RUNTIME_PACKAGE_RECOMMENDS "openmpi-bin")
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SUGGESTS "neox-dev, neox-cuda")
set(CPACK_DEBIAN_RUNTIME_DESCRIPTION
  "GPT-NeoX-style language model training in native C++
neox trains GPT-NeoX and Pythia-style language models on the CPU (and on
NVIDIA GPUs with the neox-cuda package): the `neox` command (train,
generate, score, convert, preprocess, bench, plugins), the core library
libneox and the plugins that need no CUDA: the cpu backend (OpenBLAS,
OpenMP), the local and mpi communicators, the adamw and zero optimizers and
the mmap and fixed data sources. Plugins are found in
/usr/${NEOX_INSTALL_PLUGIN_DIR} without environment variables.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME neox-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SHLIBDEPS OFF)
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "neox (= ${_neox_deb_version}), libspdlog-dev")
set(CPACK_DEBIAN_DEV_PACKAGE_RECOMMENDS "cmake (>= 3.22), g++")
set(CPACK_DEBIAN_DEV_DESCRIPTION
  "neox plugin SDK: headers and CMake package
The public headers of the neox core (C++20) and the CMake package for
building neox plugins out of the neox tree: find_package(NeoX) gives the
imported target NeoX::core and neox_add_plugin(), which builds a plugin
module with the right name and visibility and installs it where neox
finds it.")

set(CPACK_DEBIAN_CUDA_PACKAGE_NAME neox-cuda)
set(CPACK_DEBIAN_CUDA_PACKAGE_SHLIBDEPS OFF)
set(CPACK_DEBIAN_CUDA_PACKAGE_DEPENDS "neox (= ${_neox_deb_version})")
string(REPLACE ";" ", " _neox_cuda_archs "${NEOX_CUDA_ARCHITECTURES}")
set(CPACK_DEBIAN_CUDA_DESCRIPTION
  "neox plugins for NVIDIA GPUs: cuda backend and nccl communicator
The cuda backend plugin (CUDA kernels and cuBLASLt; GPU architectures
${_neox_cuda_archs}) and the nccl comm plugin. The CUDA runtime is linked
statically. At run time they need the NVIDIA driver (libcuda.so.1),
cuBLASLt of CUDA ${CUDAToolkit_VERSION_MAJOR} (libcublasLt.so.${CUDAToolkit_VERSION_MAJOR}) and, for nccl, NCCL 2.14
or newer (libnccl.so.2) on the loader's path; they are not Debian
packages, so Depends does not name them.")

include(CPack)
