#!/usr/bin/env bash
# CLI regression tests for loading hostile or broken model packages (issue 7, loader side): a FIFO
# in place of any file fails at once naming it (it blocked forever), paths in creator.json that
# leave the package are refused and errors never quote the foreign file's bytes, a huge
# --item-cache costs nothing up front, an empty templates.prompt1 generates.
# usage: package_hardening.sh /path/to/hllm /path/to/tests
set -u
HLLM=$1
TESTS=$2
P=$TESTS/data/creator/tiny
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

# expect CODE PATTERN -- command...   (stdin: one request; PATTERN must appear in the output;
# runs under timeout 10: a load that blocks fails)
REQ='{"history": ["The Hobbit", "Dune"], "ad": {"title": "Night Flight", "description": "A pilot."}}'
expect() {
    local code=$1 pat=$2
    shift 3
    local out rc
    out=$(timeout 10 "$@" <<<"$REQ" 2>&1)
    rc=$?
    if [ "$rc" -ne "$code" ]; then bad "exit $rc (want $code): $* -> ${out:0:400}"; return; fi
    if [ -n "$pat" ] && ! grep -q -- "$pat" <<<"$out"; then bad "no '$pat' in output of: $* -> ${out:0:400}"; return; fi
    ok
}
# no_foreign_bytes command...: the output must not quote /etc/passwd-like content
no_foreign_bytes() {
    local out
    out=$(timeout 10 "$@" <<<"$REQ" 2>&1)
    if grep -q -e 'root' -e 'SECRET' -e 'near' -e '3475222254926655346' <<<"$out"; then
        bad "foreign bytes quoted: $* -> ${out:0:400}"
    else ok; fi
}

cp -r "$P" "$TMP/pkg"
K=$TMP/pkg
expect 0 '"title"' -- "$HLLM" generate --model "$K" --greedy --max-new 2

# --- FIFOs in place of package files -------------------------------------------------------------
for f in creator.json model.safetensors clusters.safetensors item_llm/config.json user_llm/config.json \
    creative_llm/config.json item_tokenizer/tokenizer.json item_tokenizer/tokenizer_config.json \
    creative_tokenizer/tokenizer.json creative_tokenizer/tokenizer_config.json \
    creative_tokenizer/generation_config.json; do
    [ -e "$K/$f" ] && mv "$K/$f" "$K/$f.aside"
    mkfifo "$K/$f"
    expect 1 "$f: is a FIFO, not a regular file" -- "$HLLM" generate --model "$K" --greedy --max-new 2
    rm "$K/$f"
    [ -e "$K/$f.aside" ] && mv "$K/$f.aside" "$K/$f"
done
# and in a Hugging Face model directory
M=$TESTS/data/llm/llama_gqa_f32
mkdir "$TMP/hf" && cp "$M/config.json" "$M/model.safetensors" "$TMP/hf/"
for f in config.json model.safetensors model.safetensors.index.json; do
    [ -e "$TMP/hf/$f" ] && mv "$TMP/hf/$f" "$TMP/hf/$f.aside"
    mkfifo "$TMP/hf/$f"
    expect 1 "$f: is a FIFO, not a regular file" -- "$HLLM" generate --model "$TMP/hf" --ids 1,2 --max-new 2
    rm "$TMP/hf/$f"
    [ -e "$TMP/hf/$f.aside" ] && mv "$TMP/hf/$f.aside" "$TMP/hf/$f"
done

# --- paths that leave the package ---------------------------------------------------------------
printf 'root:x:0:0:SECRET:/root:/bin/bash\n' >"$TMP/secret"
mkdir "$TMP/outdir" && for f in config.json tokenizer.json tokenizer_config.json; do cp "$TMP/secret" "$TMP/outdir/$f"; done
cp "$K/creator.json" "$TMP/creator.json.orig"
setf() { # setf FIELD VALUE: creator.json with one path field replaced (cluster.centroids nested)
    python3 - "$K/creator.json" "$1" "$2" <<'EOF'
import json, sys
path, field, value = sys.argv[1:]
m = json.load(open(path))
if field == "cluster.centroids":
    m["cluster"]["centroids"] = value
else:
    m[field] = value
json.dump(m, open(path, "w"), indent=2)
EOF
}
ln -s "$TMP/secret" "$K/link_file"
ln -s "$TMP/outdir" "$K/link_dir"
for field in weights item_llm creative_tokenizer cluster.centroids; do
    case $field in weights | cluster.centroids) t=secret l=link_file ;; *) t=outdir l=link_dir ;; esac
    for v in "$TMP/$t" "../$t" "$l" /etc/passwd; do
        cp "$TMP/creator.json.orig" "$K/creator.json"
        setf "$field" "$v"
        expect 1 "outside the model package" -- "$HLLM" embed --model "$K"
        no_foreign_bytes "$HLLM" embed --model "$K"
    done
done
cp "$TMP/creator.json.orig" "$K/creator.json"
# a symlinked file inside the package's own directories
for f in item_llm/config.json creative_tokenizer/tokenizer_config.json model.safetensors; do
    mv "$K/$f" "$K/$f.aside" && ln -s /etc/passwd "$K/$f"
    expect 1 "$(basename "$f").*resolves to /etc/passwd, outside the model package" -- "$HLLM" generate --model "$K" --greedy --max-new 2
    no_foreign_bytes "$HLLM" generate --model "$K" --greedy --max-new 2
    rm "$K/$f" && mv "$K/$f.aside" "$K/$f"
done
rm "$K/link_file" "$K/link_dir"
# a package made of symlinks to another (a common way to share weights): refused by default with
# the flag named, loaded by every command with --allow-outside-paths, same results as the original
mkdir -p "$TMP/linked"
for f in "$P"/*; do ln -s "$(readlink -f "$f")" "$TMP/linked/"; done
echo '{"history": ["The Hobbit"], "ad": {"title": "Dune", "description": "Sand."}}' >"$TMP/la.jsonl"
expect_in() { local file=$1; shift; expect "$@" <"$file"; }
for cmd in embed generate; do
    expect_in "$TMP/la.jsonl" 1 "creator.json: resolves to .*outside the model package" -- "$HLLM" $cmd --model "$TMP/linked"
    expect_in "$TMP/la.jsonl" 1 "loads with --allow-outside-paths" -- "$HLLM" $cmd --model "$TMP/linked"
done
expect 1 "loads with --allow-outside-paths" -- "$HLLM" inspect --model "$TMP/linked"
expect 0 "load check *ok" -- "$HLLM" inspect --model "$TMP/linked" --allow-outside-paths
"$HLLM" embed --model "$P" --full <"$TMP/la.jsonl" >"$TMP/la.ref" 2>&1
"$HLLM" embed --model "$TMP/linked" --full --allow-outside-paths <"$TMP/la.jsonl" >"$TMP/la.out" 2>&1
cmp -s "$TMP/la.ref" "$TMP/la.out" && ok || bad "embed --allow-outside-paths differs: $(head -c 300 "$TMP/la.out")"
"$HLLM" generate --model "$P" --greedy --max-new 4 <"$TMP/la.jsonl" >"$TMP/la.ref" 2>&1
"$HLLM" generate --model "$TMP/linked" --greedy --max-new 4 --allow-outside-paths <"$TMP/la.jsonl" >"$TMP/la.out" 2>&1
cmp -s "$TMP/la.ref" "$TMP/la.out" && grep -q '"title"' "$TMP/la.out" && ok || bad "generate --allow-outside-paths: $(head -c 300 "$TMP/la.out")"
"$HLLM" cluster --model "$TMP/linked" --allow-outside-paths --users "$TMP/la.jsonl" --k 1 --out "$TMP/la.st" >/dev/null 2>&1
[ -s "$TMP/la.st" ] && ok || bad "cluster --allow-outside-paths wrote nothing"
# a foreign file that is really inside the package: refused for what it is, nothing quoted
cp "$TMP/secret" "$K/not_weights"
setf weights not_weights
expect 1 "implausible header length" -- "$HLLM" embed --model "$K"
no_foreign_bytes "$HLLM" embed --model "$K"
cp "$TMP/creator.json.orig" "$K/creator.json"
for f in item_llm/config.json creative_tokenizer/tokenizer_config.json item_tokenizer/tokenizer.json; do
    mv "$K/$f" "$K/$f.aside" && cp "$TMP/secret" "$K/$f"
    expect 1 "$f: invalid JSON at line 1 column" -- "$HLLM" generate --model "$K" --greedy --max-new 2
    no_foreign_bytes "$HLLM" generate --model "$K" --greedy --max-new 2
    mv "$K/$f.aside" "$K/$f"
done
# which tokenizer failed
mv "$K/item_tokenizer/tokenizer.json" "$TMP/tok.aside" && echo '{"model": 1' >"$K/item_tokenizer/tokenizer.json"
expect 1 "item tokenizer: $K/item_tokenizer/tokenizer.json" -- "$HLLM" embed --model "$K"
mv "$TMP/tok.aside" "$K/item_tokenizer/tokenizer.json"

# --- the documented maximum --item-cache costs nothing up front ------------------------------------
expect 0 '"cluster"' -- "$HLLM" embed --model "$K" --item-cache 268435456
if command -v /usr/bin/time >/dev/null; then
    /usr/bin/time -f '%M' -o "$TMP/rss" "$HLLM" embed --model "$K" --item-cache 268435456 <<<"$REQ" >/dev/null 2>&1
    rss=$(tail -1 "$TMP/rss")
    [ "$rss" -lt 400000 ] && ok || bad "--item-cache 268435456 cost ${rss} KiB RSS"
fi

# --- an empty templates.prompt1 ----------------------------------------------------------------------
python3 - "$K/creator.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
m["templates"]["prompt1"] = ""
json.dump(m, open(sys.argv[1], "w"), indent=2)
EOF
expect 0 '"title"' -- "$HLLM" generate --model "$K" --greedy --max-new 3
expect 0 '"title"' -- "$HLLM" generate --model "$K" --greedy --max-new 3 --per-user
cp "$TMP/creator.json.orig" "$K/creator.json"

echo "package_hardening: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
