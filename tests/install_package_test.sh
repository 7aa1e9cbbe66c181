#!/bin/sh
# The library as an installed CMake package: installs the build into a fresh prefix, configures
# and builds examples/custom_adapter (its own project, find_package(mlr)) against that prefix
# only, and runs it on the demo checkpoint and data (training a custom adapter type registered by
# the example, then scoring it). Run by ctest as install_package_example.
#   install_package_test.sh BUILD_DIR WORK_DIR CMAKE CXX_COMPILER launcher=[LAUNCHER] MODEL TRAIN EVAL STEPS
# (LAUNCHER may be empty, hence the "launcher=" prefix; the example writes its run into WORK_DIR/run)
set -eu
build=$1 work=$2 cmake=$3 cxx=$4
case $5 in
  launcher=*) launcher=${5#launcher=} ;;
  *) echo "install_package_test.sh: argument 5 must be launcher=[LAUNCHER], got '$5'" >&2; exit 2 ;;
esac
shift 5
rm -rf "$work"
"$cmake" --install "$build" --prefix "$work/prefix" >"$work.install.log" 2>&1 || { cat "$work.install.log"; exit 1; }
echo "installed: $(find "$work/prefix/include/mlr" -name '*.h' | wc -l) headers, $(ls "$work/prefix/lib" | grep -c '\.a$') libraries"
generator=
if command -v ninja >/dev/null 2>&1; then generator="-G Ninja"; fi
# The example sees only the installed prefix (no path into this source tree).
"$cmake" -S "$(dirname "$0")/../examples/custom_adapter" -B "$work/build" $generator -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_CXX_COMPILER="$cxx" ${launcher:+-DCMAKE_CXX_COMPILER_LAUNCHER="$launcher"}
"$cmake" --build "$work/build"
exec "$work/build/custom_adapter" "$1" "$2" "$3" "$work/run" "$4"
