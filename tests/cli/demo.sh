#!/usr/bin/env bash
# deploy/demo.sh (the README's main job, run by deploy/quickstart.sh) against this build: the
# daemon starts, both readers get a title (JSON with "title" and "ids"; the stream ends with
# `event: done`), and the daemon is stopped afterwards (no process left).
# usage: demo.sh /path/to/hllm /path/to/tests
set -u
HLLM=$1
TESTS=$2
ROOT=$(cd "$TESTS/.." && pwd)
BUILD=$(cd "$(dirname "$HLLM")/.." && pwd)
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
out=$(timeout 120 bash "$ROOT/deploy/demo.sh" "$BUILD" "$TESTS/data/creator/tiny" 2>&1)
rc=$?
[ $rc -eq 0 ] && ok || bad "demo.sh exited $rc: $out"
grep -q '^{"title":' <<<"$out" && grep -q '"ids":\[' <<<"$out" && ok || bad "no JSON title: $out"
grep -q '^event: done' <<<"$out" && grep -q '^event: meta' <<<"$out" && ok || bad "no stream: $out"
grep -q '^hllm:generated_tokens_total [1-9]' <<<"$out" && ok || bad "no metrics: $out"
if pgrep -f "$BUILD/server/hllm-creatord --model $TESTS/data/creator/tiny --port 0" >/dev/null; then
    bad "the daemon is still running"
else
    ok
fi
# a package that does not load: a clear error, the daemon's own message shown
out=$(timeout 60 bash "$ROOT/deploy/demo.sh" "$BUILD" /nonexistent-package 2>&1)
[ $? -ne 0 ] && grep -q "nonexistent-package" <<<"$out" && ok || bad "bad package: $out"
echo "demo.sh: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
