# mlr_module(NAME DEPS ...): one library per folder. Sources are globbed so adding a kernel file
# needs no CMake edit: NAME/*.cpp, NAME/kernels/cpu/*.cpp and, with CUDA, NAME/**/*.cu.
function(mlr_module name)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB_RECURSE cpp_sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cpp)
  set(sources ${cpp_sources})
  if(MLR_CUDA)
    file(GLOB_RECURSE cu_sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cu)
    if(NOT MLR_CUDA_KERNELS)
      list(FILTER cu_sources INCLUDE REGEX "/runtime\\.cu$")  # the device runtime only
    endif()
    list(APPEND sources ${cu_sources})
    if(MLR_CUDA_EMULATION AND cu_sources)
      set_source_files_properties(${cu_sources} PROPERTIES LANGUAGE CXX COMPILE_OPTIONS
        "-x;c++;-Wno-unknown-pragmas;-include;${PROJECT_SOURCE_DIR}/tensor/kernels/cuda/emulator.h")
    endif()
  endif()
  add_library(mlr_${name} ${sources})
  # In the tree the sources include "tensor/tensor.h" from the repository root; installed, the
  # headers keep their folders under include/mlr (include/mlr/tensor/tensor.h), so the same
  # #include lines work in a program built against the package.
  target_include_directories(mlr_${name} PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}> $<INSTALL_INTERFACE:include/mlr>)
  target_compile_features(mlr_${name} PUBLIC cxx_std_20)
  target_link_libraries(mlr_${name} PUBLIC ${ARG_DEPS})
  target_compile_options(mlr_${name} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter -Werror=switch>
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr --extended-lambda>)
  if(MLR_CUDA)
    target_compile_definitions(mlr_${name} PUBLIC MLR_CUDA=1)
    if(MLR_CUDA_KERNELS)
      target_compile_definitions(mlr_${name} PUBLIC MLR_CUDA_KERNELS=1)
    endif()
    if(MLR_CUDA_EMULATION)
      target_compile_definitions(mlr_${name} PUBLIC MLR_CUDA_EMULATION=1)
      target_include_directories(mlr_${name} SYSTEM PUBLIC ${CUDAToolkit_INCLUDE_DIRS})
    else()
      set_target_properties(mlr_${name} PROPERTIES CUDA_SEPARABLE_COMPILATION OFF)
    endif()
  endif()
  if(MLR_FUZZ AND name IN_LIST MLR_FUZZ_INSTRUMENTED)
    target_compile_options(mlr_${name} PRIVATE ${MLR_FUZZ_COMPILE_OPTIONS})
  endif()
  add_library(mlr::${name} ALIAS mlr_${name})
  mlr_install_library(mlr_${name} ${name})
  # The headers of the folder (kernel headers included: some public headers reach them).
  get_filename_component(folder ${CMAKE_CURRENT_SOURCE_DIR} NAME)
  install(DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/mlr/${folder}
          FILES_MATCHING PATTERN "*.h" PATTERN "*.cuh")
endfunction()

# mlr_install_library(TARGET EXPORT_NAME): installs a library into the package's export set, where
# find_package(mlr) makes it mlr::EXPORT_NAME (the same name as the alias in the tree).
function(mlr_install_library target export_name)
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${export_name})
  install(TARGETS ${target} EXPORT mlrTargets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
          RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endfunction()

# mlr_test(MODULE DEPS ...): tests/MODULE/*_test.cpp -> one doctest binary test_MODULE, registered
# with ctest. Files named *_cuda_test.cpp go to a second binary labelled "cuda", which skips itself
# with a message when no GPU is present. A test that cannot run reports "skipped" through
# SKIP_RETURN_CODE 77, never "passed".
function(mlr_test module)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB all_tests CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${module}/*_test.cpp)
  set(cpu_tests "")
  set(cuda_tests "")
  foreach(f ${all_tests})
    if(f MATCHES "_cuda_test\\.cpp$")
      list(APPEND cuda_tests ${f})
    else()
      list(APPEND cpu_tests ${f})
    endif()
  endforeach()
  if(cpu_tests)
    add_executable(test_${module} ${PROJECT_SOURCE_DIR}/tests/doctest_main.cpp ${cpu_tests})
    target_link_libraries(test_${module} PRIVATE ${ARG_DEPS} doctest::doctest)
    target_include_directories(test_${module} PRIVATE ${PROJECT_SOURCE_DIR})
    target_compile_definitions(test_${module} PRIVATE MLR_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
    # Test cases decorated `* mlr_test::needs_external` or `* mlr_test::opt_in`
    # (tests/test_support.h) may lack their inputs: each group runs as its own entry
    # (<module>_external, <module>_opt_in), reported skipped (exit 77) when an input is missing. The
    # first entry excludes them and has no skip code, so a skip there fails.
    set(excluded "")
    foreach(group external opt_in)
      set(used FALSE)
      foreach(f ${cpu_tests})
        file(STRINGS ${f} lines REGEX "mlr_test::(needs_)?${group}")
        if(lines)
          set(used TRUE)
        endif()
      endforeach()
      if(used)
        list(APPEND excluded ${group})
        add_test(NAME ${module}_${group} COMMAND test_${module} --test-suite=${group} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
        set_tests_properties(${module}_${group} PROPERTIES LABELS "cpu" SKIP_RETURN_CODE 77 ENVIRONMENT MLR_CPU_POISON=1)
      endif()
    endforeach()
    if(excluded)
      list(JOIN excluded "," excluded)
      add_test(NAME ${module} COMMAND test_${module} --test-suite-exclude=${excluded} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    else()
      add_test(NAME ${module} COMMAND test_${module} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    endif()
    # Every CPU tensor block is handed out filled with 0xFF (tensor/cpu_allocator.h): a kernel that
    # reads memory it never wrote fails here instead of passing on the zeros of fresh pages.
    set_tests_properties(${module} PROPERTIES LABELS "cpu" ENVIRONMENT MLR_CPU_POISON=1)
  endif()
  if(cuda_tests AND MLR_CUDA AND MLR_CUDA_KERNELS)
    add_executable(test_${module}_cuda ${PROJECT_SOURCE_DIR}/tests/doctest_main.cpp ${cuda_tests})
    target_link_libraries(test_${module}_cuda PRIVATE ${ARG_DEPS} doctest::doctest)
    target_include_directories(test_${module}_cuda PRIVATE ${PROJECT_SOURCE_DIR})
    target_compile_definitions(test_${module}_cuda PRIVATE MLR_SOURCE_DIR="${PROJECT_SOURCE_DIR}" MLR_CUDA_TEST_BINARY=1)
    add_test(NAME ${module}_cuda COMMAND test_${module}_cuda WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    set_tests_properties(${module}_cuda PROPERTIES LABELS "cuda" SKIP_RETURN_CODE 77)
    mlr_cuda_test_targets(test_${module}_cuda)
  endif()
endfunction()

# mlr_cuda_test_targets(TARGET ...): programs that tests labelled "cuda" run. The `cuda_tests`
# target builds them all (scripts/test.sh builds only these in the emulated CUDA build).
function(mlr_cuda_test_targets)
  if(NOT TARGET cuda_tests)
    add_custom_target(cuda_tests)
  endif()
  add_dependencies(cuda_tests ${ARGN})
endfunction()

# mlr_add_output_test(NAME name EXPECT regex COMMAND cmd args... [EXIT_CODE n] [WORKING_DIRECTORY dir]):
# a ctest entry that passes only when the command exits with n (default 0; 1 for a program that
# must fail with a given error) and its output matches `regex` (CMake regex, stdout and stderr
# together). Use it instead of PASS_REGULAR_EXPRESSION, which ignores the exit
# code. A first word naming a target runs that target's program, as in add_test. The exit code is
# passed through, so SKIP_RETURN_CODE 77 set on the entry still reports a skip.
function(mlr_add_output_test)
  # PARSE_ARGV keeps the semicolons of a shell command (sh -c "a; b") inside its argument.
  cmake_parse_arguments(PARSE_ARGV 0 ARG "" "NAME;EXPECT;EXIT_CODE;WORKING_DIRECTORY" "COMMAND")
  if(NOT DEFINED ARG_EXIT_CODE)
    set(ARG_EXIT_CODE 0)
  endif()
  list(GET ARG_COMMAND 0 program)
  if(TARGET ${program})
    list(REMOVE_AT ARG_COMMAND 0)
    list(PREPEND ARG_COMMAND "$<TARGET_FILE:${program}>")
  endif()
  set(expect_file ${CMAKE_CURRENT_BINARY_DIR}/expected_output/${ARG_NAME}.regex)
  file(WRITE ${expect_file} "${ARG_EXPECT}")
  if(NOT ARG_WORKING_DIRECTORY)
    set(ARG_WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  endif()
  add_test(NAME ${ARG_NAME}
           COMMAND sh ${PROJECT_SOURCE_DIR}/cmake/expect_output.sh ${CMAKE_COMMAND} ${expect_file} ${ARG_EXIT_CODE}
                   ${ARG_COMMAND}
           WORKING_DIRECTORY ${ARG_WORKING_DIRECTORY})
endfunction()
