#!/usr/bin/env bash
# Checkpoints survive SIGKILL at any moment: a loop that saves checkpoint after checkpoint
# (test_train_ckpt --loop, keep 2, each step's weights a known function of the step) is killed
# with SIGKILL at random moments, ten times; after each kill the newest checkpoint must load,
# be complete (no incomplete directory skipped) and hold exactly its step's weights, moments,
# state and model.safetensors (test_train_ckpt --check); the next loop resumes from it, so the
# step only grows. At the end no more than keep + 1 step directories exist.
# usage: train_ckpt_kill.sh /path/to/hllm /path/to/tests
#   the helper is $HC_TEST_TRAIN_CKPT, else test_train_ckpt in the build tree next to hllm
#   ($(dirname hllm)/../tests/test_train_ckpt).
set -u
HLLM=$1
TESTS=$2
BIN=${HC_TEST_TRAIN_CKPT:-$(dirname "$HLLM")/../tests/test_train_ckpt}
if [ ! -x "$BIN" ]; then
    echo "FAIL: $BIN not found: build the test_train_ckpt target or set HC_TEST_TRAIN_CKPT" >&2
    exit 1
fi
T=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
    rm -rf "$T"
}
trap cleanup EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

last=0
midsave=0
for round in 1 2 3 4 5 6 7 8 9 10; do
    "$BIN" "$TESTS" --loop "$T/ck" 2>"$T/loop.err" &
    pid=$!
    # the first round waits for a first checkpoint; then a random moment 0.05 .. 0.6 s later
    for _ in $(seq 1 200); do
        [ -f "$T/ck/latest" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    sleep "0.$(printf '%02d' $((RANDOM % 56 + 5)))"
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid"
        bad "round $round: the loop exited by itself (rc $?): $(cat "$T/loop.err")"
        pid=
        break
    fi
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null
    pid=
    if compgen -G "$T/ck/.tmp-step-*" >/dev/null; then midsave=$((midsave + 1)); fi
    if out=$("$BIN" "$TESTS" --check "$T/ck" 2>"$T/check.err"); then
        step=${out#step }
        if [ "$step" -ge "$last" ] 2>/dev/null; then
            ok
            last=$step
        else
            bad "round $round: step went from $last to '$out'"
        fi
    else
        bad "round $round: $(cat "$T/check.err")"
    fi
done
# kills land in the middle of saves; a slow machine still writes a few checkpoints
if [ "$last" -ge 3 ]; then ok; else bad "only $last checkpoints were written"; fi
n=$(find "$T/ck" -maxdepth 1 -name 'step-*' -type d | wc -l)
if [ "$n" -le 3 ]; then ok; else bad "$n step directories with keep 2"; fi
echo "train_ckpt_kill: $pass passed, $fail failed (last step $last; $midsave of 10 kills left a" \
     "half-written .tmp-step directory behind)"
[ "$fail" -eq 0 ]
