"""Helpers shared by the tests of tools/synth (tests/synth/test_*.py)."""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SYNTH = os.path.join(ROOT, "tools", "synth")
sys.path.insert(0, SYNTH)

# A small world for fast tests (the defaults take about a second; these a fraction of it).
SMALL = ["--books-per-facet", "70", "--train-users", "40", "--train-ads", "12",
         "--valid-users", "10", "--valid-ads", "4", "--test-users", "30", "--test-ads", "6",
         "--test-ads-per-user", "3"]


def tool(name, *args, env=None, stdin=None):
    """Run tools/synth/NAME.py with args; returns the CompletedProcess (text)."""
    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run([sys.executable, os.path.join(SYNTH, name + ".py"), *args],
                          capture_output=True, text=True, env=e, input=stdin)


def ok(testcase, proc):
    """The tool succeeded (testcase may be a TestCase class, from setUpClass)."""
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(proc.args[1:])}: exit {proc.returncode}\n"
                             f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def fails(testcase, proc, *needles):
    """The tool failed with exit 1 and a one-line message (no traceback) containing needles."""
    testcase.assertEqual(proc.returncode, 1, f"expected exit 1, got {proc.returncode}\n"
                                             f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
    testcase.assertNotIn("Traceback", proc.stderr)
    testcase.assertTrue(proc.stderr.startswith("error: "), proc.stderr)
    for n in needles:
        testcase.assertIn(n, proc.stderr)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def generate(testcase, out, *extra, seed=0, env=None):
    return ok(testcase, tool("generate", "--out", out, "--seed", str(seed), *SMALL, *extra,
                             env=env))
