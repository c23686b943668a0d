#!/usr/bin/env python3
"""tools/synth/parquet_convert.py (the schema round-trips through parquet), make_requests.py and
nextitem_eval.py (Recall/NDCG by hand, the popularity baseline).

    python3 tests/synth/test_parquet_nextitem.py      # or: python3 -m unittest discover tests/synth
"""

import filecmp
import json
import math
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synthtest import fails, generate, ok, read_jsonl, tool, write_jsonl  # noqa: E402
import nextitem_eval as NE  # noqa: E402

try:
    import pyarrow.parquet as pq
except ImportError:  # tools/requirements.txt installs it; without it only the message is tested
    pq = None


class TestParquet(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.data = os.path.join(cls.tmp.name, "d")
        generate(cls, cls.data)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def p(self, name):
        return os.path.join(self.tmp.name, name)

    def test_without_pyarrow_the_message_is_clear(self):
        # a pyarrow that cannot be imported shadows the installed one
        fake = self.p("nopyarrow")
        os.makedirs(os.path.join(fake, "pyarrow"), exist_ok=True)
        with open(os.path.join(fake, "pyarrow", "__init__.py"), "w") as f:
            f.write("raise ImportError('no pyarrow here')\n")
        fails(self, tool("parquet_convert", os.path.join(self.data, "test.jsonl"),
                         self.p("x.parquet"), env={"PYTHONPATH": fake}), "needs pyarrow")

    def test_round_trip_is_byte_identical(self):
        if pq is None:
            self.skipTest("pyarrow not installed")
        for split in ("train", "test"):
            src = os.path.join(self.data, f"{split}.jsonl")
            ok(self, tool("parquet_convert", src, self.p(f"{split}.parquet"),
                          "--require-schema", "--row-group-size", "64"))
            ok(self, tool("parquet_convert", self.p(f"{split}.parquet"), self.p(f"{split}.jsonl")))
            self.assertTrue(filecmp.cmp(src, self.p(f"{split}.jsonl"), shallow=False), split)
        schema = pq.read_schema(self.p("test.parquet"))
        self.assertEqual(schema.names, ["user_profile", "original_title", "original_description",
                                        "prompt1", "prompt2", "response", "title_list",
                                        "item_id_list"])
        self.assertEqual(str(schema.field("title_list").type), "list<element: string>")
        self.assertEqual(str(schema.field("item_id_list").type), "list<element: int64>")
        self.assertEqual(pq.read_metadata(self.p("test.parquet")).num_rows,
                         len(read_jsonl(os.path.join(self.data, "test.jsonl"))))
        # a parquet row turns into the same hllm request as the JSON row
        ok(self, tool("make_requests", self.p("test.jsonl"), "-o", self.p("req.jsonl")))
        self.assertTrue(filecmp.cmp(self.p("req.jsonl"), os.path.join(self.data,
                                                                     "test.requests.jsonl"),
                                    shallow=False))

    def test_real_data_shapes(self):
        if pq is None:
            self.skipTest("pyarrow not installed")
        rows = [{"uid": "A1", "user_profile": "{}", "original_title": "Dune",
                 "original_description": None, "prompt1": "p1\n", "prompt2": "t\nNone\n",
                 "response": "Dune: spice", "title_list": ["A", "B"], "item_id_list": ["x1", 7]},
                {"uid": "A2", "user_profile": "{}", "original_title": "Emma",
                 "original_description": "d", "prompt1": "p1\n", "prompt2": "t\nd\n",
                 "response": "Emma", "title_list": [], "item_id_list": [], "at_list": [1, 2]}]
        src = self.p("real.jsonl")
        write_jsonl(src, rows)
        os.makedirs(self.p("shards"), exist_ok=True)
        ok(self, tool("parquet_convert", src, self.p("shards/p1.parquet")))
        ok(self, tool("parquet_convert", src, self.p("shards/p0.parquet")))
        ok(self, tool("parquet_convert", self.p("shards"), self.p("back.jsonl")))
        back = read_jsonl(self.p("back.jsonl"))
        self.assertEqual(len(back), 4)
        self.assertEqual(back[0]["item_id_list"], ["x1", "7"])   # mixed ids are kept as strings
        self.assertIsNone(back[0]["original_description"])
        self.assertIsNone(back[0]["at_list"])
        self.assertEqual(back[1]["at_list"], [1, 2])
        req = tool("make_requests", self.p("back.jsonl"))
        ok(self, req)
        self.assertEqual(json.loads(req.stdout.splitlines()[0]),
                         {"history": ["A", "B"], "ad": {"title": "Dune", "description": None}})

    def test_errors(self):
        fails(self, tool("parquet_convert", self.p("none.parquet"), self.p("o.jsonl")),
              "no such file")
        self.assertFalse(os.path.exists(self.p("o.jsonl")))
        self.assertEqual(tool("parquet_convert", "a.txt", "b.jsonl").returncode, 2)
        bad = self.p("bad.jsonl")
        with open(bad, "w") as f:
            f.write('{"original_title": "x"}\n[1, 2\n')
        fails(self, tool("parquet_convert", bad, self.p("bad.parquet")), "bad.jsonl:2:")
        write_jsonl(bad, [{"original_title": 3}])
        fails(self, tool("parquet_convert", bad, self.p("bad.parquet")), "original_title")
        write_jsonl(bad, [{"original_title": "x"}])
        fails(self, tool("parquet_convert", bad, self.p("bad.parquet"), "--require-schema"),
              "lacks the reference's columns")
        fails(self, tool("make_requests", bad), "bad.jsonl:1:", "title_list")
        notpq = self.p("not.parquet")
        with open(notpq, "w") as f:
            f.write("hello")
        if pq is not None:
            fails(self, tool("parquet_convert", notpq, self.p("o2.jsonl")), "not a readable")


class TestNextItem(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def test_rank_and_metrics_by_hand(self):
        # history items and repeats are skipped before ranking
        self.assertEqual(NE.target_rank([5, 1, 5, 2, 9], history=[1], target=9), 3)
        self.assertEqual(NE.target_rank([5, 9], history=[9], target=9), None)
        self.assertIsNone(NE.target_rank([1, 2], history=[], target=3))
        m = NE.metrics([1, 3, None, 12], [10, 50])
        self.assertAlmostEqual(m["R@10"], 2 / 4)
        self.assertAlmostEqual(m["N@10"], (1 + 1 / math.log2(4)) / 4)
        self.assertAlmostEqual(m["R@50"], 3 / 4)
        self.assertAlmostEqual(m["N@50"], (1 + 0.5 + 1 / math.log2(13)) / 4)

    def test_score_cli(self):
        split = os.path.join(self.tmp.name, "test.jsonl")
        write_jsonl(split, [{"user_id": "a", "history": [1, 2], "target": 3},
                            {"user_id": "b", "history": [3], "target": 1}])
        ranked = os.path.join(self.tmp.name, "r.jsonl")
        write_jsonl(ranked, [{"user_id": "b", "ranked": [3, 2, 1]},       # rank 2 after skip
                             {"user_id": "a", "ranked": [1, 3, 4]}])      # rank 1 after skip
        p = ok(self, tool("nextitem_eval", "score", "--split", split, "--ranked", ranked,
                          "--k", "1,2", "--json"))
        m = json.loads(p.stdout)["metrics"]
        self.assertAlmostEqual(m["R@1"], 0.5)
        self.assertAlmostEqual(m["R@2"], 1.0)
        self.assertAlmostEqual(m["N@2"], (1 + 1 / math.log2(3)) / 2)
        write_jsonl(ranked, [{"user_id": "a", "ranked": [1]}])
        fails(self, tool("nextitem_eval", "score", "--split", split, "--ranked", ranked),
              "no ranking for 1 of the 2 users")
        fails(self, tool("nextitem_eval", "score", "--split", split, "--ranked", ranked,
                         "--k", "ten"), "--k")
        self.assertEqual(tool("nextitem_eval").returncode, 2)

    def test_popularity_baseline(self):
        d = os.path.join(self.tmp.name, "d")
        os.makedirs(os.path.join(d, "nextitem"))
        write_jsonl(os.path.join(d, "nextitem", "items.jsonl"),
                    [{"item_id": i, "title": f"t{i}"} for i in (1, 2, 3, 4)])
        write_jsonl(os.path.join(d, "nextitem", "test.jsonl"),
                    [{"user_id": "a", "history": [2, 3], "target": 4},
                     {"user_id": "b", "history": [2], "target": 3},
                     {"user_id": "c", "history": [4, 2], "target": 1}])
        out = os.path.join(self.tmp.name, "pop.jsonl")
        p = ok(self, tool("nextitem_eval", "popularity", "--data", d, "--out", out, "--k", "1,2",
                          "--top", "3", "--json"))
        # counts: 2 -> 3, 3 -> 1, 4 -> 1, 1 -> 0; ties by id
        self.assertEqual([r["ranked"] for r in read_jsonl(out)], [[4, 1], [3, 4, 1], [3, 1]])
        m = json.loads(p.stdout)["metrics"]
        self.assertAlmostEqual(m["R@1"], 2 / 3)
        self.assertAlmostEqual(m["R@2"], 1.0)

    def test_on_generated_data(self):
        d = os.path.join(self.tmp.name, "g")
        generate(self, d)
        out = os.path.join(self.tmp.name, "pop.jsonl")
        pop = json.loads(ok(self, tool("nextitem_eval", "popularity", "--data", d, "--out", out,
                                       "--json")).stdout)["metrics"]
        again = json.loads(ok(self, tool("nextitem_eval", "score", "--split",
                                         os.path.join(d, "nextitem", "test.jsonl"), "--ranked",
                                         out, "--json")).stdout)["metrics"]
        self.assertEqual(pop, again)
        fout = os.path.join(self.tmp.name, "fac.jsonl")
        fac = json.loads(ok(self, tool("nextitem_eval", "popularity", "--data", d, "--by-facet",
                                       "--out", fout, "--top", "300", "--json")).stdout)["metrics"]
        # the merged facet ranking equals sorting every item by (-share x (count + 1), id)
        users = read_jsonl(os.path.join(d, "nextitem", "test.jsonl"))
        items = [r["item_id"] for r in read_jsonl(os.path.join(d, "nextitem", "items.jsonl"))]
        facet = {r["item_id"]: r["facet"] for r in read_jsonl(os.path.join(d, "catalog.jsonl"))}
        count = {i: 0 for i in items}
        for u in users:
            for x in u["history"]:
                count[x] += 1
        for u, r in zip(users, read_jsonl(fout)):
            share = {}
            for x in u["history"]:
                share[facet[x]] = share.get(facet[x], 0) + 1
            want = sorted((i for i in items if i not in set(u["history"])),
                          key=lambda i: (-share.get(facet[i], 0) * (count[i] + 1), i))[:300]
            self.assertEqual(r["ranked"], want, u["user_id"])
        # knowing the facets helps: the world is learnable from titles
        self.assertGreater(fac["R@50"], pop["R@50"])
        self.assertLessEqual(pop["R@10"], pop["R@50"])


if __name__ == "__main__":
    unittest.main()
