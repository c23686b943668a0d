#!/usr/bin/env bash
# The whole test suite, as CI runs it (README: "run all tests"):
#   1. installs the Debian packages the build needs (deploy/install-deps.sh, idempotent) and the
#      Python packages of the tools' tests (tools/requirements.txt, from PyPI);
#   2. a release build with warnings as errors (and the CUDA backend when nvcc is present), whose
#      ctest run includes every unit test under valgrind memcheck;
#   3. an ASan + UBSan build running the same tests.
# Exits non-zero on the first failure. Build trees: build/ and build-asan/.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=$(nproc 2>/dev/null || echo 2)

deploy/install-deps.sh
# Python packages of the converter tests (tools/requirements.txt; already-installed ones are kept).
# Debian's own python3 refuses pip installs into the system (PEP 668) unless told otherwise.
PY=$(command -v python3)
PIP=("$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore
     -r tools/requirements.txt)
"${PIP[@]}" 2>/dev/null || "${PIP[@]}" --break-system-packages

echo "== release build (warnings are errors) + tests + valgrind"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DHC_WERROR=ON -DHC_TEST_VALGRIND=ON \
  -DPython3_EXECUTABLE="$PY"
cmake --build build -j"$JOBS"
ctest --test-dir build --output-on-failure -j"$JOBS"

echo "== ASan + UBSan build + tests"
# The CUDA plugin is built here too (when nvcc is present), so that loading it on a machine
# without a GPU stays leak-checked.
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHC_SANITIZE=ON -DHC_WERROR=ON \
  -DPython3_EXECUTABLE="$PY"
cmake --build build-asan -j"$JOBS"
# tests/lsan.supp: two GnuTLS allocations libmicrohttpd leaks when it refuses a malformed
# certificate (the daemon's --tls-cert check), nothing of the project's.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp \
  ctest --test-dir build-asan --output-on-failure -j"$JOBS"
