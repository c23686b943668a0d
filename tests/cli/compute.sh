#!/usr/bin/env bash
# --compute f32|bf16 (cli/common.c, hc_backend_params.compute) on every subcommand that runs a
# model: bench reports the mode and the prefill GEMM library ($HC_CPU_GEMM picks it); generate (LLM and package), embed,
# cluster and titles run in bf16 and give well-formed output; a bad value is a clear error with
# exit 2 everywhere; bf16 under --backend cuda is refused (CPU backend only); --help lists it.
# usage: compute.sh /path/to/hllm /path/to/tests
set -u
HLLM=$1
TESTS=$2
M=$TESTS/data/llm/llama_gqa_f32
P=$TESTS/data/creator/tiny
CASES=$TESTS/data/creator/cases.jsonl
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

# --- bench: the mode and the library are reported (table and JSON) -----------------------------
for c in f32 bf16; do
    out=$(timeout 120 "$HLLM" bench --model "$M" --backend cpu --threads 2 --prompt-len 40 --gen 4 \
        --reps 1 --compute $c 2>&1)
    rc=$?
    [ $rc -eq 0 ] && grep -q "^compute    $c\$" <<<"$out" && grep -q "^cpu gemm   \(onednn\|openblas\) (prefill" <<<"$out" &&
        ok || bad "bench --compute $c: rc $rc: $out"
    out=$(timeout 120 "$HLLM" bench --model "$M" --backend cpu --threads 1 --prompt-len 40 --gen 2 \
        --reps 1 --compute $c --json 2>&1)
    grep -q "\"compute\": \"$c\", \"cpu_gemm\": \"\(onednn\|openblas\)\"" <<<"$out" && ok ||
        bad "bench --json --compute $c: $out"
done
out=$(timeout 60 "$HLLM" bench --model "$M" --backend cpu --prompt-len 8 --gen 2 --reps 1 2>&1)
grep -q "^compute    f32\$" <<<"$out" && ok || bad "bench default is not f32: $out"

# --- HC_CPU_GEMM picks the prefill library (cli/common.c); a bad name is a clear error ----------
for g in openblas onednn; do
    out=$(HC_CPU_GEMM=$g timeout 60 "$HLLM" bench --model "$M" --backend cpu --threads 1 --prompt-len 40 \
        --gen 2 --reps 1 2>&1)
    rc=$?
    if [ $rc -eq 0 ]; then
        grep -q "^cpu gemm   $g (prefill" <<<"$out" && ok || bad "HC_CPU_GEMM=$g not used: $out"
    elif [ $g = onednn ] && grep -q "HC_CPU_GEMM=onednn: this build has no oneDNN" <<<"$out"; then
        ok
    else
        bad "HC_CPU_GEMM=$g: rc $rc: $out"
    fi
done
out=$(HC_CPU_GEMM=mkl timeout 60 "$HLLM" bench --model "$M" --backend cpu --prompt-len 8 --gen 2 --reps 1 2>&1)
rc=$?
[ $rc -ne 0 ] && grep -q "HC_CPU_GEMM expects auto, openblas or onednn" <<<"$out" && ok || bad "HC_CPU_GEMM=mkl: rc $rc: $out"

# --- generate (LLM): bf16 runs and gives ids; the prompt is long enough for the prefill GEMM ----
ids=$(seq -s, 1 40)
for c in f32 bf16; do
    timeout 120 "$HLLM" generate --model "$M" --ids "$ids" --greedy --max-new 4 --no-stop --json \
        --backend cpu --compute $c >"$TMP/gen_$c" 2>"$TMP/err"
    rc=$?
    [ $rc -eq 0 ] && python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).read()); assert len(d["ids"]) == 4' "$TMP/gen_$c" &&
        ok || bad "generate --compute $c: rc $rc: $(cat "$TMP/err" "$TMP/gen_$c")"
done

# --- the pipeline commands on the demo package ---------------------------------------------------
timeout 300 "$HLLM" embed --model "$P" --compute bf16 <"$CASES" >"$TMP/embed" 2>"$TMP/err" &&
    [ "$(wc -l <"$TMP/embed")" = "$(wc -l <"$CASES")" ] && grep -q '"cluster":[0-9]' "$TMP/embed" &&
    ok || bad "embed --compute bf16: $(cat "$TMP/err")"
timeout 300 "$HLLM" generate --model "$P" --greedy --max-new 4 --compute bf16 <"$CASES" >"$TMP/pgen" 2>"$TMP/err" &&
    [ "$(wc -l <"$TMP/pgen")" = "$(wc -l <"$CASES")" ] && ok || bad "generate (package) --compute bf16: $(cat "$TMP/err")"
timeout 300 "$HLLM" cluster --model "$P" --users "$CASES" --k 2 --out "$TMP/c.safetensors" --compute bf16 \
    >/dev/null 2>"$TMP/err" && [ -s "$TMP/c.safetensors" ] && ok || bad "cluster --compute bf16: $(cat "$TMP/err")"
printf '{"id": "a1", "title": "Night Flight", "description": "A pilot crosses the Andes."}\n' >"$TMP/ads.jsonl"
timeout 300 "$HLLM" titles --model "$P" --ads "$TMP/ads.jsonl" --out "$TMP/t.jsonl" --greedy --max-new 4 \
    --compute bf16 >/dev/null 2>"$TMP/err" && [ -s "$TMP/t.jsonl" ] && ok || bad "titles --compute bf16: $(cat "$TMP/err")"

# --- bad values: exit 2 with a message naming the option, on every subcommand ---------------------
check_bad() {
    local what=$1
    shift
    "$@" </dev/null >/dev/null 2>"$TMP/err"
    local rc=$?
    [ $rc -eq 2 ] && grep -q -- "--compute expects f32 or bf16, got 'fp8'" "$TMP/err" && ok ||
        bad "$what --compute fp8: rc $rc: $(cat "$TMP/err")"
}
check_bad bench "$HLLM" bench --model "$M" --compute fp8
check_bad generate "$HLLM" generate --model "$M" --ids 1,2 --compute fp8
check_bad "generate (package)" "$HLLM" generate --model "$P" --compute fp8
check_bad embed "$HLLM" embed --model "$P" --compute fp8
check_bad cluster "$HLLM" cluster --model "$P" --users "$CASES" --k 2 --out "$TMP/x" --compute fp8
check_bad titles "$HLLM" titles --model "$P" --ads "$TMP/ads.jsonl" --out "$TMP/x" --compute fp8
"$HLLM" bench --model "$M" --compute BF16 >/dev/null 2>&1
[ $? -eq 2 ] && ok || bad "--compute BF16 (case) accepted"

# --- bf16 is a CPU-backend mode -------------------------------------------------------------------
out=$(timeout 60 "$HLLM" bench --model "$M" --backend cuda --compute bf16 --prompt-len 8 --gen 2 --reps 1 2>&1)
rc=$?
[ $rc -ne 0 ] && grep -q "CPU backend only" <<<"$out" && ok || bad "cuda + bf16: rc $rc: $out"

# --- --help lists it ------------------------------------------------------------------------------
for cmd in bench generate embed cluster titles; do
    "$HLLM" $cmd --help 2>&1 | grep -q -- "--compute C" && ok || bad "$cmd --help lacks --compute"
done

echo "compute.sh: $pass passed, $fail failed"
[ $fail -eq 0 ]
