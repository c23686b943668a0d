#!/usr/bin/env bash
# tools/plot_training.py renders a metrics file (the format trainer/progress.c writes) to a PNG,
# skips bad lines with a warning naming the line, and refuses a file without metrics rows.
# usage: train_plot.sh /path/to/hllm /path/to/tests   (the hllm binary is unused)
set -u
TESTS=$2
ROOT=$(cd "$TESTS/.." && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

if ! python3 -c "import matplotlib" 2>/dev/null; then
    echo "FAIL: matplotlib missing: pip install -r tools/requirements.txt" >&2
    exit 1
fi
python3 - "$T/m.jsonl" <<'PY'
import json, math, sys
with open(sys.argv[1], "w") as f:
    for s in range(1, 41):
        c, a = 3.0 * math.exp(-s / 12), 1.0 / (1 + s / 5)
        r = {"step": s, "lr": 2e-5 * min(1, s / 4), "loss": c + a, "loss_creative": c,
             "loss_align": a if s != 20 else None, "grad_norm": 1.0, "tokens_per_s": 900.0}
        f.write(json.dumps(r) + "\n")
        if s == 10:
            f.write("{not json\n")
PY
out=$(python3 "$ROOT/tools/plot_training.py" "$T/m.jsonl" "$T/m.png" --title test 2>&1)
rc=$?
[ $rc -eq 0 ] && ok || bad "plot exited $rc: $out"
magic=$(head -c 8 "$T/m.png" 2>/dev/null | od -An -tx1 | tr -d ' \n')
[ "$magic" = "89504e470d0a1a0a" ] && ok || bad "not a PNG (magic '$magic')"
size=$(stat -c %s "$T/m.png" 2>/dev/null || echo 0)
[ "$size" -gt 10000 ] && ok || bad "PNG only $size bytes"
echo "$out" | grep -q "m.jsonl:11: skipped" && ok || bad "bad line 11 not reported: $out"
echo "$out" | grep -q "40 steps, 3 curves" && ok || bad "summary: $out"
: > "$T/empty.jsonl"
out=$(python3 "$ROOT/tools/plot_training.py" "$T/empty.jsonl" "$T/e.png" 2>&1)
[ $? -ne 0 ] && echo "$out" | grep -q "no metrics rows" && [ ! -e "$T/e.png" ] && ok ||
    bad "empty file: $out"
echo "train_plot: $pass passed, $fail failed"
[ $fail -eq 0 ]
