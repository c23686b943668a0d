#!/usr/bin/env python3
"""The rule judge of the synthetic benchmark: Good / Same / Bad / Adv against the known answer.

    python3 tools/synth/judge.py --truth DATA/test.truth.jsonl [NAME=]OUTPUT.jsonl ...

OUTPUT is what `hllm generate --model PKG < DATA/test.requests.jsonl` writes (one JSON line per
request: {"title": ..., ...}; {"error": ...} lines count as no title), or any JSON-lines file
with a "title" (or "response") per line, aligned line by line with the truth file. Each OUTPUT
is a Method B row of the reference's table (MODEL_SPEC §9.2) with Method A = the original title,
or --a NAME=FILE for a pairwise comparison. Rules, exactly (docs/SYNTH.md):

  text is compared as lower-case words (letters and digits; punctuation and spacing ignored);
  the title is kept when its words occur in the output contiguously and in order;
  what is left around it must be made of selling points (and the fillers "and", "plus", "with");
  Bad:  no title, title dropped or garbled, unsupported words, a selling point the ad does not
        have (these two are hallucinations), or a point not matching the user when one matches;
  Good: the title kept and only points that match the user's interests added;
  Same: the title unchanged, or only points of the ad added when none of them matches the user.
Adv = (Good - Bad) / N. Pairwise: B wins a row when its score (+1 / 0 / -1) beats A's.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import world as W  # noqa: E402
from synthio import UserError, dumps, read_jsonl, run_main, write_jsonl  # noqa: E402

FILLERS = frozenset(["and", "plus", "with"])
SCORE = {"good": 1, "same": 0, "bad": -1}

# reason -> (verdict, is a hallucination)
REASONS = {
    "right point": ("good", False),
    "unchanged": ("same", False),
    "ad point, none matches": ("same", False),
    "no title": ("bad", False),
    "title dropped or garbled": ("bad", False),
    "unsupported words": ("bad", True),
    "point not in the ad": ("bad", True),
    "wrong point": ("bad", False),
}

TRUTH_FIELDS = ("original_title", "ad_points", "right_points", "target")


def _find(seq, sub):
    for i in range(len(seq) - len(sub) + 1):
        if seq[i:i + len(sub)] == sub:
            return i
    return -1


def tile(ws, phrases):
    """Cover the word list ws with phrases (tuples of words) and fillers. Returns (phrases used,
    uncovered words), preferring the fewest uncovered words, then the fewest fillers."""
    n = len(ws)
    INF = (n + 1, n + 1)
    best = [INF] * (n + 1)
    how = [None] * (n + 1)
    best[0] = (0, 0)
    by_first = {}
    for p in sorted(phrases):
        by_first.setdefault(p[0], []).append(p)
    for i in range(n):
        if best[i] == INF:
            continue
        u, f = best[i]
        for p in by_first.get(ws[i], ()):
            j = i + len(p)
            if tuple(ws[i:j]) == p and (u, f) < best[j]:
                best[j], how[j] = (u, f), ("p", i, p)
        c = (u, f + 1) if ws[i] in FILLERS else (u + 1, f)
        if c < best[i + 1]:
            best[i + 1], how[i + 1] = c, ("f" if ws[i] in FILLERS else "u", i, ws[i])
    used, uncovered, j = [], [], n
    while j > 0:
        kind, i, x = how[j]
        if kind == "p":
            used.append(" ".join(x))
        elif kind == "u":
            uncovered.append(x)
        j = i
    return used[::-1], uncovered[::-1]


def _phrases(points):
    return frozenset(tuple(W.words(p)) for p in points if W.words(p))


_WORLD_PHRASES = _phrases(W.ALL_POINTS)


def judge_title(title, truth, universe=None):
    """(reason, points found) for one generated title against one truth row. See REASONS for
    each reason's verdict. universe: extra known selling points (default: the world's)."""
    if not isinstance(title, str) or not title.strip():
        return "no title", []
    g = W.words(title)
    t = W.words(truth["original_title"])
    i = _find(g, t) if t else 0
    if i < 0:
        return "title dropped or garbled", []
    ad_points = {" ".join(W.words(p)) for p in truth["ad_points"]}
    right = {" ".join(W.words(p)) for p in truth["right_points"]}
    base = _WORLD_PHRASES if universe is None else _phrases(universe)
    phrases = base | {tuple(p.split()) for p in ad_points if p}
    found, uncovered = [], []
    for part in (g[:i], g[i + len(t):]):
        if part:
            f, u = tile(part, phrases)
            found += f
            uncovered += u
    if uncovered:
        return "unsupported words", found
    if not found:
        return "unchanged", found
    if any(p not in ad_points for p in found):
        return "point not in the ad", found
    if right:
        return ("right point" if all(p in right for p in found) else "wrong point"), found
    return "ad point, none matches", found


def check_truth(truths, path):
    for k, t in enumerate(truths, 1):
        if not isinstance(t, dict):
            raise UserError(f"{path}:{k}: expected a JSON object (a truth row)")
        miss = [f for f in TRUTH_FIELDS if f not in t]
        if miss:
            raise UserError(f"{path}:{k}: truth row lacks {', '.join(miss)} (is this a "
                            f"*.truth.jsonl file from tools/synth/generate.py?)")
        if not isinstance(t["original_title"], str):
            raise UserError(f"{path}:{k}: original_title must be a string")
        for f in ("ad_points", "right_points"):
            if not isinstance(t[f], list) or not all(isinstance(p, str) for p in t[f]):
                raise UserError(f"{path}:{k}: {f} must be a list of strings")


def output_titles(rows, path):
    """Titles of an output file (None for error lines) and its cluster ids (None unless every
    titled line carries an integer "cluster")."""
    titles, clusters = [], []
    for k, r in enumerate(rows, 1):
        if not isinstance(r, dict):
            raise UserError(f"{path}:{k}: expected a JSON object with a \"title\"")
        if "error" in r and "title" not in r:
            titles.append(None)
            clusters.append(None)
            continue
        t = r.get("title", r.get("response"))
        if not isinstance(t, str):
            raise UserError(f"{path}:{k}: no string \"title\" (or \"response\") field")
        titles.append(t)
        c = r.get("cluster")
        clusters.append(c if isinstance(c, int) and not isinstance(c, bool) else None)
    have = [c for t, c in zip(titles, clusters) if t is not None]
    return titles, (clusters if have and all(c is not None for c in have) else None)


def score_titles(titles, truths):
    out = []
    for title, truth in zip(titles, truths):
        reason, found = judge_title(title, truth)
        verdict, halluc = REASONS[reason]
        exact = isinstance(title, str) and " ".join(title.split()) == truth["target"]
        out.append({"verdict": verdict, "reason": reason, "hallucinated": halluc,
                    "exact": exact, "points": found})
    return out


def table_row(name_a, name_b, judged_b, judged_a=None):
    n = len(judged_b)
    good = same = bad = 0
    for k, jb in enumerate(judged_b):
        sa = SCORE[judged_a[k]["verdict"]] if judged_a else 0
        sb = SCORE[jb["verdict"]]
        good += sb > sa
        bad += sb < sa
        same += sb == sa
    reasons = {}
    for jb in judged_b:
        reasons[jb["reason"]] = reasons.get(jb["reason"], 0) + 1
    return {"a": name_a, "b": name_b, "n": n, "good": good, "same": same, "bad": bad,
            "adv": (good - bad) / n, "hallucinated": sum(j["hallucinated"] for j in judged_b),
            "exact": sum(j["exact"] for j in judged_b),
            "reasons": dict(sorted(reasons.items()))}


def cluster_oracle(truths, keys):
    """The best single title per (key, ad): for each group of rows sharing a key and an ad, the
    candidate (the original title, or it plus one of the ad's points in the target form) with the
    highest total score (Good +1, Bad -1); ties go to the original title, then to the ad's point
    order. keys: one hashable group key per truth row. Returns one title per row."""
    groups = {}
    for k, (t, key) in enumerate(zip(truths, keys)):
        groups.setdefault((key, t.get("ad_id", t["original_title"])), []).append(k)
    titles = [None] * len(truths)
    for rows in groups.values():
        t0 = truths[rows[0]]
        cands = [t0["original_title"]] + [W.target_title(t0["original_title"], p)
                                          for p in t0["ad_points"]]
        best, best_s = None, None
        for c in cands:
            s = sum(SCORE[REASONS[judge_title(c, truths[k])[0]][0]] for k in rows)
            if best_s is None or s > best_s:
                best, best_s = c, s
        for k in rows:
            titles[k] = best
    return titles


def format_table(rows, n, truth_path):
    lines = ["| Method A | Method B | Good | Same | Bad | Adv | Hallucinated | Exact |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['a']} | {r['b']} | {r['good']} | {r['same']} | {r['bad']} | "
                     f"{100 * r['adv']:.1f}% | {r['hallucinated']} | {r['exact']} |")
    lines.append("")
    lines.append(f"N = {n} rows of {truth_path}; Adv = (Good - Bad) / N; Hallucinated = titles "
                 f"adding text the ad does not have; Exact = titles equal to the target.")
    return "\n".join(lines)


def parse_named(spec):
    if "=" in spec and not os.path.exists(spec):
        name, path = spec.split("=", 1)
        if not name or not path:
            raise UserError(f"{spec!r}: expected NAME=FILE or FILE")
        return name, path
    return os.path.splitext(os.path.basename(spec))[0], spec


def load_output(spec, truths):
    name, path = parse_named(spec)
    rows = read_jsonl(path, "generated titles")
    if len(rows) != len(truths):
        raise UserError(f"{path}: {len(rows)} lines, but the truth file has {len(truths)}: an "
                        f"output must have one line per request, in order")
    titles, clusters = output_titles(rows, path)
    return name, path, titles, clusters


def main(argv):
    ap = argparse.ArgumentParser(
        prog="judge.py", description="Judge generated titles against the synthetic benchmark's "
        "known answers and print the reference's Good/Same/Bad/Adv table (docs/SYNTH.md).")
    ap.add_argument("--truth", required=True,
                    help="the split's *.truth.jsonl (or the data directory: test.truth.jsonl)")
    ap.add_argument("outputs", nargs="+", metavar="[NAME=]FILE",
                    help="`hllm generate` output (JSON lines aligned with the truth); NAME "
                         "labels the Method B row (default: the file name)")
    ap.add_argument("--a", metavar="NAME=FILE",
                    help="Method A for a pairwise comparison (default: the original title)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--reasons", action="store_true", help="also print the count of each reason")
    ap.add_argument("--details", metavar="FILE",
                    help="write each row's verdict and reason (JSON lines; with one output only)")
    ap.add_argument("--no-cluster-ceiling", action="store_true",
                    help="do not compute the ceiling of outputs that carry cluster ids")
    a = ap.parse_args(argv)
    truth_path = a.truth
    if os.path.isdir(truth_path):
        truth_path = os.path.join(truth_path, "test.truth.jsonl")
    truths = read_jsonl(truth_path, "truth")
    if not truths:
        raise UserError(f"{truth_path}: no rows")
    check_truth(truths, truth_path)
    if a.details and len(a.outputs) != 1:
        raise UserError("--details needs exactly one output file")

    judged_a, name_a = None, "original title"
    if a.a:
        name_a, _, titles_a, _ = load_output(a.a, truths)
        judged_a = score_titles(titles_a, truths)
    rows, notes = [], []
    for spec in a.outputs:
        name, path, titles, clusters = load_output(spec, truths)
        judged = score_titles(titles, truths)
        rows.append(table_row(name_a, name, judged, judged_a))
        if a.details:
            write_jsonl(a.details, [dict({"row": k, "title": titles[k],
                                          "target": truths[k]["target"]}, **j)
                                    for k, j in enumerate(judged)])
        if clusters is not None and not a.no_cluster_ceiling:
            keys = [c if c is not None else f"error-{k}" for k, c in enumerate(clusters)]
            ceil = table_row("original title", f"{name}: cluster ceiling",
                             score_titles(cluster_oracle(truths, keys), truths))
            ceil["clusters"] = len(set(c for c in clusters if c is not None))
            notes.append(ceil)
    if a.json:
        print(dumps({"truth": truth_path, "n": len(truths), "rows": rows,
                     "cluster_ceilings": notes}))
        return 0
    print(format_table(rows, len(truths), truth_path))
    for c in notes:
        print(f"{c['b']}: one title per (cluster, ad) over these {c['clusters']} clusters can "
              f"reach at most Good {c['good']}, Bad {c['bad']}, Adv {100 * c['adv']:.1f}%.")
    if a.reasons:
        for r in rows:
            print(f"{r['b']}: " + ", ".join(f"{k} {v}" for k, v in r["reasons"].items()))
    return 0


if __name__ == "__main__":
    run_main(main)
