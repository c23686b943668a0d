#!/usr/bin/env bash
# CLI test for `hllm generate`, `hllm inspect` and `hllm bench`: real runs on a fixture model,
# batched == one-by-one through the CLI, and every kind of bad input giving a clear error with the
# documented exit code (never a crash).
# usage: generate.sh /path/to/hllm /path/to/tests
set -u
HLLM=$1
TESTS=$2
M=$TESTS/data/llm/llama_gqa_f32
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

# expect CODE PATTERN -- command...   (PATTERN must appear in stderr+stdout)
expect() {
    local code=$1 pat=$2
    shift 3
    local out rc
    out=$("$@" 2>&1)
    rc=$?
    if [ "$rc" -ne "$code" ]; then bad "exit $rc (want $code): $* -> $out"; return; fi
    if [ -n "$pat" ] && ! grep -q -- "$pat" <<<"$out"; then bad "no '$pat' in output of: $* -> $out"; return; fi
    ok
}

# --- real runs ---------------------------------------------------------------------------------
a=$("$HLLM" generate --model "$M" --ids 5,6,7 --max-new 12 --no-stop) || bad "generate a"
b=$("$HLLM" generate --model "$M" --ids 9,1,4,4,2,100 --max-new 12 --no-stop) || bad "generate b"
ab=$("$HLLM" generate --model "$M" --ids 5,6,7 --ids 9,1,4,4,2,100 --max-new 12 --no-stop) || bad "generate ab"
[ "$(printf '%s\n%s' "$a" "$b")" = "$ab" ] && ok || bad "batched CLI output differs: '$ab' vs '$a' / '$b'"
[ "$(tr ',' '\n' <<<"$a" | wc -l)" -eq 12 ] && ok || bad "expected 12 ids, got '$a'"
s1=$("$HLLM" generate --model "$M" --ids 5,6,7 --temperature 0.9 --top-k 20 --top-p 0.9 --seed 3 --max-new 16 --no-stop)
s2=$("$HLLM" generate --model "$M" --ids 5,6,7 --temperature 0.9 --top-k 20 --top-p 0.9 --seed 3 --max-new 16 --no-stop)
[ -n "$s1" ] && [ "$s1" = "$s2" ] && ok || bad "same seed gave different samples: '$s1' vs '$s2'"
j=$("$HLLM" generate --model "$M" --ids 5 --max-new 3 --no-stop --json)
grep -q '"finish": "length"' <<<"$j" && ok || bad "json output: $j"
# --stop LIST: generation ends at the first listed id (included), finish "stop"; it replaces the
# config's eos ids. Expected outputs come from the unstopped greedy run above.
ids=($(tr ',' ' ' <<<"$a"))
x=${ids[2]} y=${ids[5]}
cut_at() { local out=() t; for t in "${ids[@]}"; do out+=("$t"); for s in "$@"; do [ "$t" = "$s" ] && { (IFS=,; echo "${out[*]}"); return; }; done; done; (IFS=,; echo "${out[*]}"); }
st=$("$HLLM" generate --model "$M" --ids 5,6,7 --max-new 12 --stop "$x")
[ "$st" = "$(cut_at "$x")" ] && ok || bad "--stop $x: '$st', want '$(cut_at "$x")' (from '$a')"
st=$("$HLLM" generate --model "$M" --ids 5,6,7 --max-new 12 --stop "$y,$x" --json)
grep -q "\"ids\": \[$(sed 's/,/, /g' <<<"$(cut_at "$y" "$x")")\], \"finish\": \"stop\"" <<<"$st" && ok ||
    bad "--stop $y,$x --json: '$st'"
unused=1
while grep -qw "$unused" <<<"${ids[*]}"; do unused=$((unused + 1)); done
st=$("$HLLM" generate --model "$M" --ids 5,6,7 --max-new 12 --stop "$unused" --json)
grep -q '"finish": "length"' <<<"$st" && [ "$(grep -o '[0-9]\+' <<<"${st%%]*}" | wc -l)" -eq 12 ] && ok ||
    bad "--stop with an id never generated: '$st'"
expect 2 "--stop" -- "$HLLM" generate --model "$M" --ids 5 --stop abc
expect 2 "--stop" -- "$HLLM" generate --model "$M" --ids 5 --stop 1,,2
"$HLLM" inspect --model "$M" >"$TMP/inspect" 2>&1 && ok || bad "inspect"
grep -q 'model.layers.1.mlp.down_proj.weight' "$TMP/inspect" && grep -q 'num_key_value_heads      2' "$TMP/inspect" && ok || bad "inspect output"
"$HLLM" bench --model "$M" --prompt-len 8 --gen 4 --reps 1 --json >"$TMP/bench" && grep -q '"decode_tok_s"' "$TMP/bench" && ok || bad "bench"

# --- help and usage errors (exit 2) ------------------------------------------------------------
for cmd in generate bench inspect; do
    expect 0 "usage: hllm $cmd" -- "$HLLM" "$cmd" --help
done
expect 0 "commands:" -- "$HLLM" --help
expect 2 "unknown command" -- "$HLLM" frobnicate
expect 2 "required" -- "$HLLM" generate --ids 1,2
expect 2 "token ids" -- "$HLLM" generate --model "$M" --ids 1,x
expect 2 "trailing comma" -- "$HLLM" generate --model "$M" --ids 1,2,
expect 2 "top-p" -- "$HLLM" generate --model "$M" --ids 1 --top-p 1.5
expect 2 "temperature" -- "$HLLM" generate --model "$M" --ids 1 --temperature -1
expect 2 "max-new" -- "$HLLM" generate --model "$M" --ids 1 --max-new ten
expect 2 "backend" -- "$HLLM" generate --model "$M" --ids 1 --backend tpu
expect 2 "unexpected argument" -- "$HLLM" generate --model "$M" --ids 1 extra

# --- runtime errors (exit 1) -------------------------------------------------------------------
expect 1 "outside the vocabulary" -- "$HLLM" generate --model "$M" --ids 1,99999
expect 1 "$TMP/nope" -- "$HLLM" generate --model "$TMP/nope" --ids 1
cp -r "$M" "$TMP/trunc"
head -c 5000 "$M/model.safetensors" >"$TMP/trunc/model.safetensors"
expect 1 "model.safetensors" -- "$HLLM" generate --model "$TMP/trunc" --ids 1
cp -r "$M" "$TMP/badcfg"
sed -i 's/"hidden_act": "silu"/"hidden_act": "gelu"/' "$TMP/badcfg/config.json"
expect 1 "hidden_act" -- "$HLLM" generate --model "$TMP/badcfg" --ids 1
cp -r "$M" "$TMP/shape"
sed -i 's/"intermediate_size": [0-9]*/"intermediate_size": 100/' "$TMP/shape/config.json"
expect 1 "shape" -- "$HLLM" generate --model "$TMP/shape" --ids 1
expect 1 "config.json" -- "$HLLM" inspect --model "$TMP"

echo "cli generate: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
