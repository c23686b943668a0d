#!/usr/bin/env bash
# run_gpu_checks.sh: the CUDA backend's checks, in one call, for a session that has a GPU machine
# (written for an H200 lease of ~15 minutes; whole run is ~2-4 minutes of device time).
#
#   bash tests/gpu/run_gpu_checks.sh            # on the GPU machine, from the repository root
#
# Steps (each with its own timeout; a summary table is printed last):
#   1. build   cmake -DHC_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a into build-gpu, only the targets
#              needed (hc_cuda, test_backend_ops, test_backend_cuda_load). If configure/build fails
#              (e.g. the GPU image lacks libopenblas-dev), falls back to a prebuilt bundle in
#              build-gpu-bundle/ when one was carried (see --make-bundle).
#   2. load    test_backend_cuda_load with HC_EXPECT_CUDA=1 (create must succeed).
#   3. ops     test_backend_ops with HC_EXPECT_CUDA=1: every op on CPU and CUDA vs the double
#              reference, default seed and two more seeds.
#   4. memchk  compute-sanitizer memcheck on the CUDA ops (skipped when the tool is missing).
#   5. bench   HC_BENCH=1 HC_BENCH_BACKEND=cuda: matmul and attention timings (one table).
# Logs go to $OUT (the device tool's output folder) or build-gpu/logs.
#
#   bash tests/gpu/run_gpu_checks.sh --make-bundle [BUILD_DIR]
# On a machine WITHOUT a GPU: copies the already-built binaries of BUILD_DIR (default build-cuda,
# built with HC_CUDA=ON) and the non-system shared libraries they need (OpenBLAS, gfortran) into
# build-gpu-bundle/ (~40 MB). Carry it to the GPU machine (run tool: carry ["build-gpu-bundle"]).
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
BUNDLE=$ROOT/build-gpu-bundle

if [ "${1:-}" = "--make-bundle" ]; then
    SRC=${2:-build-cuda}
    rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/tests" "$BUNDLE/kernels" "$BUNDLE/lib"
    cp "$SRC/tests/test_backend_ops" "$SRC/tests/test_backend_cuda_load" \
        "$SRC/tests/libhc_fake_cuda.so" "$BUNDLE/tests/" || exit 1
    cp "$SRC/kernels/libhc_cuda.so" "$BUNDLE/kernels/" || exit 1
    for lib in $(ldd "$SRC/tests/test_backend_ops" | awk '/=> \//{print $3}'); do
        case "$(basename "$lib")" in libc.so*|libm.so*|libgcc_s.so*|libpthread*|libdl*) ;;
            *) cp -L "$lib" "$BUNDLE/lib/" ;; esac
    done
    du -sh "$BUNDLE"; ls -R "$BUNDLE"
    exit 0
fi

LOG=${OUT:-$ROOT/build-gpu/logs}
mkdir -p "$LOG"
declare -a SUMMARY
record() { SUMMARY+=("$(printf '%-8s %-6s %s' "$1" "$2" "$3")"); }
run_step() { # name timeout_s logfile cmd...
    local name=$1 t=$2 log=$3; shift 3
    local t0=$SECONDS
    timeout "$t" "$@" >"$log" 2>&1
    local rc=$?
    record "$name" "$([ $rc = 0 ] && echo PASS || echo FAIL)" "rc=$rc $((SECONDS - t0))s log=$log"
    return $rc
}

echo "== device"; (nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv) 2>&1 | head -5
/usr/local/cuda/bin/nvcc --version 2>&1 | tail -2

# ---- 1. build ----------------------------------------------------------------------------------
BIN=$ROOT/build-gpu/tests
export PATH=/usr/local/cuda/bin:$PATH
if run_step build 420 "$LOG/build.log" bash -c "
    cmake -S . -B build-gpu -DHC_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_BUILD_TYPE=Release &&
    cmake --build build-gpu -j\$(nproc) --target hc_cuda test_backend_ops test_backend_cuda_load"; then
    :
elif [ -x "$BUNDLE/tests/test_backend_ops" ]; then
    echo "build failed (tail of $LOG/build.log below); using the carried bundle $BUNDLE"
    tail -15 "$LOG/build.log"
    BIN=$BUNDLE/tests
    export LD_LIBRARY_PATH=$BUNDLE/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
    record bundle USED "$BUNDLE (built elsewhere for 80;90a)"
else
    tail -30 "$LOG/build.log"
    printf '%s\n' "${SUMMARY[@]}"
    exit 2
fi

# ---- 2-3. correctness ---------------------------------------------------------------------------
export HC_EXPECT_CUDA=1
run_step load 60 "$LOG/load.log" "$BIN/test_backend_cuda_load"
run_step ops 300 "$LOG/ops.log" "$BIN/test_backend_ops"
grep -E "^backend|passed" "$LOG/ops.log"
grep -m 20 "CHECK failed" "$LOG/ops.log"
for seed in 1 2; do
    HC_TEST_SEED=$seed HC_TEST_BACKEND=cuda run_step "ops-s$seed" 120 "$LOG/ops_seed$seed.log" \
        "$BIN/test_backend_ops"
    grep -m 10 "CHECK failed" "$LOG/ops_seed$seed.log"
done

# ---- 4. memcheck ----------------------------------------------------------------------------------
CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
if [ -n "$CS" ]; then
    HC_TEST_BACKEND=cuda run_step memchk 300 "$LOG/memcheck.log" \
        "$CS" --tool memcheck --error-exitcode 9 "$BIN/test_backend_ops"
    grep -E "ERROR SUMMARY|Invalid" "$LOG/memcheck.log" | head -10
else
    record memchk SKIP "compute-sanitizer not found"
fi

# ---- 5. bench ---------------------------------------------------------------------------------------
HC_BENCH=1 HC_BENCH_BACKEND=cuda HC_TEST_BACKEND=cuda run_step bench 180 "$LOG/bench.log" \
    "$BIN/test_backend_ops"
echo "== bench (cuda)"
grep -E "^cuda +(matmul|attention)" "$LOG/bench.log"

echo "== summary"
printf '%s\n' "${SUMMARY[@]}"
for s in "${SUMMARY[@]}"; do case "$s" in *FAIL*) exit 1 ;; esac; done
exit 0
