#!/usr/bin/env bash
# bench_vs_llamacpp.sh: the CPU backend (`hllm bench`) against llama.cpp (`llama-bench`,
# `llama-batched-bench`) on the same random checkpoint, same threads, interleaved rounds (issue 13).
#
#   bash tests/bench/bench_vs_llamacpp.sh [options]
#
#   --hllm PATH         hllm binary (default build/cli/hllm)
#   --llama-src DIR     llama.cpp source tree (default /tmp/peers/llama.cpp); built into DIR/build
#                       (GGML_NATIVE=ON, CPU only: llama-bench, llama-batched-bench) when
#                       --llama-bin has no llama-bench. The script downloads nothing: put a
#                       snapshot there first (e.g. with the session's fetch tool, outside the repo).
#   --llama-bin DIR     prebuilt llama.cpp binaries (default LLAMA_SRC/build/bin)
#   --work DIR          scratch: the HF checkpoint, the GGUF files, raw results (default /tmp/peers/bench)
#   --model-dir DIR     HF Llama checkpoint to use (default: WORK/llm100m, created once by
#                       tests/bench/bench_llm.py's ensure_model: the random ~100M Llama, bf16,
#                       with the Llama-2 tokenizer of tests/data copied in for the converter)
#   --rounds R          interleaved rounds (default 3)      --threads T   (default 2)
#   --prompt-len P      (default 128)   --gen N (default 64)   --batch B sequences (default 8)
#   --compute LIST      hllm compute modes to run, e.g. "f32 bf16" (default f32): each round runs
#                       hllm once per mode (`hllm bench --compute C`), one table row per mode
#   --wait-idle L       before each round wait (at most 120 s) until the 1-minute load < L
#   --omp-passive       run llama.cpp with OMP_WAIT_POLICY=passive. Its OpenMP workers spin
#                       between ops by default, which on a machine shared with other jobs (load
#                       above the core count) collapses its throughput (measured: tg32 7.1 tok/s
#                       spinning vs 22.7 passive at load 6.5 on 2 cores); hllm's pool spins
#                       briefly, then sleeps. On an idle machine leave it off.
#
# Each round runs, in this order: hllm batch 1, llama-bench bf16, llama-bench f16, hllm --batch B,
# llama-batched-bench bf16, llama-batched-bench f16. Both sides do one warm-up then one measured
# run per round. Compared: prefill tok/s of one P-token prompt (llama-bench pp, hllm prefill),
# decode tok/s at batch 1 (llama-bench tg N: N tokens from an empty context; hllm: N steps after
# the P-token prompt, so hllm attends over a longer context), aggregate decode tok/s of B sequences (llama-batched-bench S_TG with -npp P -ntg N
# -npl B, hllm --batch B decode). The table shows medians over the rounds and hllm / llama.cpp
# ratios of those medians; the raw values and each round's load average are in WORK/results.jsonl.
# Needs python3 with torch, transformers, safetensors, numpy, sentencepiece (the converter's imports).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HLLM=$ROOT/build/cli/hllm
LLAMA_SRC=/tmp/peers/llama.cpp
LLAMA_BIN=""
WORK=/tmp/peers/bench
MODEL=""
ROUNDS=3 THREADS=2 P=128 N=64 B=8 IDLE="" OMP_PASSIVE=0 COMPUTE="f32"

while [ $# -gt 0 ]; do
    case "$1" in
    --hllm) HLLM=$2; shift 2 ;;
    --llama-src) LLAMA_SRC=$2; shift 2 ;;
    --llama-bin) LLAMA_BIN=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --model-dir) MODEL=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --prompt-len) P=$2; shift 2 ;;
    --gen) N=$2; shift 2 ;;
    --batch) B=$2; shift 2 ;;
    --wait-idle) IDLE=$2; shift 2 ;;
    --omp-passive) OMP_PASSIVE=1; shift ;;
    --compute) COMPUTE=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "bench_vs_llamacpp.sh: unknown option $1 (--help)" >&2; exit 2 ;;
    esac
done
LLAMA_BIN=${LLAMA_BIN:-$LLAMA_SRC/build/bin}
log() { echo "[bench_vs_llamacpp] $*" >&2; }
[ -x "$HLLM" ] || { echo "no hllm binary at $HLLM (build it, or --hllm)" >&2; exit 2; }
mkdir -p "$WORK"

# ---- llama.cpp binaries ----
if [ ! -x "$LLAMA_BIN/llama-bench" ] || [ ! -x "$LLAMA_BIN/llama-batched-bench" ]; then
    [ -f "$LLAMA_SRC/CMakeLists.txt" ] || {
        echo "no llama.cpp source at $LLAMA_SRC (put a snapshot there, or --llama-bin DIR)" >&2; exit 2; }
    log "building llama.cpp in $LLAMA_SRC/build (GGML_NATIVE=ON, CPU only)"
    cmake -S "$LLAMA_SRC" -B "$LLAMA_SRC/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DGGML_CUDA=OFF -DLLAMA_CURL=OFF >"$WORK/llama-cmake.log" 2>&1
    cmake --build "$LLAMA_SRC/build" -j"$(nproc)" --target llama-bench llama-batched-bench \
        >"$WORK/llama-build.log" 2>&1
    LLAMA_BIN=$LLAMA_SRC/build/bin
fi
# the snapshot's version: SNAPSHOT (one line, written by whoever unpacked a git-less snapshot) or git
LLAMA_VER=$(head -1 "$LLAMA_SRC/SNAPSHOT" 2>/dev/null || (cd "$LLAMA_SRC" && git describe --tags --always) 2>/dev/null || echo "?")
LENV=()
[ "$OMP_PASSIVE" = 1 ] && LENV=(env OMP_WAIT_POLICY=passive) && LLAMA_VER="$LLAMA_VER, OMP_WAIT_POLICY=passive"

# ---- the checkpoint, and the same checkpoint converted by llama.cpp's own converter ----
if [ -z "$MODEL" ]; then
    MODEL=$WORK/llm100m
    python3 -c "import sys; sys.path.insert(0, '$ROOT/tests/bench'); import bench_llm; bench_llm.ensure_model('$MODEL', 'bf16')"
    cp -n "$ROOT"/tests/data/tokenizers/llama2/{tokenizer.json,tokenizer_config.json,special_tokens_map.json} "$MODEL"/
fi
for t in bf16 f16; do
    g=$WORK/$(basename "$MODEL")-$t.gguf
    if [ ! -s "$g" ] || [ "$g" -ot "$MODEL/config.json" ]; then
        log "converting $MODEL -> $g (convert_hf_to_gguf.py --outtype $t)"
        python3 "$LLAMA_SRC/convert_hf_to_gguf.py" "$MODEL" --outtype $t --outfile "$g" >"$WORK/convert-$t.log" 2>&1 ||
            { tail -5 "$WORK/convert-$t.log" >&2; exit 1; }
    fi
done
GBF=$WORK/$(basename "$MODEL")-bf16.gguf GF16=$WORK/$(basename "$MODEL")-f16.gguf

# ---- interleaved rounds ----
RES=$WORK/results.jsonl
: >"$RES"
emit() { echo "{\"round\": $1, \"what\": \"$2\", \"load\": \"$3\", \"data\": $4}" >>"$RES"; }
jsonl_last() { grep '^{' | tail -n "${1:-1}" | paste -sd, | sed 's/^/[/; s/$/]/'; }
for r in $(seq 1 "$ROUNDS"); do
    if [ -n "$IDLE" ]; then
        for _ in $(seq 1 24); do
            awk -v l="$IDLE" '{exit !($1 < l)}' /proc/loadavg && break
            sleep 5
        done
    fi
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    log "round $r/$ROUNDS (load $load)"
    for c in $COMPUTE; do
        out=$("$HLLM" bench --model "$MODEL" --threads "$THREADS" --prompt-len "$P" --gen "$N" --reps 1 --compute "$c" --json)
        emit "$r" hllm_b1 "$load" "$(echo "$out" | jsonl_last)"
    done
    for t in bf16 f16; do
        g=$GBF; [ $t = f16 ] && g=$GF16
        out=$("${LENV[@]}" "$LLAMA_BIN/llama-bench" -m "$g" -t "$THREADS" -p "$P" -n "$N" -r 1 -o jsonl 2>/dev/null)
        emit "$r" "llama_$t" "$load" "$(echo "$out" | jsonl_last 2)"
    done
    for c in $COMPUTE; do
        out=$("$HLLM" bench --model "$MODEL" --threads "$THREADS" --prompt-len "$P" --gen "$N" --batch "$B" --reps 1 --compute "$c" --json)
        emit "$r" hllm_bn "$load" "$(echo "$out" | jsonl_last)"
    done
    for t in bf16 f16; do
        g=$GBF; [ $t = f16 ] && g=$GF16
        out=$("${LENV[@]}" "$LLAMA_BIN/llama-batched-bench" -m "$g" -t "$THREADS" -c $(((P + N) * B + 256)) -b 2048 -ub 512 \
            -npp "$P" -ntg "$N" -npl "$B" --output-format jsonl 2>/dev/null)
        emit "$r" "batched_$t" "$load" "$(echo "$out" | jsonl_last)"
    done
done

# ---- table ----
python3 - "$RES" "$THREADS" "$P" "$N" "$B" "$LLAMA_VER" <<'EOF'
import json, statistics, sys
res, T, P, N, B, ver = sys.argv[1], *sys.argv[2:]
rows = [json.loads(l) for l in open(res)]
v = {}
def add(key, x): v.setdefault(key, []).append(float(x))
for r in rows:
    w, d = r["what"], r["data"]
    h = "hllm " + d[0].get("compute", "f32") if w.startswith("hllm_") else None
    if w == "hllm_b1":
        add((h, "pp"), d[0]["prefill_tok_s"]); add((h, "tg"), d[0]["decode_tok_s"])
    elif w == "hllm_bn":
        add((h, "bn"), d[0]["decode_tok_s"])
    elif w.startswith("llama_"):
        for t in d:
            add((w[6:], "pp" if t["n_prompt"] > 0 else "tg"), t["avg_ts"])
    elif w.startswith("batched_"):
        add((w[8:], "bn"), d[0]["speed_tg"])
med = {k: statistics.median(x) for k, x in v.items()}
cols = [("pp", f"prefill tok/s (pp{P})"), ("tg", f"decode tok/s, batch 1 (tg{N})"),
        ("bn", f"decode tok/s, {B} sequences (aggregate)")]
n_rounds = max(r["round"] for r in rows)
print(f"\nmedians of {n_rounds} interleaved rounds, {T} threads, llama.cpp {ver}; loads: "
      + "; ".join(sorted({r['load'] for r in rows})))
print("| engine | " + " | ".join(c[1] for c in cols) + " |")
print("|---|" + "---|" * len(cols))
hs = sorted({k[0] for k in v if k[0].startswith("hllm ")})
names = {"bf16": "llama.cpp bf16", "f16": "llama.cpp f16"}
names.update({h: f"hllm (bf16 weights, {h[5:]} compute)" for h in hs})
for e in hs + ["bf16", "f16"]:
    print(f"| {names[e]} | " + " | ".join(f"{med[(e, c)]:.1f}" if (e, c) in med else "-" for c, _ in cols) + " |")
for h in hs:
    for e in ("bf16", "f16"):
        print(f"| **hllm {h[5:]} / llama.cpp {e}** | " + " | ".join(
            f"**{med[(h, c)] / med[(e, c)]:.2f}x**" if (h, c) in med and (e, c) in med else "-"
            for c, _ in cols) + " |")
print("\nper round:")
for k in sorted(v):
    print(f"  {k[0]:5s} {k[1]}: " + " ".join(f"{x:.1f}" for x in v[k]))
EOF
