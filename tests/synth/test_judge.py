#!/usr/bin/env python3
"""tools/synth/judge.py and baselines.py: one hand-written case per rule, the table, the CLI on
`hllm generate`-shaped output, and the baselines' ceilings on generated data.

    python3 tests/synth/test_judge.py      # or: python3 -m unittest discover tests/synth
"""

import json
import os
import re
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synthtest import ROOT, fails, generate, ok, read_jsonl, tool, write_jsonl  # noqa: E402
import judge as J  # noqa: E402

TITLE = "The Stellar Armada"
SAGA = "a sweeping interstellar saga"        # space opera: matches the user below
DREAD = "dread in every shadow"              # horror: in the ad, does not match
RECIPES = "recipes that rise every time"     # baking: in the ad, matches too
GORE = "crime without the gore"              # cozy mystery: a real point, not in this ad

ONE_RIGHT = {"original_title": TITLE, "ad_points": [DREAD, SAGA, RECIPES],
             "right_points": [SAGA], "target": f"{TITLE}: {SAGA}"}
TWO_RIGHT = dict(ONE_RIGHT, right_points=[SAGA, RECIPES])
NONE_RIGHT = dict(ONE_RIGHT, right_points=[], target=TITLE)


def verdict(title, truth):
    reason, _ = J.judge_title(title, truth)
    return J.REASONS[reason][0], reason


class TestRules(unittest.TestCase):
    def check(self, title, truth, want_verdict, want_reason):
        v, r = verdict(title, truth)
        self.assertEqual((v, r), (want_verdict, want_reason), title)

    def test_title_kept_and_right_point(self):
        self.check(f"{TITLE}: {SAGA}", ONE_RIGHT, "good", "right point")
        # case, punctuation and spacing do not matter; the point may come first; fillers are fine
        self.check("  the STELLAR armada -- A Sweeping Interstellar Saga!", ONE_RIGHT, "good",
                   "right point")
        self.check(f"{SAGA.capitalize()}: {TITLE}", ONE_RIGHT, "good", "right point")
        self.check(f"{TITLE}, with {SAGA}", ONE_RIGHT, "good", "right point")
        self.check(f"{TITLE}: {SAGA} and {RECIPES}", TWO_RIGHT, "good", "right point")

    def test_title_unchanged(self):
        self.check(TITLE, ONE_RIGHT, "same", "unchanged")
        self.check(TITLE.upper() + ".", ONE_RIGHT, "same", "unchanged")
        self.check(TITLE, NONE_RIGHT, "same", "unchanged")

    def test_title_dropped_or_garbled(self):
        for t in (SAGA, "The Armada Stellar: " + SAGA,        # dropped, reordered words
                  "Stellar Armada: " + SAGA,                    # a word lost
                  "The Stellar Great Armada: " + SAGA,          # a word inserted inside
                  "The Stelar Armada: " + SAGA):                # misspelt
            self.check(t, ONE_RIGHT, "bad", "title dropped or garbled")
        self.check("", ONE_RIGHT, "bad", "no title")
        self.check("   ", ONE_RIGHT, "bad", "no title")
        self.check(None, ONE_RIGHT, "bad", "no title")

    def test_hallucinations(self):
        # a real selling point that this ad does not have
        self.check(f"{TITLE}: {GORE}", ONE_RIGHT, "bad", "point not in the ad")
        self.check(f"{TITLE}: {GORE}", NONE_RIGHT, "bad", "point not in the ad")
        # words that are no selling point at all (also a garbled point, or the title twice)
        for t in (f"{TITLE}: a thrilling read", f"{TITLE}: a sweeping interstellar sag",
                  f"{TITLE}: {SAGA} for everyone", f"{TITLE}: {TITLE}"):
            self.check(t, ONE_RIGHT, "bad", "unsupported words")
        for t in (f"{TITLE}: {GORE}", f"{TITLE}: a thrilling read"):
            self.assertTrue(J.REASONS[verdict(t, ONE_RIGHT)[1]][1])
        self.assertFalse(J.REASONS[verdict(f"{TITLE}: {DREAD}", ONE_RIGHT)[1]][1])

    def test_wrong_point(self):
        self.check(f"{TITLE}: {DREAD}", ONE_RIGHT, "bad", "wrong point")
        self.check(f"{TITLE}: {SAGA} and {DREAD}", ONE_RIGHT, "bad", "wrong point")
        self.check(f"{TITLE}: {RECIPES}", ONE_RIGHT, "bad", "wrong point")

    def test_none_matching(self):
        # no point of the ad fits the user: adding one is no better and no worse (never forced)
        self.check(f"{TITLE}: {DREAD}", NONE_RIGHT, "same", "ad point, none matches")
        self.check(f"{TITLE}: {SAGA}", NONE_RIGHT, "same", "ad point, none matches")

    def test_points_of_a_truth_outside_the_world(self):
        truth = {"original_title": "Night Flight", "ad_points": ["a pilot crosses the Andes"],
                 "right_points": ["a pilot crosses the Andes"],
                 "target": "Night Flight: a pilot crosses the Andes"}
        self.check("Night Flight - A pilot crosses the Andes", truth, "good", "right point")
        self.check("Night Flight: the Alps", truth, "bad", "unsupported words")

    def test_table_and_pairwise(self):
        truths = [ONE_RIGHT, ONE_RIGHT, NONE_RIGHT, ONE_RIGHT]
        b = J.score_titles([f"{TITLE}: {SAGA}", f"{TITLE}: {GORE}", TITLE, f"{TITLE}: {SAGA}"],
                           truths)
        r = J.table_row("original title", "b", b)
        self.assertEqual((r["good"], r["same"], r["bad"], r["hallucinated"], r["exact"]),
                         (2, 1, 1, 1, 3))
        self.assertAlmostEqual(r["adv"], (2 - 1) / 4)
        a = J.score_titles([TITLE, f"{TITLE}: {SAGA}", f"{TITLE}: {DREAD}", f"{TITLE}: {DREAD}"],
                           truths)
        # per row, B's score (+1 good / 0 same / -1 bad) against A's: win, loss, tie, win
        r = J.table_row("a", "b", b, a)
        self.assertEqual((r["good"], r["same"], r["bad"]), (2, 1, 1))
        table = J.format_table([r], 4, "x.truth.jsonl")
        self.assertIn("| a | b | 2 | 1 | 1 | 25.0% | 1 | 3 |", table)

    def test_cluster_oracle(self):
        # one ad, four users in one group: two want SAGA, one RECIPES, one nothing. The best
        # single title has the highest total score (SAGA: +2 -1 +0); the original wins ties
        t_saga = dict(ONE_RIGHT, ad_id=1)
        t_rec = dict(ONE_RIGHT, ad_id=1, right_points=[RECIPES], target=f"{TITLE}: {RECIPES}")
        t_none = dict(NONE_RIGHT, ad_id=1)
        truths = [t_saga, t_saga, t_rec, t_none]
        self.assertEqual(J.cluster_oracle(truths, ["g"] * 4), [f"{TITLE}: {SAGA}"] * 4)
        self.assertEqual(J.cluster_oracle(truths[1:3], ["g"] * 2), [TITLE] * 2)   # a tie
        self.assertEqual(J.cluster_oracle(truths, [0, 1, 2, 3]),
                         [f"{TITLE}: {SAGA}", f"{TITLE}: {SAGA}", f"{TITLE}: {RECIPES}", TITLE])


class TestCLI(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.truth = os.path.join(self.tmp.name, "t.truth.jsonl")
        write_jsonl(self.truth, [ONE_RIGHT, NONE_RIGHT, ONE_RIGHT])

    def tearDown(self):
        self.tmp.cleanup()

    def path(self, name, rows):
        p = os.path.join(self.tmp.name, name)
        write_jsonl(p, rows)
        return p

    def test_hllm_generate_output(self):
        out = self.path("out.jsonl", [
            {"title": f"{TITLE}: {SAGA}", "ids": [1, 2], "cluster": 0, "finish": "stop"},
            {"title": TITLE, "ids": [3], "cluster": 1, "finish": "stop"},
            {"error": "line 3: history[0] is not a string"}])
        p = ok(self, tool("judge", "--truth", self.truth, f"per-user={out}", "--json"))
        res = json.loads(p.stdout)
        r = res["rows"][0]
        self.assertEqual((r["a"], r["b"], r["good"], r["same"], r["bad"]),
                         ("original title", "per-user", 1, 1, 1))
        self.assertEqual(r["reasons"]["no title"], 1)
        self.assertEqual(len(res["cluster_ceilings"]), 1)
        p = ok(self, tool("judge", "--truth", self.truth, out, "--reasons"))
        self.assertIn("| original title | out | 1 | 1 | 1 | 0.0% | 0 | 2 |", p.stdout)
        self.assertIn("cluster ceiling", p.stdout)
        det = os.path.join(self.tmp.name, "details.jsonl")
        ok(self, tool("judge", "--truth", self.truth, out, "--details", det))
        self.assertEqual([d["verdict"] for d in read_jsonl(det)], ["good", "same", "bad"])

    def test_pairwise_cli(self):
        a = self.path("a.jsonl", [{"title": TITLE}] * 3)
        b = self.path("b.jsonl", [{"title": f"{TITLE}: {DREAD}"}] * 3)
        res = json.loads(ok(self, tool("judge", "--truth", self.truth, "--a", f"A={b}",
                                       f"B={a}", "--json")).stdout)
        r = res["rows"][0]
        self.assertEqual((r["a"], r["b"], r["good"], r["same"], r["bad"]), ("A", "B", 2, 1, 0))

    def test_errors(self):
        good = self.path("good.jsonl", [{"title": TITLE}] * 3)
        bad = os.path.join(self.tmp.name, "bad.jsonl")
        with open(bad, "w") as f:
            f.write('{"title": "x"}\n{"title": \n{"title": "y"}\n')
        fails(self, tool("judge", "--truth", self.truth, bad), "bad.jsonl:2: invalid JSON")
        short = self.path("short.jsonl", [{"title": TITLE}] * 2)
        fails(self, tool("judge", "--truth", self.truth, short), "2 lines", "has 3")
        notitle = self.path("nt.jsonl", [{"title": TITLE}, {"ids": [1]}, {"title": TITLE}])
        fails(self, tool("judge", "--truth", self.truth, notitle), "nt.jsonl:2:", "title")
        fails(self, tool("judge", "--truth", os.path.join(self.tmp.name, "none.jsonl"), good),
              "no such file")
        wrong = self.path("w.jsonl", [{"history": []}] * 3)
        fails(self, tool("judge", "--truth", wrong, good), "w.jsonl:1:", "lacks")
        self.assertEqual(tool("judge", "--truth", self.truth).returncode, 2)
        self.assertIn("usage", tool("judge", "--help").stdout)


class TestBaselines(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.data = os.path.join(cls.tmp.name, "d")
        generate(cls, cls.data)
        cls.truths = read_jsonl(os.path.join(cls.data, "test.truth.jsonl"))
        p = ok(cls, tool("baselines", "--data", cls.data, "--json"))
        cls.rows = {r["b"].split(" (")[0]: r for r in json.loads(p.stdout)["rows"]}
        with open(os.path.join(cls.data, "manifest.json")) as f:
            cls.manifest = json.load(f)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_original_is_zero(self):
        r = self.rows["original"]
        self.assertEqual((r["good"], r["bad"], r["same"], r["adv"]), (0, 0, len(self.truths), 0))

    def test_oracle_reaches_the_documented_ceiling(self):
        # the ceiling: every row whose ad has a point matching the user is Good, the rest Same
        matching = sum(1 for t in self.truths if t["right_points"])
        r = self.rows["oracle"]
        self.assertEqual((r["good"], r["same"], r["bad"]),
                         (matching, len(self.truths) - matching, 0))
        self.assertAlmostEqual(r["adv"], matching / len(self.truths))
        self.assertAlmostEqual(r["adv"], self.manifest["ceilings"]["test"]["oracle_adv"])
        self.assertEqual(r["exact"], len(self.truths))
        # and the generator's own response column judges the same (the trainer's targets)
        p = ok(self, tool("judge", "--truth", os.path.join(self.data, "test.truth.jsonl"),
                          os.path.join(self.data, "test.jsonl"), "--json"))
        self.assertAlmostEqual(json.loads(p.stdout)["rows"][0]["adv"], r["adv"])

    def test_point_baselines(self):
        none = sum(1 for t in self.truths if not t["right_points"])
        for name in ("random-point", "first-point"):
            r = self.rows[name]
            self.assertEqual(r["same"], none)      # no match: an ad point is neither
            self.assertEqual(r["hallucinated"], 0)
            self.assertLess(r["adv"], 0)           # a random point is worse than none
        first = self.rows["first-point"]
        good = sum(1 for t in self.truths if t["right_points"] and t["ad_points"][0] in
                   t["right_points"])
        self.assertEqual(first["good"], good)

    def test_cluster_oracles_between_zero_and_oracle(self):
        oracle = self.rows["oracle"]
        for g in ("primary", "long", "all"):
            r = self.rows[f"cluster-oracle-{g}"]
            self.assertGreaterEqual(r["adv"], 0)
            self.assertLessEqual(r["good"], oracle["good"])
            self.assertEqual(r["hallucinated"], 0)
        self.assertLessEqual(self.rows["cluster-oracle-primary"]["adv"],
                             self.rows["cluster-oracle-all"]["adv"])
        self.assertEqual(self.rows["cluster-oracle-primary"]["clusters"],
                         len({t["user_long_term"][0] for t in self.truths}))
        # judging the written file again gives the same row, and its cluster ceiling is itself
        f = os.path.join(self.data, "baselines", "test.cluster-oracle-long.jsonl")
        res = json.loads(ok(self, tool("judge", "--truth", self.data, f, "--json")).stdout)
        self.assertEqual(res["rows"][0]["adv"], self.rows["cluster-oracle-long"]["adv"])
        self.assertEqual(res["cluster_ceilings"][0]["adv"], res["rows"][0]["adv"])


class TestDocs(unittest.TestCase):
    """docs/SYNTH.md's tables are what their documented commands print now (default sizes)."""

    @classmethod
    def setUpClass(cls):
        with open(os.path.join(ROOT, "docs", "SYNTH.md"), encoding="utf-8") as f:
            cls.doc = f.read()
        cls.tmp = tempfile.TemporaryDirectory()
        cls.data = os.path.join(cls.tmp.name, "synth")
        ok(cls, tool("generate", "--out", cls.data))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def block(self, name):
        m = re.search(rf"<!-- {name} begin -->\n(.*?)<!-- {name} end -->", self.doc, re.S)
        self.assertIsNotNone(m, f"docs/SYNTH.md has no {name} block")
        return [ln for ln in m.group(1).splitlines() if ln.startswith("|")]

    def test_baselines_table(self):
        p = ok(self, tool("baselines", "--data", self.data))
        table = [ln for ln in p.stdout.splitlines() if ln.startswith("|")]
        self.assertEqual(self.block("baselines-table"), table,
                         "rerun `python3 tools/synth/baselines.py --data /tmp/synth` and update "
                         "docs/SYNTH.md")

    def test_nextitem_table(self):
        rows = []
        for extra in ([], ["--by-facet"]):
            p = ok(self, tool("nextitem_eval", "popularity", "--data", self.data, *extra))
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("|")]
            rows += lines if not rows else lines[2:]
        self.assertEqual(self.block("nextitem-table"), rows,
                         "rerun the nextitem_eval.py popularity commands and update docs/SYNTH.md")


if __name__ == "__main__":
    unittest.main()
