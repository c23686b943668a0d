#!/usr/bin/env bash
# CLI regression tests from the hostile-input review (issue "Hardening ..."): lost output on a full
# disk, read errors taken for end of input, runaway --max-new, unbounded input lines, one bad line
# poisoning its whole batch, misleading messages for unusable --model paths and packages that do
# not load, out-of-vocabulary ids, and the CUDA library loaded on machines without a GPU.
# usage: hardening.sh /path/to/hllm /path/to/tests
set -u
HLLM=$1
TESTS=$2
P=$TESTS/data/creator/tiny
M=$TESTS/data/llm/llama_gqa_f32
TOK=$TESTS/data/tokenizers/llama2
CASES=$TESTS/data/creator/cases.jsonl
TMP=$(mktemp -d)
chmod 755 "$TMP" # the unreadable-directory case runs as nobody, who must reach inside
trap 'chmod -R u+rwx "$TMP" 2>/dev/null; rm -rf "$TMP"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

# expect CODE PATTERN -- command...   (PATTERN must appear in stderr+stdout; runs under timeout 60)
expect() {
    local code=$1 pat=$2
    shift 3
    local out rc
    out=$(timeout 60 "$@" 2>&1)
    rc=$?
    if [ "$rc" -ne "$code" ]; then bad "exit $rc (want $code): $* -> ${out:0:400}"; return; fi
    if [ -n "$pat" ] && ! grep -q -- "$pat" <<<"$out"; then bad "no '$pat' in output of: $* -> ${out:0:400}"; return; fi
    ok
}
# like expect, with stdin from a file
expect_in() {
    local file=$1
    shift
    expect "$@" <"$file"
}
nlines() { wc -l <"$1" | tr -d ' '; }
kinds() { sed -E 's/^\{"(error|cluster|title|ids|text)".*/\1/' "$1" | tr '\n' ' ' | sed 's/ $//'; }

printf '{"history": ["The Hobbit", "Dune"], "ad": {"title": "Night Flight", "description": "A pilot."}}\n' >"$TMP/one.jsonl"
printf '{"text": "The Hobbit"}\n' >"$TMP/text.jsonl"

# --- 5. output on a full device is an error, not a silent exit 0 ----------------------------------
if [ -w /dev/full ]; then
    expect_in "$TMP/one.jsonl" 1 "No space left on device" -- sh -c "'$HLLM' embed --model '$P' >/dev/full"
    expect_in "$TMP/one.jsonl" 1 "No space left on device" -- sh -c "'$HLLM' generate --model '$P' --greedy --max-new 4 >/dev/full"
    expect 1 "No space left on device" -- sh -c "'$HLLM' generate --model '$M' --ids 1,2 --max-new 2 >/dev/full"
    expect_in "$TMP/text.jsonl" 1 "No space left on device" -- sh -c "'$HLLM' tokenize --tokenizer '$TOK' >/dev/full"
    expect 1 "No space left on device" -- sh -c "'$HLLM' inspect --model '$P' >/dev/full"
    expect 1 "No space left on device" -- sh -c "'$HLLM' inspect --model '$M' >/dev/full"
    expect 1 "No space left on device" -- sh -c "'$HLLM' cluster --model '$P' --users '$CASES' --k 2 --out '$TMP/c.st' >/dev/full"
    expect 1 "No space left on device" -- sh -c "'$HLLM' bench --model '$M' --prompt-len 4 --gen 2 --reps 1 >/dev/full"
    expect 1 "No space left on device" -- sh -c "'$HLLM' --help >/dev/full"
    # exactly one message, not one from the command and another from main()
    n=$("$HLLM" embed --model "$P" <"$TMP/one.jsonl" 2>&1 >/dev/full | grep -c 'cannot write')
    [ "$n" = 1 ] && ok || bad "full disk reported $n times"
else
    bad "/dev/full is not writable here"
fi

# --- 5. a read error on stdin is an error, not end of input --------------------------------------
mkdir -p "$TMP/adir"
expect_in "$TMP/adir" 1 "reading stdin: Is a directory" -- "$HLLM" embed --model "$P"
expect_in "$TMP/adir" 1 "reading stdin: Is a directory" -- "$HLLM" generate --model "$P"
expect_in "$TMP/adir" 1 "reading stdin: Is a directory" -- "$HLLM" tokenize --tokenizer "$TOK"
expect 1 "reading stdin: Bad file descriptor" -- sh -c "'$HLLM' embed --model '$P' <&-"
expect 1 "reading stdin: Bad file descriptor" -- sh -c "'$HLLM' tokenize --tokenizer '$TOK' <&-"
expect 1 "is a directory" -- "$HLLM" cluster --model "$P" --users "$TMP/adir" --k 2 --out "$TMP/c.st"
cp "$CASES" "$TMP/users.jsonl"
expect 1 "refusing to overwrite" -- "$HLLM" cluster --model "$P" --users "$TMP/users.jsonl" --k 2 --out "$TMP/./users.jsonl"
cmp -s "$CASES" "$TMP/users.jsonl" && ok || bad "cluster --out = --users changed the input"

# --- 4. lengths are checked against the model ---------------------------------------------------
expect 1 "max_position_embeddings 256" -- "$HLLM" generate --model "$M" --ids 1 --max-new 1048576 --no-stop
expect 1 "max_position_embeddings 256" -- "$HLLM" generate --model "$M" --ids 1,2,3 --max-new 254 --no-stop
expect 0 "" -- "$HLLM" generate --model "$M" --ids 1,2,3 --max-new 253 --no-stop
expect_in "$TMP/one.jsonl" 2 "max_position_embeddings is 8192" -- "$HLLM" generate --model "$P" --max-new 8192

# --- 4. --max-line-bytes: a long line fails alone, memory stays bounded --------------------------
python3 - "$TMP" <<'EOF'
import json, sys
d = sys.argv[1]
with open(d + "/long.jsonl", "w") as f:
    f.write(json.dumps({"history": ["short"]}) + "\n")
    f.write(json.dumps({"history": ["x" * 5_000_000]}) + "\n")   # over the 4 MiB default
    f.write(json.dumps({"history": ["also short"]}) + "\n")
with open(d + "/longtext.jsonl", "w") as f:
    f.write(json.dumps({"text": "a b"}) + "\n")
    f.write(json.dumps({"text": "y" * 3000}) + "\n")
    f.write(json.dumps({"text": "c"}))   # no newline at the end
EOF
"$HLLM" embed --model "$P" <"$TMP/long.jsonl" >"$TMP/long.out" 2>/dev/null
[ $? -eq 1 ] && [ "$(kinds "$TMP/long.out")" = "cluster error cluster" ] && ok || bad "long line: $(kinds "$TMP/long.out")"
grep -q 'longer than --max-line-bytes 4194304' "$TMP/long.out" && ok || bad "long line message"
"$HLLM" tokenize --tokenizer "$TOK" --max-line-bytes 1000 <"$TMP/longtext.jsonl" >"$TMP/lt.out"
[ $? -eq 1 ] && [ "$(kinds "$TMP/lt.out")" = "text error text" ] && ok || bad "tokenize --max-line-bytes: $(kinds "$TMP/lt.out")"
"$HLLM" generate --model "$P" --greedy --max-new 2 --max-line-bytes 100 <"$TMP/long.jsonl" >"$TMP/gl.out" 2>/dev/null
[ "$(kinds "$TMP/gl.out")" = "error error error" ] && ok || bad "generate --max-line-bytes 100 (lines lack an ad): $(kinds "$TMP/gl.out")"
expect 2 "--max-line-bytes expects" -- "$HLLM" embed --model "$P" --max-line-bytes 0
if command -v /usr/bin/time >/dev/null; then
    /usr/bin/time -f '%M' -o "$TMP/rss" "$HLLM" embed --model "$P" --max-line-bytes 1000000 <"$TMP/long.jsonl" >/dev/null 2>&1
    rss=$(tail -1 "$TMP/rss")
    [ "$rss" -lt 300000 ] && ok || bad "a dropped 5 MB line cost ${rss} KiB RSS"
fi

# --- 6. one failing line does not fail its batch mates -------------------------------------------
# a package whose creative LLM has only 80 positions: the long ad's prompt no longer fits
mkdir -p "$TMP/short" && cp -r "$P"/. "$TMP/short/"
rm -r "$TMP/short/creative_llm" && mkdir "$TMP/short/creative_llm"
python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); c["max_position_embeddings"]=80; json.dump(c, open(sys.argv[2],"w"))' \
    "$P/creative_llm/config.json" "$TMP/short/creative_llm/config.json"
python3 - "$TMP" <<'EOF'
import json, sys
d = sys.argv[1]
with open(d + "/poison.jsonl", "w") as f:
    f.write(json.dumps({"history": ["The Hobbit"], "ad": {"title": "Dune", "description": "Sand."}}) + "\n")
    f.write(json.dumps({"history": ["Emma"], "ad": {"title": "Dune", "description": "word " * 200}}) + "\n")
    f.write(json.dumps({"history": ["Dracula"], "ad": {"title": "Dune", "description": "Spice."}}) + "\n")
EOF
"$HLLM" generate --model "$TMP/short" --greedy --max-new 4 <"$TMP/poison.jsonl" >"$TMP/p16.out" 2>&1
rc=$?
[ $rc -eq 1 ] && [ "$(kinds "$TMP/p16.out")" = "title error title" ] && ok || bad "batch poisoning (rc $rc): $(cat "$TMP/p16.out")"
grep -q 'max_position_embeddings 80' "$TMP/p16.out" && ok || bad "poisoned line message: $(cat "$TMP/p16.out")"
"$HLLM" generate --model "$TMP/short" --greedy --max-new 4 --batch 1 <"$TMP/poison.jsonl" >"$TMP/p1.out" 2>&1
cmp -s "$TMP/p16.out" "$TMP/p1.out" && ok || bad "batch 16 and batch 1 differ with a failing line"

# --- 8. unusable --model paths say what is wrong ----------------------------------------------------
ln -s loop "$TMP/loop"
expect 1 "Too many levels of symbolic links" -- "$HLLM" generate --model "$TMP/loop" --ids 1
expect_in "$TMP/one.jsonl" 1 "Too many levels of symbolic links" -- "$HLLM" embed --model "$TMP/loop"
expect 1 "Too many levels of symbolic links" -- "$HLLM" inspect --model "$TMP/loop"
expect 1 "No such file or directory" -- "$HLLM" generate --model "$TMP/nothing" --ids 1
expect 1 "is not a directory" -- "$HLLM" inspect --model "$CASES"
expect_in "$TMP/one.jsonl" 1 "is not a model package" -- "$HLLM" embed --model "$M"
mkdir -p "$TMP/lpkg" && ln -s loop "$TMP/lpkg/creator.json" && ln -s creator.json "$TMP/lpkg/loop"
expect 1 "creator.json: Too many levels of symbolic links" -- "$HLLM" generate --model "$TMP/lpkg" --ids 1
# an unreadable package directory (root reads everything: run that case as nobody when possible)
mkdir -p "$TMP/locked" && cp "$P/creator.json" "$TMP/locked/" && chmod 000 "$TMP/locked"
if [ "$(id -u)" -ne 0 ]; then
    expect 1 "Permission denied" -- "$HLLM" inspect --model "$TMP/locked"
elif command -v setpriv >/dev/null && setpriv --reuid=65534 --regid=65534 --clear-groups "$HLLM" --version >/dev/null 2>&1; then
    expect 1 "Permission denied" -- setpriv --reuid=65534 --regid=65534 --clear-groups "$HLLM" inspect --model "$TMP/locked"
else
    echo "note: unreadable-directory case not run (root, and the binary is not executable as nobody)"
fi
chmod 755 "$TMP/locked"

# --- 8. inspect exits 1 on a package or model that does not load -----------------------------------
mkdir -p "$TMP/deep" && cp -r "$P"/. "$TMP/deep/"
python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); c["num_hidden_layers"]+=1; json.dump(c, open(sys.argv[2],"w"))' \
    "$P/user_llm/config.json" "$TMP/deep/user_llm/config.json"
expect 1 "does not load" -- "$HLLM" inspect --model "$TMP/deep"
expect 0 "" -- "$HLLM" inspect --model "$TMP/deep" --no-load
mkdir -p "$TMP/cent" && cp -r "$P"/. "$TMP/cent/"
rm "$TMP/cent/clusters.safetensors"
python3 - "$TMP/cent/clusters.safetensors" <<'EOF'
import json, struct, sys
k, d = 3, 7   # wrong dimension
hdr = json.dumps({"centroids": {"dtype": "F32", "shape": [k, d], "data_offsets": [0, 4 * k * d]}}).encode()
hdr += b" " * (-len(hdr) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(hdr)) + hdr + struct.pack("<%df" % (k * d), *range(k * d)))
EOF
expect 1 "centroids have dimension 7" -- "$HLLM" inspect --model "$TMP/cent"
mkdir -p "$TMP/hfdeep" && ln -s "$(readlink -f "$M")"/model.safetensors "$TMP/hfdeep/"
python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); c["num_hidden_layers"]+=1; json.dump(c, open(sys.argv[2],"w"))' \
    "$M/config.json" "$TMP/hfdeep/config.json"
expect 1 "does not load" -- "$HLLM" inspect --model "$TMP/hfdeep"
expect 0 "load check" -- "$HLLM" inspect --model "$M"

# --- 8. ids outside the vocabulary -------------------------------------------------------------
printf '{"ids": [1, 32000]}\n{"ids": [1, 99999999999]}\n{"ids": [1, -1]}\n{"ids": [1, 2]}\n' >"$TMP/ids.jsonl"
"$HLLM" tokenize --tokenizer "$TOK" --decode <"$TMP/ids.jsonl" >"$TMP/ids.out"
[ $? -eq 1 ] && [ "$(kinds "$TMP/ids.out")" = "error error error ids" ] && ok || bad "decode out-of-vocab: $(cat "$TMP/ids.out")"
grep -q '99999999999 is outside the vocabulary (0..31999)' "$TMP/ids.out" && ok || bad "decode message"
expect 2 "token id 99999999999 is out of range" -- "$HLLM" generate --model "$M" --ids 1,99999999999
expect 1 "outside the vocabulary" -- "$HLLM" generate --model "$M" --ids 1,5000

# --- 9. --backend auto does not load the CUDA library on a machine without a GPU ----------------
if ! ls /dev/nvidia* /dev/dxg >/dev/null 2>&1; then
    LD_DEBUG=files "$HLLM" generate --model "$M" --ids 1,2 --max-new 1 >/dev/null 2>"$TMP/ld"
    if grep -q 'file=' "$TMP/ld"; then
        ! grep -q 'libhc_cuda\|libcudart\|libcublas' "$TMP/ld" && ok || bad "--backend auto loaded CUDA without a GPU"
    else
        echo "note: LD_DEBUG not honoured here; CUDA probe not checked"
    fi
    expect 1 "" -- "$HLLM" generate --model "$M" --ids 1,2 --max-new 1 --backend cuda
fi

# --- 10. $HC_CUDA_LIB and $HC_CUDA_DEVICE reach the backend (read by the CLI, passed explicitly) --
# the stand-in CUDA library of tests/unit/fake_cuda_lib.c, built next to the unit tests
FAKE=$(cd "$(dirname "$HLLM")/.." && pwd)/tests/libhc_fake_cuda.so
NOLIB=$TMP/no-such-dir/libhc_cuda.so
expect 1 "CUDA backend library $NOLIB not loadable" -- env HC_CUDA_LIB="$NOLIB" \
    "$HLLM" generate --model "$M" --ids 1,2 --max-new 1 --backend cuda
expect_in "$TMP/one.jsonl" 1 "CUDA backend library $NOLIB not loadable" -- env HC_CUDA_LIB="$NOLIB" \
    "$HLLM" embed --model "$P" --backend cuda
if [ -f "$FAKE" ]; then
    expect 1 "fake CUDA library: ABI 1, device 3" -- env HC_CUDA_LIB="$FAKE" HC_CUDA_DEVICE=3 \
        "$HLLM" generate --model "$M" --ids 1,2 --max-new 1 --backend cuda
    expect_in "$TMP/one.jsonl" 1 "fake CUDA library: ABI 1, device 0" -- env HC_CUDA_LIB="$FAKE" \
        "$HLLM" embed --model "$P" --backend cuda
    expect 1 "fake CUDA library: ABI 1, device 12" -- env HC_CUDA_LIB="$FAKE" HC_CUDA_DEVICE=12 \
        "$HLLM" bench --model "$M" --prompt-len 4 --gen 2 --reps 1 --backend cuda
else
    bad "stand-in CUDA library $FAKE not built"
fi
for dev in abc -1 1x ' 1'; do
    expect 1 "HC_CUDA_DEVICE must be a CUDA device index (0, 1, ...), got '$dev'" -- \
        env HC_CUDA_DEVICE="$dev" "$HLLM" generate --model "$M" --ids 1,2 --max-new 1 --backend cuda
done
# --backend cpu ignores both
expect 0 "" -- env HC_CUDA_DEVICE=abc HC_CUDA_LIB="$NOLIB" "$HLLM" generate --model "$M" --ids 1,2 \
    --max-new 1 --backend cpu

# --- f16 weights are a documented --weights value -------------------------------------------------
expect 0 "" -- "$HLLM" generate --model "$M" --ids 1,2,3 --max-new 4 --weights f16
expect 2 "auto, f32, bf16 or f16" -- "$HLLM" generate --model "$M" --ids 1 --weights f8

echo "hardening: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
