#!/usr/bin/env python3
"""Next-item evaluation of the synthetic benchmark (HLLM pre-training, MODEL_SPEC §6.3).

    python3 tools/synth/nextitem_eval.py score --split DATA/nextitem/test.jsonl --ranked R.jsonl
    python3 tools/synth/nextitem_eval.py popularity --data DATA [--split test] [--out R.jsonl]

The split (written by generate.py) is leave-one-out: nextitem/train.jsonl holds every user's
sequence but the last two items, valid.jsonl the second-to-last item as the target of the
sequence before it, test.jsonl the last item as the target of everything before it.

score: RANKED has one line per user of the split, {"user_id": ..., "ranked": [item ids, best
first]}, in any order. Items of the user's own history are removed from the ranking first (the
reference sets them to -inf), then Recall@K = share of users whose target is in the top K and
NDCG@K = mean of 1/log2(1 + rank) over targets ranked within K (one relevant item per user).

popularity: the baseline that ranks every item of nextitem/items.jsonl by how often it occurs in
the split's histories (ties: smaller id first), without the user's history; prints its metrics
and, with --out, writes its rankings (the --top best per user) in the format score reads.
--by-facet: the same within the user's true facets (the share of the user's history in the
item's facet times the item's count + 1), a reference point for what reading titles can give.
"""

import argparse
import heapq
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from synthio import UserError, dumps, read_jsonl, run_main, write_jsonl  # noqa: E402


def parse_ks(s):
    try:
        ks = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--k {s!r}: expected comma-separated integers such as 10,50") from None
    if not ks or any(k < 1 for k in ks):
        raise UserError(f"--k {s!r}: expected positive integers")
    return ks


def _is_id(x):
    return (isinstance(x, int) and not isinstance(x, bool)) or isinstance(x, str)


def load_split(path):
    rows = read_jsonl(path, "next-item split")
    out = []
    for k, r in enumerate(rows, 1):
        if not isinstance(r, dict) or "user_id" not in r or "history" not in r or "target" not in r:
            raise UserError(f"{path}:{k}: expected {{\"user_id\", \"history\", \"target\"}} (a "
                            f"nextitem/valid.jsonl or test.jsonl line)")
        if not isinstance(r["history"], list) or not all(_is_id(x) for x in r["history"]) \
                or not _is_id(r["target"]):
            raise UserError(f"{path}:{k}: history must be a list of item ids and target an id")
        out.append(r)
    if not out:
        raise UserError(f"{path}: no users")
    seen = set()
    for k, r in enumerate(out, 1):
        if r["user_id"] in seen:
            raise UserError(f"{path}:{k}: user {r['user_id']!r} appears twice")
        seen.add(r["user_id"])
    return out


def load_ranked(path, split_path, users):
    rows = read_jsonl(path, "rankings")
    by_user = {}
    for k, r in enumerate(rows, 1):
        if not isinstance(r, dict) or "user_id" not in r or not isinstance(r.get("ranked"), list):
            raise UserError(f"{path}:{k}: expected {{\"user_id\": ..., \"ranked\": [item ids]}}")
        if not all(_is_id(x) for x in r["ranked"]):
            raise UserError(f"{path}:{k}: ranked must hold item ids")
        if r["user_id"] in by_user:
            raise UserError(f"{path}:{k}: user {r['user_id']!r} ranked twice")
        by_user[r["user_id"]] = r["ranked"]
    missing = [u["user_id"] for u in users if u["user_id"] not in by_user]
    if missing:
        raise UserError(f"{path}: no ranking for {len(missing)} of the {len(users)} users of "
                        f"{split_path} (first: {missing[0]!r})")
    extra = set(by_user) - {u["user_id"] for u in users}
    if extra:
        raise UserError(f"{path}: {len(extra)} users not in {split_path} "
                        f"(first: {sorted(map(str, extra))[0]!r})")
    return by_user


def target_rank(ranked, history, target):
    """1-based rank of target in ranked after removing history items and repeats; None if absent."""
    skip, seen, rank = set(history), set(), 0
    for x in ranked:
        if x in skip or x in seen:
            continue
        seen.add(x)
        rank += 1
        if x == target:
            return rank
    return None


def metrics(ranks, ks):
    n = len(ranks)
    out = {}
    for k in ks:
        hits = [r for r in ranks if r is not None and r <= k]
        out[f"R@{k}"] = len(hits) / n
        out[f"N@{k}"] = sum(1.0 / math.log2(1 + r) for r in hits) / n
    return out


def format_table(rows, ks, n, split_path):
    cols = [f"R@{k}" for k in ks] + [f"N@{k}" for k in ks]
    lines = ["| Method | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, m in rows:
        lines.append(f"| {name} | " + " | ".join(f"{100 * m[c]:.2f}" for c in cols) + " |")
    lines.append("")
    lines.append(f"{n} users of {split_path}; Recall and NDCG in percent, history items removed "
                 f"from the rankings.")
    return "\n".join(lines)


def _id_key(i):
    return (1, i, 0) if isinstance(i, str) else (0, "", i)


def popularity_rankings(users, items, top, facet_of=None):
    """Items by popularity in the split's histories. With facet_of (item id -> facet), by facet
    popularity instead: score = (share of the user's history in the item's facet) x (count + 1),
    a baseline that knows the true facets (what a sequence model can learn from the titles)."""
    count = {i: 0 for i in items}
    for u in users:
        for x in u["history"]:
            if x in count:
                count[x] += 1
    order = sorted(items, key=lambda i: (-count[i], _id_key(i)))
    by_facet = {}
    if facet_of is not None:
        for i in order:                      # each facet's items by count, then id
            by_facet.setdefault(facet_of.get(i), []).append(i)
        by_id = sorted(items, key=_id_key)
    out = []
    for u in users:
        h = set(u["history"])
        if facet_of is None:
            ranked = [i for i in order if i not in h][:top]
        else:
            share = {}
            for x in u["history"]:
                f = facet_of.get(x)
                share[f] = share.get(f, 0) + 1
            # sorting all items by (-share * (count + 1), id) == merging the facets the user
            # has read (each already in that order), then everything else by id
            lists = [[(-n * (count[i] + 1), _id_key(i), i) for i in by_facet.get(f, ())]
                     for f, n in share.items()]
            ranked = []
            for _, _, i in heapq.merge(*lists):
                if i not in h:
                    ranked.append(i)
                    if len(ranked) == top:
                        break
            if len(ranked) < top:
                ranked += [i for i in by_id if i not in h and facet_of.get(i) not in share
                           ][:top - len(ranked)]
        out.append({"user_id": u["user_id"], "ranked": ranked})
    return out


def cmd_score(a):
    ks = parse_ks(a.k)
    users = load_split(a.split)
    ranked = load_ranked(a.ranked, a.split, users)
    ranks = [target_rank(ranked[u["user_id"]], u["history"], u["target"]) for u in users]
    m = metrics(ranks, ks)
    name = a.name or os.path.splitext(os.path.basename(a.ranked))[0]
    if a.json:
        print(dumps({"split": a.split, "users": len(users), "method": name, "metrics": m}))
    else:
        print(format_table([(name, m)], ks, len(users), a.split))
    return 0


def cmd_popularity(a):
    ks = parse_ks(a.k)
    split = os.path.join(a.data, "nextitem", f"{a.split}.jsonl")
    users = load_split(split)
    items_path = os.path.join(a.data, "nextitem", "items.jsonl")
    items = []
    for k, r in enumerate(read_jsonl(items_path, "next-item catalog"), 1):
        if not isinstance(r, dict) or not _is_id(r.get("item_id")):
            raise UserError(f"{items_path}:{k}: expected {{\"item_id\": ..., \"title\": ...}}")
        items.append(r["item_id"])
    if a.top < max(ks):
        raise UserError(f"--top {a.top} is smaller than the largest --k {max(ks)}")
    facet_of, method = None, "popularity"
    if a.by_facet:
        cat_path = os.path.join(a.data, "catalog.jsonl")
        facet_of = {r["item_id"]: r.get("facet") for r in read_jsonl(cat_path, "catalog")
                    if isinstance(r, dict) and "item_id" in r}
        method = "facet popularity"
    rankings = popularity_rankings(users, items, a.top, facet_of)
    if a.out:
        write_jsonl(a.out, rankings)
    by_user = {r["user_id"]: r["ranked"] for r in rankings}
    ranks = [target_rank(by_user[u["user_id"]], u["history"], u["target"]) for u in users]
    m = metrics(ranks, ks)
    if a.json:
        print(dumps({"split": split, "users": len(users), "method": method, "metrics": m}))
    else:
        print(format_table([(method, m)], ks, len(users), split))
    return 0


def main(argv):
    ap = argparse.ArgumentParser(prog="nextitem_eval.py", description="Recall@K / NDCG@K of "
                                 "next-item rankings on the synthetic leave-one-out split.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score", help="score rankings against a split")
    s.add_argument("--split", required=True, help="DATA/nextitem/test.jsonl or valid.jsonl")
    s.add_argument("--ranked", required=True, help="JSON lines {\"user_id\", \"ranked\": [...]}")
    s.add_argument("--name", help="method name in the table (default: the file name)")
    p = sub.add_parser("popularity", help="the popularity baseline")
    p.add_argument("--data", required=True, help="directory written by generate.py")
    p.add_argument("--split", default="test", choices=("valid", "test"))
    p.add_argument("--top", type=int, default=200, help="ranking length written (default 200)")
    p.add_argument("--out", help="write the rankings here (JSON lines)")
    p.add_argument("--by-facet", action="store_true", help="facet popularity: weight each item by "
                   "the share of the user's history in its true facet (catalog.jsonl)")
    for x in (s, p):
        x.add_argument("--k", default="10,50", help="cut-offs (default 10,50)")
        x.add_argument("--json", action="store_true", help="print JSON instead of the table")
    a = ap.parse_args(argv)
    return cmd_score(a) if a.cmd == "score" else cmd_popularity(a)


if __name__ == "__main__":
    run_main(main)
