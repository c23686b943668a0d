#!/usr/bin/env python3
"""Writes the trainer data reader's fixtures (tests/unit/test_train_data.c):

  data_rows.jsonl      rows of tools/synth/generate.py's train.jsonl (seed 7) plus deliberate
                       edge cases (history over 50 titles, null description, a CRLF line,
                       profile JSON with numbers, nesting, escapes and non-ASCII) and bad rows;
                       every good row carries "_profile_json" = json.dumps(json.loads(
                       user_profile), ensure_ascii=False) as Python computes it (the reader
                       ignores unknown keys)
  data_bad.json        {"reason": [line numbers]} of the bad rows (nextitem_*: of the next-item
                       train.jsonl)
  data_nextitem/items.jsonl, data_nextitem/train.jsonl
                       the synth next-item split cut to 6 users (their items only) plus bad rows

    python3 tests/data/train/data_make_fixture.py tests/data/train
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))


def main(out):
    tmp = tempfile.mkdtemp()
    syn = os.path.join(tmp, "syn")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "synth", "generate.py"),
                    "--out", syn, "--seed", "7", "--books-per-facet", "70",
                    "--train-users", "4", "--train-ads", "3", "--train-ads-per-user", "2",
                    "--valid-users", "1", "--valid-ads", "1", "--valid-ads-per-user", "1",
                    "--test-users", "1", "--test-ads", "1", "--test-ads-per-user", "1"],
                   check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(syn, "train.jsonl"), encoding="utf-8") as f:
        synth = [json.loads(l) for l in f]

    def good(r):
        r = dict(r)
        r["_profile_json"] = json.dumps(json.loads(r["user_profile"]), ensure_ascii=False)
        return json.dumps(r, ensure_ascii=False).encode("utf-8")

    lines, bad = [], {}

    def add_bad(reason, raw):
        lines.append(raw)
        bad.setdefault(reason, []).append(len(lines))

    base = next(r for r in synth if len(r["title_list"]) >= 2)
    lines.append(good(synth[0]))
    lines.append(good(synth[1]))
    add_bad("json", b'{"user_profile": "{}", not json')
    long_hist = dict(synth[2])
    long_hist["title_list"] = [f"Old Book {i}" for i in range(7)] + long_hist["title_list"]
    long_hist["item_id_list"] = list(range(9000, 9007)) + long_hist["item_id_list"]
    while len(long_hist["title_list"]) < 55:
        long_hist["title_list"].insert(0, f"Older Book {len(long_hist['title_list'])}")
        long_hist["item_id_list"].insert(0, 8000 + len(long_hist["item_id_list"]))
    lines.append(good(long_hist))
    add_bad("json", b"[1, 2, 3]")
    r = dict(base)
    del r["response"]
    add_bad("field", json.dumps(r).encode())
    lines.append(b"")
    r = dict(base)
    r["response"] = 42
    add_bad("field", json.dumps(r).encode())
    r = dict(base)
    r["response"] = ""
    add_bad("empty", json.dumps(r).encode())
    r = dict(base)
    r["original_title"] = "Broken \x00"
    add_bad("utf8", json.dumps(r).encode().replace(b"\\u0000", b"\xff\xfe"))
    r = dict(synth[3])
    r["original_description"] = None
    lines.append(good(r).replace(b"\n", b"") + b"\r")
    r = dict(base)
    r["item_id_list"] = r["item_id_list"][:-1] + ["x"]
    add_bad("field", json.dumps(r).encode())
    r = dict(base)
    r["item_id_list"] = r["item_id_list"][:-1]
    add_bad("field", json.dumps(r).encode())
    r = dict(base)
    r["user_profile"] = "{not a profile"
    add_bad("field", json.dumps(r).encode())
    r = dict(synth[4])
    r["user_profile"] = json.dumps({"Long-term Interest": "caf\u00e9 \u00fcber \u4e66", "n": 3,
                                    "x": [1.5, 0.1, 1e-07, 12345678901234567.0, -0.0, 2.0],
                                    "nested": {"t": True, "f": False, "z": None},
                                    "esc": "tab\tquote\" back\\ nl\n ctl\x01 slash/"},
                                   indent=4, ensure_ascii=False)
    lines.append(good(r))
    lines.append(good(synth[5]))
    with open(os.path.join(out, "data_rows.jsonl"), "wb") as f:
        for l in lines:
            f.write(l + b"\n")
    nd = os.path.join(out, "data_nextitem")
    os.makedirs(nd, exist_ok=True)
    with open(os.path.join(syn, "nextitem", "train.jsonl"), encoding="utf-8") as f:
        seqs = [json.loads(l) for l in f][:6]
    with open(os.path.join(syn, "nextitem", "items.jsonl"), encoding="utf-8") as f:
        items = [json.loads(l) for l in f]
    used = {i for s in seqs for i in s["item_ids"]}
    with open(os.path.join(nd, "items.jsonl"), "w", encoding="utf-8") as f:
        for it in items:
            if it["item_id"] in used:
                f.write(json.dumps(it, ensure_ascii=False) + "\n")
    n = 0
    with open(os.path.join(nd, "train.jsonl"), "w", encoding="utf-8") as f:
        for i, s in enumerate(seqs):
            f.write(json.dumps(s) + "\n")
            n += 1
            if i == 1:
                f.write(json.dumps({"user_id": "short", "item_ids": [seqs[0]["item_ids"][0]]}) + "\n")
                n += 1
                bad.setdefault("nextitem_empty", []).append(n)
            if i == 3:
                f.write(json.dumps({"user_id": "unknown", "item_ids": [seqs[0]["item_ids"][0],
                                                                       999999]}) + "\n")
                n += 1
                bad.setdefault("nextitem_field", []).append(n)
    with open(os.path.join(out, "data_bad.json"), "w") as f:
        json.dump(bad, f, sort_keys=True)
        f.write("\n")
    subprocess.run(["rm", "-rf", tmp], check=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else HERE)
