# cmake -DOUTPUT_FILE=... -DEXPECT_FILE=... -P match_output.cmake: fails unless the output matches
# the regular expression (CMake's syntax, as PASS_REGULAR_EXPRESSION uses). Run by expect_output.sh.
file(READ "${OUTPUT_FILE}" output)
file(READ "${EXPECT_FILE}" expected)
if(NOT output MATCHES "${expected}")
  message(FATAL_ERROR "expect_output: the output does not match the expected pattern:\n${expected}")
endif()
