#!/usr/bin/env bash
# hllm-train end to end on the tiny package (tests/data/creator/tiny) and the training rows of
# tests/data/train/data_rows.jsonl (6 usable rows among bad ones):
#  - --help, missing/unknown options, bad values, a bad config, bad data paths: clear errors;
#  - a run writes a package that `hllm generate` serves and whose weights changed, checkpoints
#    and a metrics file; the loss falls;
#  - stopped after 4 steps (--stop-after, as SIGINT) and resumed, the run equals the uninterrupted
#    one bit for bit (every metrics line, the package weights); a SIGINT mid-run does the same;
#    a SIGKILL mid-run loses at most the steps since the last checkpoint and a resumed run still
#    ends bit-identical, metrics file included (its lines after the checkpoint and a torn line
#    are cut); results do not depend on --threads (1 and 2 threads compared);
#  - --resume with other run-defining settings is refused naming each; allowed changes work;
#  - leftovers of killed runs (OUT.tmp-PID, OUT.old-PID, .tmp-step-N) are removed or restored,
#    those of a live run kept, and a live run's checkpoint directory is refused;
#  - the same settings from --config give the same package.
# usage: train.sh /path/to/hllm /path/to/tests (hllm-train is $(dirname hllm)/../trainer/hllm-train
#   or $HC_TEST_HLLM_TRAIN)
set -u
HLLM=$1
TESTS=$2
TRAIN=${HC_TEST_HLLM_TRAIN:-$(dirname "$HLLM")/../trainer/hllm-train}
PKG=$TESTS/data/creator/tiny
DATA=$TESTS/data/train/data_rows.jsonl
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
# expect_err STATUS PATTERN cmd...: exits with STATUS and stderr matches PATTERN
expect_err() {
    local want=$1 pat=$2
    shift 2
    "$@" >"$T/out" 2>"$T/err"
    local got=$?
    if [ "$got" -ne "$want" ]; then bad "$* exited $got, want $want: $(cat "$T/err")"
    elif ! grep -q -- "$pat" "$T/err"; then bad "$*: stderr lacks '$pat': $(cat "$T/err")"
    else ok; fi
}
[ -x "$TRAIN" ] || { echo "FAIL: $TRAIN not found" >&2; exit 1; }
# recon and align run the decoder over whole profiles (the slow terms): the runs that compare
# curves use creative + cls (whose negatives come from the checkpointed generator); one short
# run below has all four.
COMMON=(--package "$PKG" --data "$DATA" --epochs 3 --batch 2 --lr 1e-3 --quiet --recon-weight 0
        --align-weight 0)

# --- help and errors ------------------------------------------------------------------------
"$TRAIN" --help >"$T/help" && grep -q -- "--resume" "$T/help" && grep -q -- "--config" "$T/help" \
    && grep -q "bit-identical" "$T/help" && grep -q "torn last line" "$T/help" \
    && grep -q "One run per checkpoint directory" "$T/help" && ok || bad "--help"
expect_err 2 "required" "$TRAIN" --package "$PKG"
expect_err 2 "unknown option --bogus" "$TRAIN" "${COMMON[@]}" --out "$T/x" --bogus 1
expect_err 2 "--lr: 'abc' is not a number" "$TRAIN" "${COMMON[@]}" --out "$T/x" --lr abc
expect_err 2 "--batch: '0' is not an integer" "$TRAIN" "${COMMON[@]}" --out "$T/x" --batch 0
expect_err 2 "--threads: '0' is not an integer in 1..1024" "$TRAIN" "${COMMON[@]}" --out "$T/x" \
    --threads 0
expect_err 2 "needs a value" "$TRAIN" "${COMMON[@]}" --out
expect_err 2 "as-stored, f32, bf16 or f16" "$TRAIN" "${COMMON[@]}" --out "$T/x" --weights-dtype q4
echo '{"package": 1' >"$T/broken.json"
expect_err 2 "broken.json: line" "$TRAIN" --config "$T/broken.json"
echo '{"epochz": 2}' >"$T/unknown.json"
expect_err 2 "unknown.json: epochz" "$TRAIN" --config "$T/unknown.json"
echo '{"epochs": [2]}' >"$T/typed.json"
expect_err 2 "must be a string, number or boolean" "$TRAIN" --config "$T/typed.json"
expect_err 1 "no-such-file" "$TRAIN" --package "$PKG" --data "$T/no-such-file" --out "$T/x"
expect_err 1 "directory" "$TRAIN" --package "$PKG" --data "$T" --out "$T/x"
mkfifo "$T/fifo"
expect_err 1 "FIFO" "$TRAIN" --package "$PKG" --data "$T/fifo" --out "$T/x"
expect_err 1 "no-such-package" "$TRAIN" --package "$T/no-such-package" --data "$DATA" --out "$T/x"
mkdir -p "$T/notapkg" && echo keep >"$T/notapkg/precious.txt"
expect_err 1 "not a model package" "$TRAIN" "${COMMON[@]}" --out "$T/notapkg" --steps 1
[ "$(cat "$T/notapkg/precious.txt")" = keep ] && ok || bad "a non-package --out was touched"
expect_err 1 "/dev/full" "$TRAIN" "${COMMON[@]}" --out "$T/full" --metrics /dev/full --steps 2
# bad output places are refused before any training (a run must never end unable to save)
expect_err 1 "parent .* is not an existing directory" "$TRAIN" "${COMMON[@]}" --out "$T/no/such/pkg"
expect_err 1 "inside the input package" "$TRAIN" "${COMMON[@]}" --out "$PKG/trained"
ln -s "$T/notapkg" "$T/link"
expect_err 1 "symbolic link" "$TRAIN" "${COMMON[@]}" --out "$T/link"
expect_err 1 "not a regular file" "$TRAIN" "${COMMON[@]}" --out "$T/x" --metrics "$T/fifo"
expect_err 1 "more than the 6 usable rows" "$TRAIN" "${COMMON[@]}" --out "$T/x" --batch 7
[ ! -e "$PKG/trained" ] && [ ! -e "$PKG/trained.ckpt" ] && ok || bad "wrote into the package"
# a package tensor no model uses (an item lm_head, as a CausalLM export has) is written back as it
# was, not dropped; the trained ones change
cp -r "$PKG" "$T/lmh"
python3 - "$T/lmh/model.safetensors" <<'EOF' || bad "could not add a tensor"
import sys, torch
from safetensors.torch import load_file, save_file
st = load_file(sys.argv[1])
st["item_llm.lm_head.weight"] = torch.arange(512 * 64, dtype=torch.float32).reshape(512, 64)
save_file(st, sys.argv[1], metadata={"format": "pt"})
EOF
"$TRAIN" "${COMMON[@]}" --package "$T/lmh" --out "$T/lmh_out" --steps 3 2>"$T/err" \
    || bad "lm_head package: $(cat "$T/err")"
python3 - "$T/lmh/model.safetensors" "$T/lmh_out/model.safetensors" <<'EOF' && ok \
    || bad "the unused tensor was not kept"
import sys, torch
from safetensors.torch import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
assert torch.equal(a["item_llm.lm_head.weight"], b["item_llm.lm_head.weight"])
assert not torch.equal(a["user_projector.weight"], b["user_projector.weight"])
assert set(a) <= set(b), set(a) - set(b)
EOF
# --accum 2 --batch 1: its first loss is the mean of the two rows' losses (each micro-batch's
# token mean, as torch's backward of loss/accum), which a --batch 1 run at lr 0 shows; --clip, --warmup-ratio change the run; --checkpoint-dir + --keep 1 leave
# one checkpoint there
CW=(--package "$PKG" --data "$DATA" --lr 1e-3 --quiet --recon-weight 0 --align-weight 0 \
    --cls-weight 0 --no-shuffle --steps 3)
"$TRAIN" "${CW[@]}" --batch 2 --out "$T/ac1" --metrics "$T/ac1.jsonl" 2>"$T/err" || bad "ac1: $(cat "$T/err")"
"$TRAIN" "${CW[@]}" --batch 1 --accum 2 --out "$T/ac2" --metrics "$T/ac2.jsonl" \
    --checkpoint-dir "$T/ck" --keep 1 --save-every 1 2>"$T/err" || bad "ac2: $(cat "$T/err")"
[ "$(ls "$T/ck" | grep -c '^step-')" -eq 1 ] && ok || bad "--keep 1: $(ls "$T/ck")"
"$TRAIN" "${CW[@]}" --batch 2 --clip 1e-3 --warmup-ratio 0 --out "$T/ac3" --metrics "$T/ac3.jsonl" \
    2>"$T/err" || bad "ac3: $(cat "$T/err")"
"$TRAIN" "${CW[@]}" --batch 1 --lr 0 --out "$T/ac4" --metrics "$T/ac4.jsonl" 2>"$T/err" \
    || bad "ac4: $(cat "$T/err")"
python3 - "$T/ac1.jsonl" "$T/ac2.jsonl" "$T/ac3.jsonl" "$T/ac4.jsonl" <<'EOF' && ok \
    || bad "accum/clip/warmup"
import json, sys
a, b, c, d = ([json.loads(l) for l in open(f)] for f in sys.argv[1:])
want = 0.5 * (d[0]["loss"] + d[1]["loss"])
assert abs(b[0]["loss"] - want) < 1e-5 * want, (b[0], want)
assert a[0]["lr"] == 0 and c[0]["lr"] > 0  # warm-up 0: the first step already at the peak
assert c[1]["loss"] != a[1]["loss"]  # clipping at 1e-3 changes the update
EOF
# --out with a trailing slash is the directory itself; --config=FILE works like --config FILE
echo '{"steps": 1}' >"$T/one.json"
"$TRAIN" "${COMMON[@]}" --out "$T/slash/" --config="$T/one.json" 2>"$T/err" && \
    [ -f "$T/slash/creator.json" ] && [ -d "$T/slash.ckpt" ] && ok || bad "trailing slash: $(cat "$T/err")"

# --- a run ------------------------------------------------------------------------------------
"$TRAIN" "${COMMON[@]}" --out "$T/a" --metrics "$T/a.jsonl" --save-every 2 2>"$T/err" \
    || bad "run a: $(cat "$T/err")"
[ "$(wc -l <"$T/a.jsonl")" -eq 9 ] && ok || bad "run a: $(wc -l <"$T/a.jsonl") metrics lines, want 9"
python3 - "$T/a.jsonl" <<'EOF' && ok || bad "the loss did not fall"
import json, sys
ls = [json.loads(l)["loss_creative"] for l in open(sys.argv[1])]
sys.exit(0 if sum(ls[-3:]) < 0.8 * sum(ls[:3]) else 1)
EOF
[ -f "$T/a/model.safetensors" ] && [ -f "$T/a/creator.json" ] && ok || bad "no package in a"
cmp -s "$T/a/model.safetensors" "$PKG/model.safetensors" && bad "weights unchanged" || ok
python3 -c "import json,sys; c=json.load(open(sys.argv[1])); sys.exit(0 if c['cluster']['centroids'] is None else 1)" \
    "$T/a/creator.json" && ok || bad "stale centroids kept"
ls "$T/a.ckpt" | grep -q step-00000009 && ok || bad "no final checkpoint"
head -3 "$TESTS/data/creator/cases.jsonl" >"$T/users.jsonl"
"$HLLM" generate --model "$T/a" --per-user --greedy --max-new 6 <"$T/users.jsonl" >"$T/gen" 2>"$T/err" \
    && [ "$(wc -l <"$T/gen")" -eq 3 ] && ok || bad "the trained package does not serve: $(cat "$T/err")"
# every term (the reference's weights 1): all four in the metrics, the total their sum
"$TRAIN" --package "$PKG" --data "$DATA" --batch 2 --steps 2 --quiet --out "$T/all" \
    --metrics "$T/all.jsonl" 2>"$T/err" || bad "all terms: $(cat "$T/err")"
python3 - "$T/all.jsonl" <<'EOF' && ok || bad "all-terms metrics: $(cat "$T/all.jsonl")"
import json, sys
for l in open(sys.argv[1]):
    m = json.loads(l)
    t = [m["loss_" + k] for k in ("creative", "recon", "align", "cls")]
    assert all(x > 0 for x in t) and abs(sum(t) - m["loss"]) < 1e-6 * m["loss"], m
EOF
expect_err 1 "need --batch >= 2" "$TRAIN" --package "$PKG" --data "$DATA" --batch 1 --out "$T/x"
expect_err 1 "every loss weight is 0" "$TRAIN" "${COMMON[@]}" --out "$T/x" --creative-weight 0 \
    --cls-weight 0
# HLLM next-item pre-training on a next-item split: the loss falls, the package serves
NI=$TESTS/data/train/data_nextitem
"$TRAIN" --package "$PKG" --task nextitem --items "$NI/items.jsonl" --data "$NI/train.jsonl" \
    --batch 2 --epochs 8 --lr 3e-3 --quiet --out "$T/ni" --metrics "$T/ni.jsonl" 2>"$T/err" \
    || bad "nextitem: $(cat "$T/err")"
python3 - "$T/ni.jsonl" <<'EOF' && ok || bad "next-item loss did not fall: $(cat "$T/ni.jsonl")"
import json, sys
ls = [json.loads(l)["loss_nextitem"] for l in open(sys.argv[1])]
sys.exit(0 if len(ls) >= 4 and sum(ls[-2:]) < sum(ls[:2]) else 1)
EOF
"$HLLM" generate --model "$T/ni" --per-user --greedy --max-new 4 <"$T/users.jsonl" >"$T/gen" \
    2>"$T/err" && ok || bad "the next-item package does not serve: $(cat "$T/err")"
expect_err 2 "needs --items" "$TRAIN" --package "$PKG" --task nextitem --data "$NI/train.jsonl" \
    --out "$T/x"
expect_err 2 "not creator or nextitem" "$TRAIN" "${COMMON[@]}" --out "$T/x" --task bogus
expect_err 2 "is for --task nextitem" "$TRAIN" "${COMMON[@]}" --out "$T/x" --items "$NI/items.jsonl"
# a run killed while writing (a file-size limit: SIGXFSZ as the first big write begins) leaves
# the package it was replacing as it was
cp "$T/a/model.safetensors" "$T/a.weights"
{ ( ulimit -f 64; exec "$TRAIN" "${COMMON[@]}" --out "$T/a" --steps 1 ) >/dev/null 2>&1; } 2>/dev/null
cmp -s "$T/a.weights" "$T/a/model.safetensors" && [ -f "$T/a/creator.json" ] && ok \
    || bad "a run killed mid-write damaged the package it was replacing"
# ... and left its half-written checkpoint, which the next run on that directory removes with
# a notice (a live run's directory is refused: see "leftovers" below)
if compgen -G "$T/a.ckpt/.tmp-step-*" >/dev/null; then
    "$TRAIN" "${COMMON[@]}" --out "$T/a2" --checkpoint-dir "$T/a.ckpt" --keep 0 --steps 1 \
        2>"$T/err" || bad "run after the killed one: $(cat "$T/err")"
    grep -q "removed $T/a.ckpt/.tmp-step-.*interrupted save" "$T/err" \
        && ! compgen -G "$T/a.ckpt/.tmp-step-*" >/dev/null && ok \
        || bad "the killed save's leftover: $(cat "$T/err"; ls -a "$T/a.ckpt")"
else
    bad "the file-size kill left no .tmp-step directory: $(ls -a "$T/a.ckpt")"
fi
# the same settings from a config file: the same weights
cat >"$T/cfg.json" <<EOF
{"package": "$PKG", "data": "$DATA", "epochs": 3, "batch": 2, "lr": 0.001, "quiet": true,
 "out": "$T/c", "save-every": 2, "recon-weight": 0, "align-weight": 0, "threads": 2}
EOF
"$TRAIN" --config "$T/cfg.json" 2>"$T/err" || bad "config run: $(cat "$T/err")"
cmp -s "$T/a/model.safetensors" "$T/c/model.safetensors" && ok \
    || bad "--config (2 threads) differs from flags (1 thread)"
# an option overrides the file
"$TRAIN" --config "$T/cfg.json" --out "$T/c2" --steps 2 2>"$T/err" && [ -f "$T/c2/creator.json" ] \
    && ok || bad "override: $(cat "$T/err")"

# --- stop and resume: bit for bit -------------------------------------------------------------
"$TRAIN" "${COMMON[@]}" --out "$T/b" --metrics "$T/b.jsonl" --save-every 2 --stop-after 4 \
    2>"$T/err"
[ $? -eq 130 ] && grep -q "continue with --resume" "$T/err" && ok || bad "stop-after: $(cat "$T/err")"
[ ! -e "$T/b" ] && ok || bad "a stopped run wrote the package"
# --resume with settings that define the run other than the checkpoint's: refused (exit 2), each
# difference named with both values; the checkpoint is left as it was
cp -r "$T/b.ckpt" "$T/b.ckpt.before"
cp "$DATA" "$T/data_copy.jsonl"
expect_err 2 "was made with other settings" "$TRAIN" "${COMMON[@]}" --out "$T/b" --resume \
    --lr 2e-3 --batch 3 --seed 7 --cls-weight 0.5 --warmup-ratio 0.2 --accum 2 --epochs 4 \
    --steps 20 --no-shuffle --clip 1 --recon-weight 1 --data "$T/data_copy.jsonl"
for want in "--lr: 0.001 in the checkpoint, 0.002 now" "--batch: 2 in the checkpoint, 3 now" \
    "--seed: 2020 in the checkpoint, 7 now" "--cls-weight: 1 in the checkpoint, 0.5 now" \
    "--warmup-ratio: 0.1 in the checkpoint, 0.2 now" "--accum: 1 in the checkpoint, 2 now" \
    "--epochs: 3 in the checkpoint, 4 now" "--steps: not set in the checkpoint, 20 now" \
    "--no-shuffle: not set in the checkpoint, set now" "--clip: 0 in the checkpoint, 1 now" \
    "--recon-weight: 0 in the checkpoint, 1 now" \
    "--data: $(realpath "$DATA") in the checkpoint, $(realpath "$T/data_copy.jsonl") now"; do
    grep -qF -- "$want" "$T/err" && ok || bad "refusal lacks '$want': $(cat "$T/err")"
done
diff -r "$T/b.ckpt" "$T/b.ckpt.before" >/dev/null && ok || bad "a refused resume changed the checkpoint"
# a checkpoint of an older build records no settings: its own schedule is used, with a notice
cp -r "$T/b.ckpt.before" "$T/bo.ckpt"
python3 - "$T/bo.ckpt" <<'PY' || bad "could not strip the run settings"
import glob, json, sys
for p in glob.glob(sys.argv[1] + "/step-*/trainer.json"):
    j = json.load(open(p)); del j["run"]; json.dump(j, open(p, "w"))
PY
"$TRAIN" "${COMMON[@]}" --out "$T/bo" --checkpoint-dir "$T/bo.ckpt" --resume --lr 5e-3 \
    --stop-after 1 2>"$T/err"
[ $? -eq 130 ] && grep -q "records no settings" "$T/err" && ok || bad "old checkpoint: $(cat "$T/err")"
# allowed to change: --save-every, --keep, --threads (results are the same for any thread count)
"$TRAIN" "${COMMON[@]}" --out "$T/b" --metrics "$T/b.jsonl" --save-every 3 --keep 2 --threads 2 \
    --resume 2>"$T/err" || bad "resume: $(cat "$T/err")"
strip() { sed 's/,"tokens_per_s":[^}]*//' "$1"; }
diff <(strip "$T/a.jsonl") <(strip "$T/b.jsonl") >/dev/null && ok \
    || bad "resumed loss curve differs: $(diff <(strip "$T/a.jsonl") <(strip "$T/b.jsonl") | head -4)"
cmp -s "$T/a/model.safetensors" "$T/b/model.safetensors" && ok || bad "resumed weights differ"

# --- SIGINT mid-run: a checkpoint, exit 130, resume ends identical ---------------------------
"$TRAIN" "${COMMON[@]}" --out "$T/s" --metrics "$T/s.jsonl" --epochs 12 --lr 1e-4 2>"$T/s.err" &
pid=$!
for _ in $(seq 200); do [ -s "$T/s.jsonl" ] && break; sleep 0.05; done
kill -INT "$pid"
wait "$pid"
st=$?
pid=
[ "$st" -eq 130 ] && ok || bad "SIGINT: exit $st: $(cat "$T/s.err")"
"$TRAIN" "${COMMON[@]}" --out "$T/s" --metrics "$T/s.jsonl" --epochs 12 --lr 1e-4 --resume \
    2>"$T/err" || bad "resume after SIGINT: $(cat "$T/err")"
"$TRAIN" "${COMMON[@]}" --out "$T/s0" --metrics "$T/s0.jsonl" --epochs 12 --lr 1e-4 --threads 2 \
    2>"$T/err" || bad "uninterrupted 12 epochs"
diff <(strip "$T/s0.jsonl") <(strip "$T/s.jsonl") >/dev/null && ok \
    || bad "SIGINT+resume (1 thread) curve differs from the uninterrupted run (2 threads)"
cmp -s "$T/s0/model.safetensors" "$T/s/model.safetensors" && ok || bad "SIGINT+resume weights differ"

# --- SIGKILL mid-run: resume from the last checkpoint, the result still identical -------------
"$TRAIN" "${COMMON[@]}" --out "$T/k" --metrics "$T/k.jsonl" --epochs 12 --lr 1e-4 \
    --save-every 3 2>/dev/null &
pid=$!
for _ in $(seq 400); do [ -d "$T/k.ckpt" ] && ls "$T/k.ckpt" | grep -q '^step-' && break; sleep 0.05; done
sleep 0.3
kill -KILL "$pid"
wait "$pid" 2>/dev/null || true
pid=
[ ! -e "$T/k" ] && ok || bad "the SIGKILL landed after the run had finished"
# what a kill in the middle of writes leaves: a torn metrics line, a package being built and one
# being replaced by processes that are gone (or whose id now names another program: this shell),
# a half-written checkpoint
printf '{"step":999,"lr":' >>"$T/k.jsonl"
sh -c 'exit 0' &
dead=$!
wait "$dead"
mkdir "$T/k.tmp-$dead" "$T/k.tmp-$$" "$T/k.ckpt/.tmp-step-00000099"
"$TRAIN" "${COMMON[@]}" --out "$T/k" --metrics "$T/k.jsonl" --epochs 12 --lr 1e-4 --save-every 3 \
    --resume 2>"$T/err" || bad "resume after SIGKILL: $(cat "$T/err")"
cmp -s "$T/s0/model.safetensors" "$T/k/model.safetensors" && ok || bad "SIGKILL+resume weights differ"
# the metrics file lost the lines after the checkpoint and the torn one: it equals the
# uninterrupted run's
diff <(strip "$T/s0.jsonl") <(strip "$T/k.jsonl") >/dev/null && ok \
    || bad "SIGKILL+resume metrics differ: $(diff <(strip "$T/s0.jsonl") <(strip "$T/k.jsonl") | head -4)"
grep -q "removed [0-9]* lines\? after step" "$T/err" && ok || bad "no metrics notice: $(cat "$T/err")"
for d in "$T/k.tmp-$dead" "$T/k.tmp-$$" "$T/k.ckpt/.tmp-step-00000099"; do
    [ ! -e "$d" ] && grep -qF "removed $d," "$T/err" && ok || bad "leftover $d: $(cat "$T/err")"
done
# a run killed between moving the old package aside and renaming the new one into place: the old
# one comes back
mv "$T/k" "$T/k.old-$dead"
"$TRAIN" "${COMMON[@]}" --out "$T/k" --epochs 12 --lr 1e-4 --resume --stop-after 1 2>"$T/err"
cmp -s "$T/s0/model.safetensors" "$T/k/model.safetensors" && [ ! -e "$T/k.old-$dead" ] \
    && grep -q "restored $T/k from" "$T/err" && ok || bad "old package not restored: $(cat "$T/err")"

# --- leftovers of a live run are left alone; its checkpoint directory is refused -----------------
"$TRAIN" "${COMMON[@]}" --out "$T/lv" --epochs 1000 --lr 1e-4 2>/dev/null &
pid=$!
for _ in $(seq 400); do [ -s "$T/lv.ckpt/.lock" ] && break; sleep 0.05; done
mkdir "$T/lv2.tmp-$pid" "$T/lv.ckpt/.tmp-step-00000042"
expect_err 1 "in use by another hllm-train (process $pid)" "$TRAIN" "${COMMON[@]}" --out "$T/lv" \
    --steps 1
"$TRAIN" "${COMMON[@]}" --out "$T/lv2" --steps 1 2>"$T/err" || bad "lv2: $(cat "$T/err")"
[ -d "$T/lv2.tmp-$pid" ] && [ -d "$T/lv.ckpt/.tmp-step-00000042" ] && ok \
    || bad "a live run's leftovers were removed: $(cat "$T/err")"
kill -0 "$pid" 2>/dev/null && ok || bad "the live run ended before the checks"
{ kill -KILL "$pid"; wait "$pid"; } 2>/dev/null
pid=

echo "train.sh: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
