# The installed package: `cmake --install build --prefix P` puts
#   P/include/mlr/<module>/*.h          the headers, in their folders (#include "llama/model.h")
#   P/lib/libmlr_<module>.a             the libraries
#   P/bin/mlr-*                         the programs
#   P/lib/cmake/mlr/mlrConfig.cmake     find_package(mlr): imported targets mlr::<module> and mlr::mlr
# and a program of its own project uses it as
#   find_package(mlr 0.1 REQUIRED)
#   target_link_libraries(my_program PRIVATE mlr::mlr)
# (examples/custom_adapter/ is one; the ctest install_package_example builds and runs it).
include(CMakePackageConfigHelpers)
set(MLR_CMAKE_INSTALL_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/mlr)
install(EXPORT mlrTargets NAMESPACE mlr:: DESTINATION ${MLR_CMAKE_INSTALL_DIR})
# What the configuration file needs to know about this build (which dependencies to find).
set(MLR_PACKAGE_CUDA OFF)
if(MLR_CUDA AND NOT MLR_CUDA_EMULATION)
  set(MLR_PACKAGE_CUDA ON)
endif()
get_filename_component(MLR_OPENBLAS_LIB_DIR ${MLR_OPENBLAS_LIB} DIRECTORY)
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/mlrConfig.cmake.in
                              ${CMAKE_CURRENT_BINARY_DIR}/mlrConfig.cmake
                              INSTALL_DESTINATION ${MLR_CMAKE_INSTALL_DIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/mlrConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/mlrConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/mlrConfigVersion.cmake
        DESTINATION ${MLR_CMAKE_INSTALL_DIR})
