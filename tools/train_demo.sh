#!/usr/bin/env bash
# The demo model, end to end, in one command (docs/DEMO.md):
#
#     tools/train_demo.sh BUILD_DIR OUT_DIR
#
# BUILD_DIR has cli/hllm and trainer/hllm-train (cmake --build BUILD_DIR --target hllm hllm-train).
# OUT_DIR must not exist or be empty. It gets:
#   templates.json  the demo's (short) templates
#   synth/          the benchmark (tools/synth/generate.py, seed 0, default sizes, those templates)
#   extra/          a second world of the generator (seed 1, 4000 training ads, one row each)
#   train.jsonl     synth/train.jsonl + extra/train.jsonl minus rows whose ad is a valid/test ad title
#   init/           the starting package (tools/make_demo_package.py: tokenizers + random LLMs + heads)
#   pkg/            the trained package (hllm-train), clustered (hllm cluster on the train users)
#   metrics.jsonl   hllm-train's per-step metrics
#   judge/          hllm generate outputs and the judge tables (valid and test, per-user and cluster)
#   times.txt       wall seconds per stage
#
# Hyper-parameters are the ones below; each can be overridden from the environment for
# experiments (DEMO_EPOCHS, DEMO_BATCH, DEMO_LR, DEMO_WARMUP, DEMO_CLIP, DEMO_K, DEMO_THREADS,
# DEMO_SEED, DEMO_EXTRA_SEED, DEMO_EXTRA_ADS, DEMO_SPLITS, DEMO_MODEL_ARGS, DEMO_TEMPLATES:
# a templates JSON file instead of the short templates below).
# Python: tools/requirements.txt (torch, tokenizers, safetensors, transformers), only to make
# the starting package.
set -euo pipefail

die() { echo "train_demo: error: $*" >&2; exit 1; }
[ $# -eq 2 ] || { echo "usage: tools/train_demo.sh BUILD_DIR OUT_DIR" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$(cd "$1" 2>/dev/null && pwd) || die "$1: build directory not found"
OUT=$2
HLLM=$BUILD/cli/hllm
TRAIN=$BUILD/trainer/hllm-train
[ -x "$HLLM" ] || die "$HLLM: not found or not executable (build the 'hllm' target)"
[ -x "$TRAIN" ] || die "$TRAIN: not found or not executable (build the 'hllm-train' target)"
if [ -e "$OUT" ]; then
  [ -d "$OUT" ] || die "$OUT: exists and is not a directory"
  [ -z "$(ls -A "$OUT")" ] || die "$OUT: exists and is not empty (refusing to overwrite)"
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}

EPOCHS=${DEMO_EPOCHS:-3}
BATCH=${DEMO_BATCH:-4}
LR=${DEMO_LR:-3e-3}
WARMUP=${DEMO_WARMUP:-0.05}
CLIP=${DEMO_CLIP:-1.0}
K=${DEMO_K:-16}
THREADS=${DEMO_THREADS:-2}
SEED=${DEMO_SEED:-0}
EXTRA_SEED=${DEMO_EXTRA_SEED:-1}
EXTRA_ADS=${DEMO_EXTRA_ADS:-4000}
SPLITS=${DEMO_SPLITS:-valid test}
# shellcheck disable=SC2206
MODEL_ARGS=(${DEMO_MODEL_ARGS:-})

T0=$(date +%s)
stage() { local now; now=$(date +%s); echo "$1 $((now - T0))" >> "$OUT/times.txt"; echo "train_demo: [$((now - T0)) s] $1" >&2; }

# Short templates: the benchmark's default prompt1 is 176 creative tokens, most of the sequence
# the creative loss runs through; these keep the same structure (prompt1 ends with the profile
# line the user slot follows; prompt2 is the benchmark's) at a third of the cost.
if [ -n "${DEMO_TEMPLATES:-}" ]; then
  cp "$DEMO_TEMPLATES" "$OUT/templates.json" || die "DEMO_TEMPLATES=$DEMO_TEMPLATES: cannot copy"
else cat > "$OUT/templates.json" <<'EOF'
{
 "user_prompt": "The books above, oldest first. Next book:",
 "prompt1": "Rewrite the book title for this reader. Keep the title; add at most one selling point from the description that fits the reader, or none.\nUser profile:\n",
 "prompt2": "Original title:\n{title}\nDescription:\n{description}\nNew title:\n"
}
EOF
fi

# The benchmark (seed 0, default sizes): its train split is trained on, its valid and test
# splits are judged. Its train split has only 150 ads, each in 16 rows: a tiny model then learns
# to recall a known ad's title from its description instead of copying it from prompt2, and
# fails on unseen ads (measured on the valid split: 0 of 200 titles kept after 1500 steps;
# 10 of 200 with 1000 ads in 6 rows each; docs/DEMO.md). So the training rows add a second
# world of the same generator (seed 1: the same lexicons and selling points; other books, users
# and ads) where every row has its own ad (4000 ads, one per user), minus any row whose ad
# title is a valid or test ad title of the benchmark.
"$PY" "$ROOT/tools/synth/generate.py" --out "$OUT/synth" --seed "$SEED" --templates "$OUT/templates.json" \
  > "$OUT/synth.log" || die "tools/synth/generate.py (benchmark) failed"
"$PY" "$ROOT/tools/synth/generate.py" --out "$OUT/extra" --seed "$EXTRA_SEED" --templates "$OUT/templates.json" \
  --books-per-facet 500 --train-ads "$EXTRA_ADS" --train-users "$EXTRA_ADS" --train-ads-per-user 1 \
  >> "$OUT/synth.log" || die "tools/synth/generate.py (extra training world) failed"
"$PY" - "$OUT" <<'EOF' || die "could not assemble the training rows"
import json, os, sys
out = sys.argv[1]
held = set()
for split in ("valid", "test"):
    with open(os.path.join(out, "synth", split + ".truth.jsonl"), encoding="utf-8") as f:
        held.update(json.loads(l)["original_title"].lower() for l in f)
n = {"benchmark": 0, "extra": 0, "extra_dropped": 0}
with open(os.path.join(out, "train.jsonl"), "w", encoding="utf-8") as fo, \
     open(os.path.join(out, "train.users.jsonl"), "w", encoding="utf-8") as fu:
    for name in ("synth", "extra"):
        with open(os.path.join(out, name, "train.jsonl"), encoding="utf-8") as f:
            for line in f:
                if name == "extra" and json.loads(line)["original_title"].lower() in held:
                    n["extra_dropped"] += 1
                    continue
                n["benchmark" if name == "synth" else "extra"] += 1
                fo.write(line)
        with open(os.path.join(out, name, "train.users.jsonl"), encoding="utf-8") as f:
            fu.writelines(f)
print("train_demo: training rows: %(benchmark)d benchmark + %(extra)d extra "
      "(%(extra_dropped)d extra rows dropped: their ad title is a valid/test ad)" % n, file=sys.stderr)
EOF
stage generate

"$PY" "$ROOT/tools/make_demo_package.py" --data "$OUT/extra" --out "$OUT/init" --seed "$SEED" "${MODEL_ARGS[@]}" \
  2> "$OUT/init.log" || { cat "$OUT/init.log" >&2; die "tools/make_demo_package.py failed"; }
tail -n 1 "$OUT/init.log" >&2
stage make_demo_package

"$TRAIN" --package "$OUT/init" --data "$OUT/train.jsonl" --out "$OUT/pkg" \
  --checkpoint-dir "$OUT/ckpt" --epochs "$EPOCHS" --batch "$BATCH" --lr "$LR" \
  --warmup-ratio "$WARMUP" --clip "$CLIP" --metrics "$OUT/metrics.jsonl" --threads "$THREADS" --quiet \
  2> "$OUT/train.log" || { tail -n 20 "$OUT/train.log" >&2; die "hllm-train failed (log: $OUT/train.log)"; }
rm -rf "$OUT/ckpt"
stage hllm-train

"$HLLM" cluster --model "$OUT/pkg" --users "$OUT/train.users.jsonl" --k "$K" \
  --out "$OUT/pkg/clusters.safetensors" --threads "$THREADS" > "$OUT/cluster.json" \
  || die "hllm cluster failed"
"$PY" - "$OUT/pkg/creator.json" <<'EOF' || die "could not set cluster.centroids in creator.json"
import json, os, sys
p = sys.argv[1]
with open(p, encoding="utf-8") as f:
    c = json.load(f)
c["cluster"]["centroids"] = "clusters.safetensors"
with open(p + ".tmp", "w", encoding="utf-8") as f:
    json.dump(c, f, indent=2, ensure_ascii=False)
    f.write("\n")
os.replace(p + ".tmp", p)
EOF
stage cluster

# Loss curve: mean creative loss over each tenth of the steps.
"$PY" - "$OUT/metrics.jsonl" <<'EOF' | tee "$OUT/loss_curve.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
n = len(rows)
parts = [rows[i * n // 10:(i + 1) * n // 10] for i in range(10)]
print("steps %d; mean loss per tenth of the steps (first step %.3f):" % (n, rows[0]["loss"]))
print(" ".join("%.3f" % (sum(r["loss"] for r in p) / len(p)) for p in parts if p))
EOF

mkdir -p "$OUT/judge"
for split in $SPLITS; do
  req=$OUT/synth/$split.requests.jsonl
  "$HLLM" generate --model "$OUT/pkg" --greedy --threads "$THREADS" < "$req" > "$OUT/judge/$split.cluster.jsonl" \
    || die "hllm generate (cluster mode, $split) failed"
  "$HLLM" generate --model "$OUT/pkg" --per-user --greedy --threads "$THREADS" < "$req" \
    > "$OUT/judge/$split.per-user.jsonl" || die "hllm generate --per-user ($split) failed"
  echo "== $split split ($(wc -l < "$req") rows), greedy ==" | tee "$OUT/judge/$split.table.md"
  "$PY" "$ROOT/tools/synth/judge.py" --truth "$OUT/synth/$split.truth.jsonl" --reasons \
    "per-user=$OUT/judge/$split.per-user.jsonl" "cluster=$OUT/judge/$split.cluster.jsonl" \
    | tee -a "$OUT/judge/$split.table.md" || die "tools/synth/judge.py failed ($split)"
  stage "judge-$split"
done
echo "train_demo: done in $(( $(date +%s) - T0 )) s; package: $OUT/pkg (copy it to demo/pkg to ship it)" >&2
