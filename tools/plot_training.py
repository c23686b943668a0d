#!/usr/bin/env python3
"""plot_training.py: loss curves from a hllm-train metrics file (JSON lines, docs/TRAINING.md
"Progress and metrics") to a PNG.

Plots every "loss" and "loss_<term>" key against "step" (top panel) and the learning rate
(bottom panel). Lines that are not JSON objects with an integer "step" are skipped with a
warning naming the line; null values (non-finite losses) leave gaps.
Usage: python3 tools/plot_training.py METRICS.jsonl OUT.png [--title TEXT]
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except ValueError as e:
                print("%s:%d: skipped (not JSON: %s)" % (path, n, e), file=sys.stderr)
                continue
            if not isinstance(r, dict) or not isinstance(r.get("step"), int):
                print("%s:%d: skipped (no integer \"step\")" % (path, n), file=sys.stderr)
                continue
            rows.append(r)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("metrics")
    ap.add_argument("out")
    ap.add_argument("--title", default=None)
    a = ap.parse_args()
    rows = read_metrics(a.metrics)
    if not rows:
        sys.exit("plot_training.py: %s has no metrics rows" % a.metrics)
    keys = sorted({k for r in rows for k in r if k == "loss" or k.startswith("loss_")})
    fig, (ax, axl) = plt.subplots(2, 1, figsize=(8, 6), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    steps = [r["step"] for r in rows]
    for k in keys:
        ys = [r.get(k) if isinstance(r.get(k), (int, float)) else float("nan") for r in rows]
        ax.plot(steps, ys, label=k, linewidth=2 if k == "loss" else 1)
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title(a.title or a.metrics)
    lrs = [r.get("lr") if isinstance(r.get("lr"), (int, float)) else float("nan") for r in rows]
    axl.plot(steps, lrs, color="gray")
    axl.set_ylabel("lr")
    axl.set_xlabel("step")
    axl.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(a.out, dpi=100)
    print("wrote %s (%d steps, %d curves)" % (a.out, len(rows), len(keys)))


if __name__ == "__main__":
    main()
