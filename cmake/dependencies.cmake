# Third-party libraries, all from Debian packages (scripts/install_deps.sh installs them).
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(fmt REQUIRED)
find_package(PkgConfig REQUIRED)

# OpenBLAS: Debian ships cblas.h through the alternatives system; link openblas directly so the
# BLAS we benchmark is the one we ship against.
find_library(MLR_OPENBLAS_LIB NAMES openblas REQUIRED)
find_path(MLR_CBLAS_INCLUDE NAMES cblas.h PATH_SUFFIXES openblas x86_64-linux-gnu/openblas-pthread REQUIRED)
# Installed, mlr::blas stands for the same two paths, found again by mlrConfig.cmake on the machine
# that uses the package.
add_library(mlr_blas INTERFACE)
target_link_libraries(mlr_blas INTERFACE $<BUILD_INTERFACE:${MLR_OPENBLAS_LIB}> $<INSTALL_INTERFACE:mlr::openblas>)
target_include_directories(mlr_blas INTERFACE $<BUILD_INTERFACE:${MLR_CBLAS_INCLUDE}>)

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
