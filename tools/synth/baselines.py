#!/usr/bin/env python3
"""Baselines of the synthetic benchmark, judged by tools/synth/judge.py's rules.

    python3 tools/synth/baselines.py --data DATA [--split test] [--seed 0] [--out DIR]

Writes one `hllm generate`-shaped output file per baseline into --out (default DATA/baselines/)
and prints the judge's table for all of them:

  original            the original title (Adv 0 by definition)
  random-point        the title plus a random selling point of the ad (seeded)
  first-point         the title plus the first selling point of the ad's description
  oracle              the target titles: the ceiling of per-user mode
  cluster-oracle-*    the best single title per (group, ad), users grouped by their true facets:
                      the ceiling of cluster mode for that grouping
                        primary  the user's first long-term facet (16 groups)
                        long     the user's set of long-term facets
                        all      long-term facets and the short-term facet

Each file can be judged again with `judge.py --truth DATA/SPLIT.truth.jsonl FILE`.
"""

import argparse
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import judge as J  # noqa: E402
import world as W  # noqa: E402
from synthio import UserError, dumps, read_jsonl, run_main, write_jsonl  # noqa: E402

GROUPINGS = {
    "primary": lambda t: t["user_long_term"][0],
    "long": lambda t: "+".join(sorted(t["user_long_term"])),
    "all": lambda t: "+".join(sorted(t["user_long_term"])) + "|" + t["user_short_term"],
}


def baselines(truths, seed):
    """{name: list of output rows} for every baseline, in table order."""
    rng = random.Random(f"{seed}/baseline/random-point")
    out = {
        "original": [{"title": t["original_title"]} for t in truths],
        "random-point": [{"title": W.target_title(t["original_title"], rng.choice(t["ad_points"]))
                          if t["ad_points"] else t["original_title"]} for t in truths],
        "first-point": [{"title": W.target_title(t["original_title"], t["ad_points"][0])
                         if t["ad_points"] else t["original_title"]} for t in truths],
        "oracle": [{"title": t["target"]} for t in truths],
    }
    for g, key in GROUPINGS.items():
        keys = [key(t) for t in truths]
        ids = {k: i for i, k in enumerate(sorted(set(keys)))}
        titles = J.cluster_oracle(truths, keys)
        out[f"cluster-oracle-{g}"] = [{"title": ti, "cluster": ids[k]}
                                      for ti, k in zip(titles, keys)]
    return out


def main(argv):
    ap = argparse.ArgumentParser(prog="baselines.py", description="Write and judge the synthetic "
                                 "benchmark's baselines (docs/SYNTH.md).")
    ap.add_argument("--data", required=True, help="directory written by tools/synth/generate.py")
    ap.add_argument("--split", default="test", choices=("train", "valid", "test"))
    ap.add_argument("--seed", type=int, default=0, help="seed of the random-point baseline")
    ap.add_argument("--out", help="where to write the baseline outputs (default DATA/baselines)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    a = ap.parse_args(argv)
    truth_path = os.path.join(a.data, f"{a.split}.truth.jsonl")
    truths = read_jsonl(truth_path, "truth")
    if not truths:
        raise UserError(f"{truth_path}: no rows")
    J.check_truth(truths, truth_path)
    for k, t in enumerate(truths, 1):
        if "user_long_term" not in t or "user_short_term" not in t:
            raise UserError(f"{truth_path}:{k}: no user_long_term / user_short_term")
    out_dir = a.out or os.path.join(a.data, "baselines")
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for name, lines in baselines(truths, a.seed).items():
        write_jsonl(os.path.join(out_dir, f"{a.split}.{name}.jsonl"), lines)
        titles, _ = J.output_titles(lines, name)
        r = J.table_row("original title", name, J.score_titles(titles, truths))
        if "cluster" in lines[0]:
            r["clusters"] = len({ln["cluster"] for ln in lines})
            r["b"] = f"{name} ({r['clusters']} groups)"
        rows.append(r)
    if a.json:
        print(dumps({"truth": truth_path, "n": len(truths), "rows": rows}))
    else:
        print(J.format_table(rows, len(truths), truth_path))
        print(f"outputs: {out_dir}/{a.split}.<baseline>.jsonl")
    return 0


if __name__ == "__main__":
    run_main(main)
