#!/usr/bin/env bash
# HC_CPU_ISA (cli/common.c): every level this CPU has is used and reported by `hllm bench`; unset
# picks the best; a bad name or a level the CPU lacks is a clear error.
# usage: cpu_isa.sh /path/to/hllm /path/to/tests
set -u
HLLM=$1
TESTS=$2
M=$TESTS/data/llm/llama_gqa_f32
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

bench() { HC_CPU_ISA=$1 timeout 60 "$HLLM" bench --model "$M" --backend cpu --threads 1 \
    --prompt-len 8 --gen 4 --reps 1 2>&1; }

best=""
for isa in portable avx2 avx512f avx512bf16; do
    out=$(bench $isa)
    rc=$?
    if [ $rc -eq 0 ]; then
        if grep -q "^cpu isa    $isa\$" <<<"$out"; then ok; else bad "$isa: not reported: $out"; fi
        best=$isa
    elif grep -q "HC_CPU_ISA=$isa: this CPU lacks it" <<<"$out"; then
        ok
    else
        bad "$isa: rc $rc, no clear message: $out"
    fi
done
[ -n "$best" ] && ok || bad "no level ran"
out=$(bench "" )
if grep -q "^cpu isa    $best\$" <<<"$out"; then ok; else bad "auto did not pick $best: $out"; fi
out=$(bench avx9000)
rc=$?
if [ $rc -ne 0 ] && grep -q "HC_CPU_ISA expects auto, portable" <<<"$out"; then ok; else bad "bad name: rc $rc: $out"; fi

# hllm inspect reports the level the backend picks and every level this CPU has
out=$("$HLLM" inspect --model "$M" 2>&1)
if grep -q "^cpu kernels  *$best (this CPU: portable" <<<"$out"; then ok; else bad "inspect: $out"; fi
# under --backend cuda the CPU level is not read: even a bad name gives no HC_CPU_ISA error
out=$(HC_CPU_ISA=avx9000 timeout 60 "$HLLM" bench --model "$M" --backend cuda --threads 1 \
    --prompt-len 8 --gen 4 --reps 1 2>&1)
if grep -q "HC_CPU_ISA" <<<"$out"; then bad "cuda read HC_CPU_ISA: $out"; else ok; fi

echo "cpu_isa.sh: $pass passed, $fail failed"
[ $fail -eq 0 ]
