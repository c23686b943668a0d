#!/usr/bin/env bash
# CLI test for the pipeline commands on the demo package tests/data/creator/tiny:
# hllm embed / generate (package mode) / cluster. One output line per input line, in order; bad
# lines get {"error": ...} and the rest go on; never a crash.
# usage: pipeline.sh /path/to/hllm /path/to/tests
set -u
HLLM=$1
TESTS=$2
P=$TESTS/data/creator/tiny
CASES=$TESTS/data/creator/cases.jsonl
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
nlines() { wc -l <"$1" | tr -d ' '; }

# --- embed ------------------------------------------------------------------------------------
"$HLLM" embed --model "$P" <"$CASES" >"$TMP/embed" 2>"$TMP/err" || bad "embed exit: $(cat "$TMP/err")"
[ "$(nlines "$TMP/embed")" = "$(nlines "$CASES")" ] && ok || bad "embed: line count"
grep -c '"cluster":[0-9]' "$TMP/embed" | grep -qx "$(nlines "$CASES")" && ok || bad "embed: clusters"
"$HLLM" embed --model "$P" --full --batch 3 <"$CASES" >"$TMP/full" || bad "embed --full"
grep -q '"projected":\[' "$TMP/full" && grep -q '"user":\[' "$TMP/full" && ok || bad "embed --full fields"
# batch size does not change the clusters (scores may differ in the last float bits: prefill GEMMs
# of different row counts round differently, see docs/ARCHITECTURE.md)
"$HLLM" embed --model "$P" --batch 1 --item-cache 0 <"$CASES" >"$TMP/embed1" || bad "embed batch 1"
[ "$(sed -E 's/,"cluster_score".*//' "$TMP/embed")" = "$(sed -E 's/,"cluster_score".*//' "$TMP/embed1")" ] &&
    ok || bad "embed: --batch 1 clusters differ from --batch 16"

# --- bad input: one error line per bad line, the good ones still answered -----------------------
{
    printf 'not json\n'
    printf '{"history": 5}\n'
    printf '{"history": ["x", 3]}\n'
    printf '\n'
    printf '{"history": ["\xff\xfe broken utf-8"]}\n'
    printf '[1, 2]\n'
    printf '{"history": ["fine", ""]}\n'
    python3 -c 'import json; print(json.dumps({"history": ["t%d" % i for i in range(100001)]}))'
    python3 -c 'import json; print(json.dumps({"history": ["t%d" % i for i in range(3000)]}))'
    printf '{"history": ["nul \\u0000 inside"]}\n'
} >"$TMP/bad.jsonl"
"$HLLM" embed --model "$P" <"$TMP/bad.jsonl" >"$TMP/bad.out" 2>"$TMP/bad.err"
rc=$?
[ "$rc" -eq 1 ] && ok || bad "embed on bad lines: exit $rc, want 1 (lines answered, some failed)"
[ "$(nlines "$TMP/bad.out")" = 10 ] && ok || bad "bad input: $(nlines "$TMP/bad.out") output lines, want 10"
want="error error error error error error cluster error cluster cluster"
got=$(sed -E 's/^\{"(error|cluster)".*/\1/' "$TMP/bad.out" | tr '\n' ' ' | sed 's/ $//')
[ "$got" = "$want" ] && ok || bad "bad input results: '$got'"
grep -q 'at most 100000' "$TMP/bad.out" && ok || bad "huge history message"

# --- generate (package mode) --------------------------------------------------------------------
"$HLLM" generate --model "$P" --greedy --max-new 8 <"$CASES" >"$TMP/gen" || bad "generate"
[ "$(nlines "$TMP/gen")" = "$(nlines "$CASES")" ] && grep -c '"title":' "$TMP/gen" | grep -qx "$(nlines "$CASES")" && ok || bad "generate output"
"$HLLM" generate --model "$P" --greedy --max-new 8 --batch 2 <"$CASES" >"$TMP/gen2" || bad "generate batch 2"
cmp -s "$TMP/gen" "$TMP/gen2" && ok || bad "generate: --batch 2 differs"
"$HLLM" generate --model "$P" --per-user --temperature 0.9 --seed 5 --max-new 8 <"$CASES" >"$TMP/s1" || bad "sampled"
"$HLLM" generate --model "$P" --per-user --temperature 0.9 --seed 5 --max-new 8 --batch 4 <"$CASES" >"$TMP/s2" || bad "sampled b4"
cmp -s "$TMP/s1" "$TMP/s2" && ok || bad "sampled output depends on batching"
printf '{"history": ["a"]}\n{"history": ["a"], "ad": {"title": "T", "description": 3}}\n{"history": ["a"], "ad": {"title": "T"}}\n' |
    "$HLLM" generate --model "$P" --max-new 4 >"$TMP/gbad"
[ $? -eq 1 ] && ok || bad "generate with bad lines should exit 1"
got=$(sed -E 's/^\{"(error|title)".*/\1/' "$TMP/gbad" | tr '\n' ' ' | sed 's/ $//')
[ "$got" = "error error title" ] && ok || bad "generate bad lines: '$got'"
"$HLLM" generate --model "$P" --ids 1,2 </dev/null >/dev/null 2>&1
[ $? -eq 2 ] && ok || bad "--ids with a package should be a usage error"

# --- cluster ------------------------------------------------------------------------------------
"$HLLM" cluster --model "$P" --users "$CASES" --k 3 --out "$TMP/c3.safetensors" >"$TMP/cl" 2>"$TMP/cl.err" || bad "cluster: $(cat "$TMP/cl.err")"
grep -q '"k":3' "$TMP/cl" && [ -s "$TMP/c3.safetensors" ] && ok || bad "cluster output"
# the new centroids work in a package
cp -r "$P" "$TMP/pkg"
cp "$TMP/c3.safetensors" "$TMP/pkg/clusters.safetensors"
"$HLLM" embed --model "$TMP/pkg" <"$CASES" >"$TMP/e3" || bad "embed with new centroids"
sed -E 's/.*"cluster":([0-9]+).*/\1/' "$TMP/e3" | sort -u | awk '$1 >= 3 {exit 1}' && ok || bad "cluster ids >= k"
"$HLLM" cluster --model "$P" --users "$CASES" --k 500 --out "$TMP/x" >/dev/null 2>"$TMP/e"
[ $? -eq 1 ] && grep -q 'fewer than --k' "$TMP/e" && ok || bad "k > users"
# the k-means options: deterministic for fixed options, and each one really reaches FAISS
objective() { sed -E 's/.*"objective":([0-9.e+-]+).*/\1/' "$1"; }
km() { out=$1; shift; "$HLLM" cluster --model "$P" --users "$CASES" --k 3 --out "$TMP/$out.st" "$@" >"$TMP/$out.json" 2>"$TMP/$out.err"; }
km d1 && km d2 && cmp -s "$TMP/d1.st" "$TMP/d2.st" && ok || bad "cluster: same options, different centroids"
km s7 --seed 7 && ! cmp -s "$TMP/d1.st" "$TMP/s7.st" && ok || bad "cluster --seed 7 gave the default's centroids"
km n1 --niter 1 --nredo 1 --seed 3 && km n8 --niter 1 --nredo 8 --seed 3 &&
    awk -v a="$(objective "$TMP/n1.json")" -v b="$(objective "$TMP/n8.json")" 'BEGIN {exit !(b < a)}' &&
    ok || bad "cluster --nredo 8 should keep a better run than --nredo 1 ($(objective "$TMP/n1.json") vs $(objective "$TMP/n8.json"))"
# --niter needs more users than the 11 cases to matter (those converge in one iteration): 80
# random histories over the cases' titles, k = 8
python3 -c '
import json, random, sys
r = random.Random(5)
t = [x for l in open(sys.argv[1]) for x in json.loads(l)["history"]]
for i in range(80): print(json.dumps({"history": r.sample(t, r.randint(1, 6))}))' "$CASES" >"$TMP/u80.jsonl"
km80() { out=$1; shift; "$HLLM" cluster --model "$P" --users "$TMP/u80.jsonl" --k 8 --out "$TMP/$out.st" "$@" >"$TMP/$out.json" 2>"$TMP/$out.err"; }
km80 i1 --niter 1 --nredo 1 && km80 i40 --niter 40 --nredo 1 &&
    awk -v a="$(objective "$TMP/i1.json")" -v b="$(objective "$TMP/i40.json")" 'BEGIN {exit !(b <= a)}' &&
    ! cmp -s "$TMP/i1.st" "$TMP/i40.st" && ok || bad "cluster --niter 40 vs 1: no change or a worse objective"
km m1 --max-points-per-centroid 1 && grep -q 'random subsample of 3 of the 11 users' "$TMP/m1.err" &&
    ! cmp -s "$TMP/d1.st" "$TMP/m1.st" && ok || bad "cluster --max-points-per-centroid 1: $(cat "$TMP/m1.err")"
km m0 --max-points-per-centroid 0 && [ ! -s "$TMP/m0.err" ] && cmp -s "$TMP/d1.st" "$TMP/m0.st" && ok ||
    bad "cluster --max-points-per-centroid 0 (all users) differs from the default on 11 users"
for o in "--niter 0" "--nredo 0" "--niter x" "--max-points-per-centroid -1" "--seed" ; do
    km e $o; rc=$?
    [ $rc -eq 2 ] && [ -s "$TMP/e.err" ] && ok || bad "cluster $o: exit $rc, '$(cat "$TMP/e.err")'"
done

# --- broken packages ------------------------------------------------------------------------------
cp -r "$P" "$TMP/p2"
sed -i 's/"version": 1/"version": 7/' "$TMP/p2/creator.json"
echo '{"history": []}' | "$HLLM" embed --model "$TMP/p2" >/dev/null 2>"$TMP/e"
[ $? -eq 1 ] && grep -q 'version 7' "$TMP/e" && ok || bad "future version: $(cat "$TMP/e")"
cp -r "$P" "$TMP/p3"
sed -i 's/{description}/{descr}/' "$TMP/p3/creator.json"
echo '{"history": []}' | "$HLLM" embed --model "$TMP/p3" >/dev/null 2>"$TMP/e"
[ $? -eq 1 ] && grep -q 'unknown field' "$TMP/e" && ok || bad "bad template: $(cat "$TMP/e")"
"$HLLM" inspect --model "$P" >"$TMP/insp" 2>&1 && grep -q '^\[creative_llm\]' "$TMP/insp" &&
    grep -q 'user_projector.weight' "$TMP/insp" && grep -q '^centroids  *8 x 96' "$TMP/insp" && ok ||
    bad "inspect on a package: $(head -3 "$TMP/insp")"
for cmd in embed cluster; do
    "$HLLM" "$cmd" --help | grep -q "usage: hllm $cmd" && ok || bad "$cmd --help"
done
"$HLLM" generate --model "$P" --help | grep -q 'Package mode' && ok || bad "package generate --help"

echo "cli pipeline: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
