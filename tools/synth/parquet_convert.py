#!/usr/bin/env python3
"""Convert between the reference's training parquet and JSON lines (needs pyarrow).

    python3 tools/synth/parquet_convert.py IN.parquet OUT.jsonl     # also: IN = a directory of
    python3 tools/synth/parquet_convert.py IN.jsonl OUT.parquet     #   p0.parquet, p1.parquet, ...

The direction comes from the file names (.parquet vs .jsonl / .json / .ndjson). The reference's
columns (MODEL_SPEC §9: user_profile, original_title, original_description, prompt1, prompt2,
response: strings; title_list: list of strings; item_id_list: list of int64, or of strings when
the ids are not all integers) get those types; other columns keep what pyarrow infers. Column
order is the order of the first row's keys; rows missing a key get null. JSON lines -> parquet ->
JSON lines gives back the same bytes for the files tools/synth/generate.py writes. With
--require-schema a file without all the reference's columns is an error.
"""

import argparse
import base64
import datetime
import decimal
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from synthio import UserError, read_jsonl, run_main  # noqa: E402

SCHEMA_COLUMNS = ("user_profile", "original_title", "original_description", "prompt1", "prompt2",
                  "response", "title_list", "item_id_list")
STRING_COLUMNS = SCHEMA_COLUMNS[:6]
JSONL_EXT = (".jsonl", ".json", ".ndjson")


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("parquet conversion needs pyarrow: pip install -r tools/requirements.txt "
                        "(or pip install pyarrow)") from None
    return pa, pq


def _json_default(x):
    if isinstance(x, (datetime.datetime, datetime.date, datetime.time)):
        return x.isoformat()
    if isinstance(x, datetime.timedelta):
        return x.total_seconds()
    if isinstance(x, decimal.Decimal):
        return float(x)
    if isinstance(x, (bytes, bytearray)):
        return base64.b64encode(bytes(x)).decode("ascii")
    raise TypeError(f"cannot write a {type(x).__name__} value as JSON")


def _natural(name):
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name)]


def parquet_files(path):
    if os.path.isdir(path):
        files = sorted((f for f in os.listdir(path) if f.endswith(".parquet")), key=_natural)
        if not files:
            raise UserError(f"{path}: no *.parquet files in this directory")
        return [os.path.join(path, f) for f in files]
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file")
    return [path]


def missing_schema(columns):
    return [c for c in SCHEMA_COLUMNS if c not in columns]


def to_jsonl(src, dst, require_schema=False):
    pa, pq = _pyarrow()
    n, cols, files = 0, None, parquet_files(src)
    with open(dst, "w", encoding="utf-8", newline="\n") as out:
        for path in files:
            try:
                tbl = pq.read_table(path)
            except (pa.ArrowInvalid, OSError) as ex:
                raise UserError(f"{path}: not a readable parquet file: {ex}") from None
            if cols is None:
                cols = tbl.column_names
                miss = missing_schema(cols)
                if miss and require_schema:
                    raise UserError(f"{path}: lacks the reference's columns {miss}")
            for row in tbl.to_pylist():
                try:
                    out.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
                except (TypeError, ValueError) as ex:
                    raise UserError(f"{path}: row {n}: {ex}") from None
                n += 1
    return n, cols or []


def _column_type(pa, name, values):
    if name in STRING_COLUMNS:
        return pa.string()
    if name == "title_list":
        return pa.list_(pa.string())
    if name == "item_id_list":
        ints = all(v is None or all(isinstance(x, int) and not isinstance(x, bool) for x in v)
                   for v in values)
        return pa.list_(pa.int64() if ints else pa.string())
    return None


def _check_column(name, values, src):
    for k, v in enumerate(values, 1):
        if v is None:
            continue
        if name in STRING_COLUMNS and not isinstance(v, str):
            raise UserError(f"{src}:{k}: {name} must be a string or null")
        if name in ("title_list", "item_id_list"):
            if not isinstance(v, list):
                raise UserError(f"{src}:{k}: {name} must be a list")
            if name == "title_list" and not all(isinstance(x, str) for x in v):
                raise UserError(f"{src}:{k}: title_list must hold strings")
            if name == "item_id_list" and not all(isinstance(x, (int, str)) and
                                                  not isinstance(x, bool) for x in v):
                raise UserError(f"{src}:{k}: item_id_list must hold integers or strings")


def to_parquet(src, dst, require_schema=False, row_group_size=None):
    pa, pq = _pyarrow()
    rows = read_jsonl(src, "JSON lines to convert")
    cols = []
    for k, r in enumerate(rows, 1):
        if not isinstance(r, dict):
            raise UserError(f"{src}:{k}: expected a JSON object")
        for c in r:
            if c not in cols:
                cols.append(c)
    miss = missing_schema(cols)
    if miss and require_schema:
        raise UserError(f"{src}: lacks the reference's columns {miss}")
    arrays = []
    for c in cols:
        values = [r.get(c) for r in rows]
        _check_column(c, values, src)
        t = _column_type(pa, c, values)
        if c == "item_id_list" and t == pa.list_(pa.string()):
            values = [None if v is None else [str(x) for x in v] for v in values]
        try:
            arrays.append(pa.array(values, type=t))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as ex:
            raise UserError(f"{src}: column {c!r} cannot be stored in parquet: {ex}") from None
    tbl = pa.Table.from_arrays(arrays, names=cols) if cols else pa.table({})
    pq.write_table(tbl, dst, row_group_size=row_group_size)
    return len(rows), cols


def main(argv):
    ap = argparse.ArgumentParser(prog="parquet_convert.py", description="Convert the reference's "
                                 "training parquet <-> JSON lines (direction from the names).")
    ap.add_argument("src", help="IN.parquet (or a directory of *.parquet shards) or IN.jsonl")
    ap.add_argument("dst", help="OUT.jsonl or OUT.parquet")
    ap.add_argument("--require-schema", action="store_true",
                    help="fail unless all the reference's columns are present")
    ap.add_argument("--row-group-size", type=int, help="rows per parquet row group")
    a = ap.parse_args(argv)
    src_pq = a.src.endswith(".parquet") or os.path.isdir(a.src)
    dst_pq = a.dst.endswith(".parquet")
    if src_pq and a.dst.endswith(JSONL_EXT):
        n, cols = to_jsonl(a.src, a.dst, a.require_schema)
    elif a.src.endswith(JSONL_EXT) and dst_pq:
        n, cols = to_parquet(a.src, a.dst, a.require_schema, a.row_group_size)
    else:
        ap.error("give IN.parquet (or a directory) and OUT.jsonl, or IN.jsonl and OUT.parquet "
                 f"(names end in .parquet or one of {', '.join(JSONL_EXT)})")
    miss = missing_schema(cols)
    note = f"; missing reference columns: {', '.join(miss)}" if miss else ""
    print(f"{a.dst}: {n} rows, {len(cols)} columns{note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
