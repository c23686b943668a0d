#!/usr/bin/env python3
"""Turn rows of the reference's training schema into `hllm generate --model PKG` request lines.

    python3 tools/synth/make_requests.py ROWS.jsonl [-o REQUESTS.jsonl]

Each row (user_profile, original_title, original_description, prompt1, prompt2, response,
title_list, item_id_list; MODEL_SPEC §9) becomes {"history": title_list, "ad": {"title":
original_title, "description": original_description}}, in order, so that `hllm generate`'s output
lines align with the rows (and with the synthetic benchmark's *.truth.jsonl). A parquet file
(real data) goes through tools/synth/parquet_convert.py first. generate.py already writes
{train,valid,test}.requests.jsonl this way.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from synthio import UserError, dumps, read_jsonl, run_main  # noqa: E402


def request_of(row, where):
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object (a training-schema row)")
    if "title_list" not in row:
        raise UserError(f"{where}: no title_list (is this a training-schema row?)")
    tl = row["title_list"]
    if tl is None:      # a null list in parquet: no history
        tl = []
    if not isinstance(tl, list) or not all(isinstance(t, str) for t in tl):
        raise UserError(f"{where}: title_list must be a list of strings")
    title = row.get("original_title")
    if not isinstance(title, str):
        raise UserError(f"{where}: original_title must be a string")
    desc = row.get("original_description")
    if desc is not None and not isinstance(desc, str):
        raise UserError(f"{where}: original_description must be a string or null")
    return {"history": tl, "ad": {"title": title, "description": desc}}


def main(argv):
    ap = argparse.ArgumentParser(prog="make_requests.py", description="Training-schema rows "
                                 "(JSON lines) -> `hllm generate --model PKG` requests, in order.")
    ap.add_argument("rows", help="JSON-lines file of training-schema rows")
    ap.add_argument("-o", "--out", help="output file (default: stdout)")
    a = ap.parse_args(argv)
    rows = read_jsonl(a.rows, "training-schema rows")
    reqs = [request_of(r, f"{a.rows}:{k}") for k, r in enumerate(rows, 1)]
    f = open(a.out, "w", encoding="utf-8", newline="\n") if a.out else sys.stdout
    try:
        for r in reqs:
            f.write(dumps(r) + "\n")
    finally:
        if a.out:
            f.close()
    return 0


if __name__ == "__main__":
    run_main(main)
