# Third-party libraries, all from Debian packages (scripts/install_deps.sh installs them).
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(fmt REQUIRED)
find_package(PkgConfig REQUIRED)

# OpenBLAS in its OpenMP build (Debian: libopenblas-openmp-dev), linked by path: its GEMMs then run on
# the same OpenMP thread pool as our kernels' loops (tensor/cpu_runtime.h). The pthreads build, which
# Debian's alternatives prefer, starts threads of its own that spin against OpenMP's for the same
# cores. Debian ships cblas.h through the alternatives system; we link the library directly so the
# BLAS we benchmark is the one we ship against. Without the OpenMP build the default OpenBLAS is
# used, with a warning here and in mlr-train's start-up line. The OpenMP build uses GCC's libgomp:
# a clang build (scripts/fuzz.sh, with LLVM's libomp) keeps the default one rather than load two
# OpenMP runtimes.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  find_library(MLR_OPENBLAS_OPENMP_LIB NAMES openblas NO_DEFAULT_PATH
               PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp /usr/lib64/openblas-openmp)
  find_path(MLR_CBLAS_OPENMP_INCLUDE NAMES cblas.h NO_DEFAULT_PATH
            PATHS /usr/include/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp)
endif()
if(MLR_OPENBLAS_OPENMP_LIB AND MLR_CBLAS_OPENMP_INCLUDE)
  set(MLR_OPENBLAS_LIB ${MLR_OPENBLAS_OPENMP_LIB})
  set(MLR_CBLAS_INCLUDE ${MLR_CBLAS_OPENMP_INCLUDE})
else()
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    message(WARNING "OpenBLAS's OpenMP build not found (install libopenblas-openmp-dev): linking the default "
                    "OpenBLAS, whose threads compete with OpenMP's for the cores")
  endif()
  find_library(MLR_OPENBLAS_LIB NAMES openblas REQUIRED)
  find_path(MLR_CBLAS_INCLUDE NAMES cblas.h PATH_SUFFIXES openblas x86_64-linux-gnu/openblas-pthread REQUIRED)
endif()
# Installed, mlr::blas stands for the same two paths, found again by mlrConfig.cmake on the machine
# that uses the package.
add_library(mlr_blas INTERFACE)
target_link_libraries(mlr_blas INTERFACE $<BUILD_INTERFACE:${MLR_OPENBLAS_LIB}> $<INSTALL_INTERFACE:mlr::openblas>)
target_include_directories(mlr_blas INTERFACE $<BUILD_INTERFACE:${MLR_CBLAS_INCLUDE}>)
# The library's directory is not on the loader's path (the alternatives link there points at the
# default build): the programs carry it as their run path, in the build and once installed.
set(CMAKE_INSTALL_RPATH_USE_LINK_PATH ON)

find_package(doctest QUIET)
if(NOT doctest_FOUND)
  find_path(MLR_DOCTEST_INCLUDE NAMES doctest/doctest.h REQUIRED)
  add_library(doctest::doctest INTERFACE IMPORTED)
  target_include_directories(doctest::doctest INTERFACE ${MLR_DOCTEST_INCLUDE})
endif()
find_package(nlohmann_json QUIET)
find_package(yaml-cpp QUIET)
find_package(CLI11 QUIET)
pkg_check_modules(ZSTD QUIET IMPORTED_TARGET libzstd)
pkg_check_modules(SENTENCEPIECE QUIET IMPORTED_TARGET sentencepiece)
