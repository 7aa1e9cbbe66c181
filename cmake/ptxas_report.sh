#!/bin/sh
# CUDA compiler launcher (CMAKE_CUDA_COMPILER_LAUNCHER, set by the top CMakeLists.txt with
# MLR_PTXAS_REPORT): runs the compile command it is given (with -Xptxas=-v among its flags) and
# keeps ptxas's report of every kernel (registers, shared memory, spills) in <object>.ptxas, out of
# the build's console output. tests/tensor/cuda_resources/check_kernel_resources.cpp reads the
# reports against tensor/kernels/cuda/arch_limits.h. ccache replays a cached compile's output, so a
# cache hit writes the report too.
out=""
prev=""
for a in "$@"; do
  [ "$prev" = "-o" ] && out=$a
  prev=$a
done
[ -n "$out" ] || exec "$@"
log="$out.ptxas.log"
"$@" >"$log" 2>&1
rc=$?
grep -E '^ptxas info|^ +[0-9]+ bytes stack frame' "$log" >"$out.ptxas"
grep -vE '^ptxas info|^ +[0-9]+ bytes stack frame' "$log" >&2
rm -f "$log"
exit $rc
