#!/usr/bin/env bash
# CLI test for `hllm titles` (proto/title-table.md) on the demo package tests/data/creator/tiny:
# - greedy: every table entry equals what `hllm generate` (cluster mode) gives a user of that
#   cluster for that ad (title, ids, finish), for users found in several clusters with hllm embed;
# - sampled: an entry depends only on (cluster, ad, settings): a second table over other ads, in
#   another order, has the same entries for the ads they share; another --seed changes them;
#   (that the sampled entries equal the daemon's live titles is checked in test_daemon.py, since
#   `hllm generate` seeds per line, not per (cluster, ad));
# - the header (format version, clusters, settings) and one entry per (cluster, ad);
# - pruning with the package's match head: every entry has its score (a probability); a
#   --prune-threshold above every score prunes all (original titles, no ids, finish "pruned",
#   the same scores), one below every score prunes none (the unpruned table), the median prunes
#   exactly the pairs scored below it; a package without the head has null scores and refuses
#   the option;
# - bad inputs: each bad ads line named by its line number, nothing written and an existing table
#   kept; --ads/--out directories, /dev/full, a missing directory, --out = --ads, a package
#   without centroids; no temporary file left behind; --help.
# usage: titles.sh /path/to/hllm /path/to/tests
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

cat >"$TMP/ads.jsonl" <<'EOF'
{"id": "a1", "title": "Night Flight", "description": "A pilot crosses the Andes."}
{"id": 2, "title": "Cooking at home"}
{"id": "a3", "title": "Kyoto in autumn", "description": null}
{"id": "dup", "title": "Cooking at home"}
EOF

# --- --help and usage errors -------------------------------------------------------------------
"$HLLM" titles --help >"$TMP/help" 2>&1 && grep -q -- "--ads" "$TMP/help" &&
    grep -q "title-table" "$TMP/help" && ok || bad "titles --help"
"$HLLM" --help | grep -q "titles" && ok || bad "hllm --help lists titles"
"$HLLM" titles --model "$P" --ads "$TMP/ads.jsonl" 2>"$TMP/err"
[ $? -eq 2 ] && grep -q -- "--out" "$TMP/err" && ok || bad "no --out: exit 2 naming it: $(cat "$TMP/err")"
"$HLLM" titles --model "$P" --ads "$TMP/ads.jsonl" --out "$TMP/x" --greedy --temperature 1 2>/dev/null
[ $? -eq 2 ] && ok || bad "--greedy with --temperature: exit 2"

# --- greedy: entries equal hllm generate for users of each cluster ------------------------------
"$HLLM" titles --model "$P" --ads "$TMP/ads.jsonl" --out "$TMP/greedy.jsonl" --greedy \
    --max-new 16 >"$TMP/summary" 2>"$TMP/err" || bad "titles greedy: $(cat "$TMP/err")"
ls -a "$TMP" | grep -q '\.tmp\.' && bad "a temporary file was left behind" || ok
# users: the fixture's histories and a few more, their clusters from hllm embed
python3 - "$CASES" >"$TMP/users.jsonl" <<'EOF'
import json, sys
users = [json.loads(l)["history"] for l in open(sys.argv[1]) if l.strip()]
words = ["The Hobbit", "Dune", "Small Gods", "Emma", "Ulysses", "Kyoto", "war", "peace", "stars"]
users += [[a, b] for i, a in enumerate(words) for b in words[i + 1:]]
for u in users:
    print(json.dumps({"history": u}))
EOF
"$HLLM" embed --model "$P" <"$TMP/users.jsonl" >"$TMP/clusters" 2>"$TMP/err" || bad "embed: $(cat "$TMP/err")"
python3 - "$TMP/users.jsonl" "$TMP/ads.jsonl" >"$TMP/gen_in" <<'EOF'
import json, sys
users = [json.loads(l)["history"] for l in open(sys.argv[1])]
ads = [json.loads(l) for l in open(sys.argv[2])]
for u in users:
    for a in ads:
        ad = {"title": a["title"]}
        if a.get("description") is not None:
            ad["description"] = a["description"]
        print(json.dumps({"history": u, "ad": ad}))
EOF
"$HLLM" generate --model "$P" --greedy --max-new 16 <"$TMP/gen_in" >"$TMP/gen_out" 2>"$TMP/err" ||
    bad "generate: $(cat "$TMP/err")"
python3 - "$TMP/greedy.jsonl" "$TMP/ads.jsonl" "$TMP/clusters" "$TMP/gen_out" "$TMP/summary" \
    >"$TMP/check" 2>&1 <<'EOF'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
head, entries = json.loads(lines[0]), [json.loads(l) for l in lines[1:]]
ads = [json.loads(l) for l in open(sys.argv[2])]
clusters = [json.loads(l)["cluster"] for l in open(sys.argv[3])]
gen = [json.loads(l) for l in open(sys.argv[4])]
summary = json.loads(open(sys.argv[5]).read())
errs = []
K = head["clusters"]
if head["hllm_title_table"] != 1 or len(head["package_digest"]) != 16 or \
        head["sampling"]["temperature"] != 0 or head["max_new_tokens"] != 16 or \
        head["prune_threshold"] is not None or K < 2:
    errs.append("header %r" % head)
uniq = ads[:3]  # the 4th repeats the 2nd's text: skipped
if len(entries) != K * len(uniq) or summary["entries"] != len(entries) or summary["duplicates"] != 1:
    errs.append("%d entries for %d clusters x %d ads (summary %r)" % (len(entries), K, len(uniq), summary))
keys = [(e["cluster"], e["ad_hash"]) for e in entries]
if len(set(keys)) != len(keys):
    errs.append("a (cluster, ad) pair twice")
order = [(i, k) for i in range(len(uniq)) for k in range(K)]
for (i, k), e in zip(order, entries):
    if e["cluster"] != k or e.get("ad_id") != uniq[i]["id"] or e["pruned"] is not False or \
            not isinstance(e["score"], float) or not 0 < e["score"] < 1 or \
            e["finish"] not in ("stop", "length"):
        errs.append("entry for ad %d cluster %d: %r" % (i, k, e))
table = {(e["cluster"], e["ad_id"]): e for e in entries}
seen = set()
for u, c in enumerate(clusters):
    for i, a in enumerate(ads):
        g = gen[u * len(ads) + i]
        if g["cluster"] != c:
            errs.append("generate's cluster %r, embed's %r" % (g["cluster"], c))
        e = table[(c, uniq[i if i < 3 else 1]["id"])]
        if (e["title"], e["ids"], e["finish"]) != (g["title"], g["ids"], g["finish"]):
            errs.append("user %d ad %d cluster %d: table %r, generate %r" % (u, i, c, e, g))
        seen.add(c)
if len(seen) < 2:
    errs.append("users in %d cluster(s) only" % len(seen))
print("\n".join(errs) if errs else "OK %d users in %d clusters" % (len(clusters), len(seen)))
EOF
grep -q '^OK' "$TMP/check" && ok || bad "greedy table vs hllm generate: $(head -c 3000 "$TMP/check")"

# --- pruning with the match head ----------------------------------------------------------------
python3 - "$TMP/greedy.jsonl" >"$TMP/thr" <<'EOF'
import json, sys
sc = sorted(json.loads(l)["score"] for l in open(sys.argv[1]).read().splitlines()[1:])
mid = (sc[len(sc) // 2 - 1] + sc[len(sc) // 2]) / 2
print("%.9f %.9f %.9f" % (sc[-1] + (1 - sc[-1]) / 2, sc[0] / 2, mid))
EOF
read -r HIGH LOW MID <"$TMP/thr"
for x in high low mid; do
    case $x in high) X=$HIGH ;; low) X=$LOW ;; mid) X=$MID ;; esac
    "$HLLM" titles --model "$P" --ads "$TMP/ads.jsonl" --out "$TMP/prune_$x.jsonl" --greedy \
        --max-new 16 --prune-threshold "$X" >"$TMP/psum_$x" 2>"$TMP/err" ||
        bad "titles --prune-threshold $X: $(cat "$TMP/err")"
done
python3 - "$TMP/greedy.jsonl" "$TMP/ads.jsonl" "$HIGH" "$LOW" "$MID" "$TMP" >"$TMP/check" 2>&1 <<'EOF'
import json, sys
def load(p):
    ls = open(p).read().splitlines()
    return json.loads(ls[0]), [json.loads(l) for l in ls[1:]]
hg, eg = load(sys.argv[1])
titles = {a["id"]: a["title"] for a in map(json.loads, open(sys.argv[2]))}
thr = dict(zip(("high", "low", "mid"), map(float, sys.argv[3:6])))
errs = []
for x, X in thr.items():
    h, es = load("%s/prune_%s.jsonl" % (sys.argv[6], x))
    summ = json.loads(open("%s/psum_%s" % (sys.argv[6], x)).read())
    if abs(h["prune_threshold"] - X) > 1e-6 or {k: v for k, v in h.items() if k != "prune_threshold"} != \
            {k: v for k, v in hg.items() if k != "prune_threshold"}:
        errs.append("%s: header %r" % (x, h))
    n_pr = 0
    for e, g in zip(es, eg):
        if (e["cluster"], e["ad_hash"]) != (g["cluster"], g["ad_hash"]) or abs(e["score"] - g["score"]) > 1e-6:
            errs.append("%s: entry %r vs unpruned %r" % (x, e, g))
            continue
        want = g["score"] < X
        if e["pruned"] != want:
            errs.append("%s: score %g threshold %g pruned %r" % (x, g["score"], X, e["pruned"]))
        elif want:
            n_pr += 1
            if e["title"] != titles[e["ad_id"]] or e["ids"] or e["finish"] != "pruned":
                errs.append("%s: pruned entry %r" % (x, e))
        elif e != g:
            errs.append("%s: kept entry %r differs from the unpruned %r" % (x, e, g))
    if len(es) != len(eg) or summ["pruned"] != n_pr:
        errs.append("%s: %d entries, %d pruned, summary %r" % (x, len(es), n_pr, summ))
    want_n = {"high": len(eg), "low": 0}.get(x)
    if (want_n is not None and n_pr != want_n) or (x == "mid" and not 0 < n_pr < len(eg)):
        errs.append("%s: %d of %d pruned" % (x, n_pr, len(eg)))
print("\n".join(errs) if errs else "OK thresholds %r" % thr)
EOF
grep -q '^OK' "$TMP/check" && ok || bad "pruned tables: $(head -c 3000 "$TMP/check")"
"$HLLM" titles --model "$P" --ads "$TMP/ads.jsonl" --out "$TMP/o" --prune-threshold 1.5 2>"$TMP/err"
[ $? -eq 2 ] && grep -q -- "--prune-threshold" "$TMP/err" && ok || bad "--prune-threshold 1.5: $(cat "$TMP/err")"
# a package without the match head: no scores, and --prune-threshold is refused
cp -r "$P" "$TMP/nohead"
python3 - "$TMP/nohead/model.safetensors" <<'EOF' || bad "writing the package without the head"
import json, struct, sys
p = sys.argv[1]
raw = open(p, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
data = raw[8 + n:]
out, off, parts = {}, 0, []
for k, v in hdr.items():
    if k == "__metadata__" or k.startswith("cls_tower.") or k in ("user_tower.weight", "item_tower.weight"):
        continue
    a, b = v["data_offsets"]
    out[k] = dict(v, data_offsets=[off, off + b - a])
    parts.append(data[a:b])
    off += b - a
h = json.dumps(out).encode()
h += b" " * (-len(h) % 8)
open(p, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(parts))
EOF
"$HLLM" titles --model "$TMP/nohead" --ads "$TMP/ads.jsonl" --out "$TMP/o" --greedy --max-new 4 \
    --prune-threshold 0.5 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "needs the match head" "$TMP/err" && [ ! -e "$TMP/o" ] && ok ||
    bad "--prune-threshold without the head: $(cat "$TMP/err")"
"$HLLM" titles --model "$TMP/nohead" --ads "$TMP/ads.jsonl" --out "$TMP/nh.jsonl" --greedy \
    --max-new 16 >/dev/null 2>"$TMP/err" || bad "titles without the head: $(cat "$TMP/err")"
python3 - "$TMP/nh.jsonl" >"$TMP/check" 2>&1 <<'EOF'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1]).read().splitlines()[1:]]
ok = len(a) > 0 and all(x["score"] is None and x["pruned"] is False for x in a)
print("OK" if ok else "without the head: %r" % a[:2])
EOF
grep -qx 'OK' "$TMP/check" && ok || bad "table without the head: $(cat "$TMP/check")"

# --- sampled: an entry depends only on (cluster, ad, settings) ----------------------------------
"$HLLM" titles --model "$P" --ads "$TMP/ads.jsonl" --out "$TMP/s1.jsonl" --temperature 1 \
    --top-k 0 --seed 5 --max-new 16 >/dev/null 2>"$TMP/err" || bad "titles sampled: $(cat "$TMP/err")"
printf '%s\n' '{"title": "Kyoto in autumn"}' '{"title": "A new ad"}' \
    '{"title": "Night Flight", "description": "A pilot crosses the Andes."}' >"$TMP/ads2.jsonl"
"$HLLM" titles --model "$P" --ads "$TMP/ads2.jsonl" --out "$TMP/s2.jsonl" --temperature 1 \
    --top-k 0 --seed 5 --max-new-tokens 16 >/dev/null 2>"$TMP/err" || bad "titles sampled 2: $(cat "$TMP/err")"
"$HLLM" titles --model "$P" --ads "$TMP/ads.jsonl" --out "$TMP/s3.jsonl" --temperature 1 \
    --top-k 0 --seed 6 --max-new 16 >/dev/null 2>"$TMP/err" || bad "titles sampled 3: $(cat "$TMP/err")"
python3 - "$TMP/s1.jsonl" "$TMP/s2.jsonl" "$TMP/s3.jsonl" "$TMP/greedy.jsonl" >"$TMP/check" 2>&1 <<'EOF'
import json, sys
def load(p):
    ls = open(p).read().splitlines()
    return json.loads(ls[0]), {(e["cluster"], e["ad_hash"]): e for e in map(json.loads, ls[1:])}
(h1, t1), (h2, t2), (h3, t3), (hg, tg) = map(load, sys.argv[1:])
errs = []
if h1["sampling"] != {"temperature": 1, "top_k": 0, "top_p": h1["sampling"]["top_p"], "seed": 5}:
    errs.append("sampled header %r" % h1)
shared = set(t1) & set(t2)
if len(shared) != 2 * h1["clusters"]:
    errs.append("%d shared pairs" % len(shared))
diff = [k for k in shared if (t1[k]["ids"], t1[k]["title"]) != (t2[k]["ids"], t2[k]["title"])]
if diff:
    errs.append("entries depend on the other ads or the order: %r" % diff[:3])
if all(t1[k]["ids"] == t3[k]["ids"] for k in t1):
    errs.append("--seed 6 gave the --seed 5 table")
if all(t1[k]["ids"] == tg[k]["ids"] for k in t1):
    errs.append("the sampled table equals the greedy one")
print("\n".join(errs) if errs else "OK")
EOF
grep -qx 'OK' "$TMP/check" && ok || bad "sampled tables: $(cat "$TMP/check")"

# --- bad ads lines: each named, nothing written, an existing table kept ------------------------
cp "$TMP/greedy.jsonl" "$TMP/keep.jsonl"
printf '%s\n' '{"title": "fine"}' '{"title": ' '{"description": "no title"}' '{"title": 5}' \
    '{"title": "x", "description": 3}' '' '{"title": "x", "colour": "red"}' '[1]' \
    '{"title": "x", "id": [1]}' >"$TMP/bad.jsonl"
"$HLLM" titles --model "$P" --ads "$TMP/bad.jsonl" --out "$TMP/keep.jsonl" --greedy 2>"$TMP/err"
rc=$?
[ $rc -eq 1 ] && ok || bad "bad ads: exit $rc, want 1"
for want in 'bad.jsonl:2: invalid JSON' 'bad.jsonl:3: "title" must be a string (missing)' \
    'bad.jsonl:4: "title" must be a string' 'bad.jsonl:5: "description" must be a string' \
    'bad.jsonl:6: empty line' 'bad.jsonl:7: unknown field "colour"' 'bad.jsonl:8: expected a JSON object' \
    'bad.jsonl:9: "id" must be'  '8 bad lines; no table written'; do
    grep -qF -- "$want" "$TMP/err" && ok || bad "bad ads: no '$want' in: $(cat "$TMP/err")"
done
grep -q 'bad.jsonl:1:' "$TMP/err" && bad "the good line 1 was reported" || ok
cmp -s "$TMP/greedy.jsonl" "$TMP/keep.jsonl" && ok || bad "a failed run changed the existing table"
# an empty description shares a missing one's key but not its prompt: refused
printf '%s\n' '{"title": "t"}' '{"title": "t", "description": ""}' >"$TMP/coll.jsonl"
"$HLLM" titles --model "$P" --ads "$TMP/coll.jsonl" --out "$TMP/coll.out" --greedy 2>"$TMP/err"
[ $? -eq 1 ] && grep -q 'coll.jsonl:2: "description" is empty' "$TMP/err" && [ ! -e "$TMP/coll.out" ] && ok ||
    bad "empty description: $(cat "$TMP/err")"
: >"$TMP/empty.jsonl"
"$HLLM" titles --model "$P" --ads "$TMP/empty.jsonl" --out "$TMP/e.out" 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "no ads" "$TMP/err" && [ ! -e "$TMP/e.out" ] && ok || bad "no ads: $(cat "$TMP/err")"
# an ad longer than the package's prompt limit: named by its line before any generation
python3 -c 'import json; print(json.dumps({"title": "ok"})); print(json.dumps({"title": "x", "description": "\u65e5\u00e9\u0416" * 1500}))' >"$TMP/long.jsonl"
"$HLLM" titles --model "$P" --ads "$TMP/long.jsonl" --out "$TMP/l.out" --greedy 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "long.jsonl:2: .*max_prompt_tokens" "$TMP/err" && [ ! -e "$TMP/l.out" ] && ok ||
    bad "too long an ad: $(cat "$TMP/err")"

# --- bad paths and packages ---------------------------------------------------------------------
A=(--model "$P" --ads "$TMP/ads.jsonl" --greedy --max-new 4)
"$HLLM" titles "${A[@]}" --out "$TMP" 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "is a directory" "$TMP/err" && ok || bad "--out a directory: $(cat "$TMP/err")"
"$HLLM" titles --model "$P" --ads "$TMP" --out "$TMP/o" 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "is a directory" "$TMP/err" && ok || bad "--ads a directory: $(cat "$TMP/err")"
"$HLLM" titles "${A[@]}" --out /dev/full 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "No space left" "$TMP/err" && ok || bad "--out /dev/full: $(cat "$TMP/err")"
"$HLLM" titles "${A[@]}" --out "$TMP/no/such/dir/t.jsonl" 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "cannot create a temporary file" "$TMP/err" && ok || bad "missing dir: $(cat "$TMP/err")"
"$HLLM" titles "${A[@]}" --out "$TMP/ads.jsonl" 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "is the --ads file" "$TMP/err" && ok || bad "--out = --ads: $(cat "$TMP/err")"
"$HLLM" titles --model "$P" --ads "$TMP/nope.jsonl" --out "$TMP/o" 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "nope.jsonl" "$TMP/err" && ok || bad "missing --ads: $(cat "$TMP/err")"
"$HLLM" titles --model "$TESTS/data" --ads "$TMP/ads.jsonl" --out "$TMP/o" 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "creator.json" "$TMP/err" && ok || bad "not a package: $(cat "$TMP/err")"
# the package without its centroids
cp -r "$P" "$TMP/nocl"
python3 - "$TMP/nocl/creator.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
del c["cluster"]
json.dump(c, open(sys.argv[1], "w"))
EOF
"$HLLM" titles --model "$TMP/nocl" --ads "$TMP/ads.jsonl" --out "$TMP/o" 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "no cluster centroids" "$TMP/err" && [ ! -e "$TMP/o" ] && ok ||
    bad "package without clusters: $(cat "$TMP/err")"
ls -a "$TMP" | grep -q '\.tmp\.' && bad "a temporary file was left behind by a failure" || ok

echo "titles: $pass passed, $fail failed"
[ $fail -eq 0 ]
