#!/bin/sh
# expect_output.sh CMAKE EXPECT_FILE EXIT_CODE COMMAND [ARG...]: the driver of the ctest entries that match
# output (mlr_add_output_test, cmake/mlr_module.cmake). ctest's PASS_REGULAR_EXPRESSION alone
# ignores the exit code, so a program that prints the expected line and then crashes would pass.
# Here the command must exit with EXIT_CODE (0, or 1 for a test of an error) AND its output (stdout and stderr together) must match the CMake
# regular expression stored in EXPECT_FILE. An unexpected exit code is passed on (1 where that
# would be 0), so 77 still reports "skipped" where the entry sets SKIP_RETURN_CODE 77.
cmake_command=$1
expect_file=$2
expected_rc=$3
shift 3
output=$(mktemp "${TMPDIR:-/tmp}/mlr_expect_output.XXXXXX") || exit 1
trap 'rm -f "$output"' EXIT
"$@" >"$output" 2>&1
rc=$?
cat "$output"
if [ "$rc" -ne "$expected_rc" ]; then
  echo "expect_output: the command exited with code $rc, expected $expected_rc"
  [ "$rc" -ne 0 ] && exit "$rc"
  exit 1
fi
"$cmake_command" -DOUTPUT_FILE="$output" -DEXPECT_FILE="$expect_file" -P "$(dirname "$0")/match_output.cmake"
