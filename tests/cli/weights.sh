#!/usr/bin/env bash
# CLI test for `--weights auto|f32|bf16|f16` (in-memory weight dtype): every stored x in-memory pair
# runs (narrowing an F32 checkpoint to bf16/f16 overflowed the heap before), and narrowed weights
# give results close to f32: the same first greedy tokens, user vectors with cosine > 0.99.
# usage: weights.sh /path/to/hllm /path/to/tests
set -u
HLLM=$1
TESTS=$2
P=$TESTS/data/creator/tiny                # stored F32
M32=$TESTS/data/llm/llama_gqa_f32         # stored F32
M16=$TESTS/data/llm/llama_mha_bf16_tied   # stored BF16
CASES=$TESTS/data/creator/cases.jsonl
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

# run NAME command...: runs under timeout 60, output in $TMP/NAME, must exit 0
run() {
    local name=$1
    shift
    timeout 60 "$@" >"$TMP/$name" 2>"$TMP/$name.err"
    local rc=$?
    [ $rc -eq 0 ] && ok || bad "exit $rc: $* -> $(head -c 400 "$TMP/$name.err")"
}
first() { cut -d, -f1-"$2" "$TMP/$1"; }

# --- plain HF models: every stored x in-memory dtype ------------------------------------------
for m in "$M32" "$M16"; do
    for w in auto f32 bf16 f16; do
        name=gen_$(basename "$m")_$w
        run "$name" "$HLLM" generate --model "$m" --ids 1,2,3 --max-new 16 --no-stop --weights "$w"
        [ "$(tr ',' '\n' <"$TMP/$name" | wc -l)" -eq 16 ] && ok || bad "$name: $(cat "$TMP/$name")"
    done
done
# the fixtures' greedy margins are large: narrowed weights keep the first tokens
for w in bf16 f16; do
    [ "$(first "gen_llama_gqa_f32_$w" 4)" = "$(first gen_llama_gqa_f32_f32 4)" ] && ok \
        || bad "f32 model as $w: $(cat "$TMP/gen_llama_gqa_f32_$w") vs f32 $(cat "$TMP/gen_llama_gqa_f32_f32")"
done
# a bf16 checkpoint widened to f32 or kept as bf16 computes the same f32 math: identical tokens
cmp -s "$TMP/gen_llama_mha_bf16_tied_auto" "$TMP/gen_llama_mha_bf16_tied_f32" && ok \
    || bad "bf16 model: as stored and widened differ"
[ "$(first gen_llama_mha_bf16_tied_f16 4)" = "$(first gen_llama_mha_bf16_tied_auto 4)" ] && ok \
    || bad "bf16 model as f16: $(cat "$TMP/gen_llama_mha_bf16_tied_f16")"

# --- the model package (stored F32): embed, generate, cluster --------------------------------
for w in auto f32 bf16 f16; do
    run "embed_$w" "$HLLM" embed --model "$P" --full --weights "$w" <"$CASES"
    [ "$(wc -l <"$TMP/embed_$w")" -eq "$(wc -l <"$CASES")" ] && ok || bad "embed --weights $w line count"
done
echo '{"history":["a"]}' | run embed_one_bf16 "$HLLM" embed --model "$P" --weights bf16
echo '{"history":["a"]}' | run embed_one_f16 "$HLLM" embed --model "$P" --weights f16
grep -q '"cluster":' "$TMP/embed_one_bf16" && grep -q '"cluster":' "$TMP/embed_one_f16" && ok || bad "embed one"
cmp -s "$TMP/embed_auto" "$TMP/embed_f32" && ok || bad "F32 package: auto and f32 differ"
python3 - "$TMP" <<'EOF' && ok || bad "narrowed package weights are not close to f32"
import json, math, sys
d = sys.argv[1]
def load(w):
    return [json.loads(l) for l in open(f"{d}/embed_{w}")]
ref = load("f32")
for w in ("bf16", "f16"):
    for i, (a, b) in enumerate(zip(load(w), ref)):
        if "error" in a or "error" in b:
            continue
        for key in ("user", "projected"):
            x, y = a[key], b[key]
            cos = sum(p * q for p, q in zip(x, y)) / math.sqrt(sum(p * p for p in x) * sum(q * q for q in y))
            if not cos > 0.99:
                sys.exit(f"{w} line {i} {key}: cosine {cos}")
EOF
for w in bf16 f16; do
    head -3 "$CASES" | run "gen_pkg_$w" "$HLLM" generate --model "$P" --greedy --max-new 4 --weights "$w"
    [ "$(grep -c '"title":' "$TMP/gen_pkg_$w")" -eq 3 ] && ok || bad "package generate --weights $w: $(cat "$TMP/gen_pkg_$w")"
done
run cluster_bf16 "$HLLM" cluster --model "$P" --users "$CASES" --k 2 --out "$TMP/c.safetensors" --weights bf16

# --- anything else is a usage error, in every command that takes --weights --------------------
for w in i32 F32 as_stored count ""; do
    for cmd in "generate --model $M32 --ids 1" "bench --model $M32 --prompt-len 4 --gen 2 --reps 1" \
               "embed --model $P" "generate --model $P" "cluster --model $P --users $CASES --k 2 --out $TMP/x.st"; do
        # shellcheck disable=SC2086
        timeout 60 "$HLLM" $cmd --weights "$w" </dev/null >"$TMP/badw" 2>&1
        rc=$?
        [ $rc -eq 2 ] && grep -q "weights expects auto, f32, bf16 or f16, got '$w'" "$TMP/badw" && ok \
            || bad "--weights '$w' ($cmd): exit $rc, $(head -c 300 "$TMP/badw")"
    done
done

echo "weights: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
