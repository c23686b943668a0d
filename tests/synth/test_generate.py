#!/usr/bin/env python3
"""tools/synth/world.py and generate.py: the world's rules, determinism, the training schema, the
splits, the truth and the next-item split.

    python3 tests/synth/test_generate.py      # or: python3 -m unittest discover tests/synth
"""

import filecmp
import hashlib
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synthtest import ROOT, fails, generate, ok, read_jsonl, tool  # noqa: E402
import world as W  # noqa: E402

SCHEMA = ["user_profile", "original_title", "original_description", "prompt1", "prompt2",
          "response", "title_list", "item_id_list"]
PROFILE_KEYS = ["Long-term Interest", "Short-term Interest", "Preference", "User Needs",
                "Delivery Suggestion", "User Profile Description"]
SPLITS = ("train", "valid", "test")


def all_files(d):
    out = []
    for dp, _, names in os.walk(d):
        out += [os.path.relpath(os.path.join(dp, n), d) for n in names]
    return sorted(out)


class TestWorld(unittest.TestCase):
    def test_rules_hold(self):
        self.assertEqual(W.check_world(), [])
        self.assertEqual(len(W.FACETS), 16)

    def test_rules_are_checked(self):
        # break the world on purpose: each kind of violation is reported
        f0, f1 = W.FACETS[0], W.FACETS[1]
        saved = (list(f0["nouns"]), list(f0["points"]))
        try:
            f0["nouns"].append(f1["nouns"][0])               # a word in two facets
            f0["points"].append("a sweeping " + f1["nouns"][1].lower())  # point uses a title word
            f0["points"].append("interstellar saga")         # contained in another point
            W.WORD_FACET.clear()
            W.WORD_FACET.update({w.lower(): f["id"] for f in W.FACETS
                                 for w in f["mods"] + f["nouns"]})
            W.ALL_POINTS[:] = [p for f in W.FACETS for p in f["points"]]
            errs = "\n".join(W.check_world())
            self.assertIn(f"is in {f0['id']} and {f1['id']}", errs)
            self.assertIn("uses the title word", errs)
            self.assertIn("is contained in point 'a sweeping interstellar saga'", errs)
        finally:
            f0["nouns"][:], f0["points"][:] = saved
            W.WORD_FACET.clear()
            W.WORD_FACET.update({w.lower(): f["id"] for f in W.FACETS
                                 for w in f["mods"] + f["nouns"]})
            W.ALL_POINTS[:] = [p for f in W.FACETS for p in f["points"]]
        self.assertEqual(W.check_world(), [])

    def test_facet_of_title(self):
        self.assertEqual(W.facet_of_title("The Stellar Armada"), "space_opera")
        self.assertEqual(W.facet_of_title("The Crumpet Alibi"), "cozy_mystery")
        self.assertIsNone(W.facet_of_title("The Stellar Alibi"))     # two facets
        self.assertIsNone(W.facet_of_title("The Book"))               # none

    def test_render_prompt2(self):
        t = "T: {title}\nD ({{x}}): {description}\n"
        self.assertEqual(W.render_prompt2(t, "A", None), "T: A\nD ({x}): None\n")
        self.assertEqual(W.render_prompt2(t, "x" * 800, "y" * 5000),
                         f"T: {'x' * 768}\nD ({{x}}): {'y' * 4096}\n")
        self.assertEqual(W.prompt2_errors(t), [])
        self.assertTrue(W.prompt2_errors("{title} {oops}"))

    def test_templates_follow_spec_structure(self):
        # MODEL_SPEC §5.1: prompt1 = 6 instruction lines, a blank line, a profile line, ending
        # with a newline; prompt2's lines all end with a newline
        p1 = W.TEMPLATES["prompt1"].split("\n")
        self.assertEqual(len(p1), 9)
        self.assertTrue(all(p1[:6]) and p1[6] == "" and p1[7] and p1[8] == "")
        self.assertTrue(W.TEMPLATES["prompt2"].endswith("\n"))
        self.assertEqual(W.prompt2_errors(W.TEMPLATES["prompt2"]), [])

    def test_templates_agree_with_the_package_tools(self):
        sys.path.insert(0, os.path.join(ROOT, "tools"))
        try:
            import hllm_package as hp
        except ImportError as ex:
            self.skipTest(f"tools/hllm_package.py needs torch: {ex}")
        self.assertEqual(hp.check_templates(W.TEMPLATES), [])
        for title, desc in (("The Stellar Armada", "Expect a {braced} word."), ("A", None)):
            self.assertEqual(W.render_prompt2(W.TEMPLATES["prompt2"], title, desc),
                             hp.render_prompt2(W.TEMPLATES["prompt2"], title, desc))


class TestGenerate(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.out = os.path.join(cls.tmp.name, "a")
        generate(cls, cls.out)
        cls.data = {}
        for s in SPLITS:
            for kind in ("", ".truth", ".requests", ".users"):
                cls.data[s + kind] = read_jsonl(os.path.join(cls.out, f"{s}{kind}.jsonl"))
        cls.catalog = read_jsonl(os.path.join(cls.out, "catalog.jsonl"))
        with open(os.path.join(cls.out, "manifest.json")) as f:
            cls.manifest = json.load(f)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_deterministic(self):
        # same seed (and a different hash seed) -> byte-identical files; another seed differs
        b = os.path.join(self.tmp.name, "b")
        generate(self, b, env={"PYTHONHASHSEED": "12345"})
        self.assertEqual(all_files(self.out), all_files(b))
        for rel in all_files(self.out):
            self.assertTrue(filecmp.cmp(os.path.join(self.out, rel), os.path.join(b, rel),
                                        shallow=False), rel)
        c = os.path.join(self.tmp.name, "c")
        generate(self, c, seed=1)
        self.assertFalse(filecmp.cmp(os.path.join(self.out, "test.jsonl"),
                                     os.path.join(c, "test.jsonl"), shallow=False))

    def test_manifest(self):
        m = self.manifest
        self.assertEqual(m["seed"], 0)
        for rel in all_files(self.out):
            if rel == "manifest.json":
                continue
            with open(os.path.join(self.out, rel), "rb") as f:
                self.assertEqual(m["files"][rel.replace(os.sep, "/")],
                                 hashlib.sha256(f.read()).hexdigest(), rel)
        for s in SPLITS:
            truths = self.data[s + ".truth"]
            self.assertEqual(m["counts"][s]["rows"], len(truths))
            matching = sum(1 for t in truths if t["right_points"])
            self.assertEqual(m["ceilings"][s]["oracle_good"], matching)
            self.assertAlmostEqual(m["ceilings"][s]["oracle_adv"], matching / len(truths))

    def test_sizes_follow_flags(self):
        self.assertEqual(len(self.data["train"]), 40 * 4)
        self.assertEqual(len(self.data["valid"]), 10 * 2)
        self.assertEqual(len(self.data["test"]), 30 * 3)
        self.assertEqual(len(self.catalog), 16 * 70)
        self.assertEqual(len(self.data["test.users"]), 30)

    def test_schema(self):
        for s in SPLITS:
            for r in self.data[s]:
                self.assertEqual(list(r), SCHEMA)
                for k in SCHEMA[:6]:
                    self.assertIsInstance(r[k], str)
                self.assertTrue(all(isinstance(t, str) for t in r["title_list"]))
                self.assertTrue(all(isinstance(i, int) for i in r["item_id_list"]))
                self.assertEqual(len(r["title_list"]), len(r["item_id_list"]))
                self.assertLessEqual(len(r["title_list"]), 50)
                self.assertEqual(r["prompt1"], W.TEMPLATES["prompt1"])
                self.assertEqual(r["prompt2"], W.TEMPLATES["prompt2"].replace(
                    "{title}", r["original_title"]).replace("{description}",
                                                            r["original_description"]))
                p = json.loads(r["user_profile"])
                self.assertEqual(list(p), PROFILE_KEYS)
                self.assertEqual(json.dumps(p, indent=4, ensure_ascii=False), r["user_profile"])
                self.assertTrue(r["original_title"].isascii() and r["response"].isascii())

    def test_titles_and_history(self):
        by_id = {b["item_id"]: b for b in self.catalog}
        self.assertEqual(sorted(by_id), list(range(1, len(self.catalog) + 1)))
        self.assertEqual(len({b["title"] for b in self.catalog}), len(self.catalog))
        for b in self.catalog:
            self.assertEqual(W.facet_of_title(b["title"]), b["facet"], b["title"])
            for f in W.FACETS:
                self.assertNotIn(f["name"], b["title"].lower())
        ads = {b["item_id"] for b in self.catalog if b["ad"]}
        lengths = set()
        for u in self.data["train.users"] + self.data["test.users"]:
            self.assertEqual(len(set(u["item_id_list"])), len(u["item_id_list"]))  # no repeats
            self.assertFalse(ads & set(u["item_id_list"]))                         # no ads
            self.assertEqual(u["history"], [by_id[i]["title"] for i in u["item_id_list"]])
            lengths.add(u["full_history_length"])
            # the history follows the user's facets: most books are from them
            if len(u["history"]) >= 20:
                mine = set(u["long_term"]) | {u["short_term"]}
                share = sum(by_id[i]["facet"] in mine for i in u["item_id_list"]) / len(
                    u["history"])
                self.assertGreater(share, 0.6, u["user_id"])
        self.assertEqual(min(lengths), 0)
        self.assertGreater(max(lengths), 50)

    def test_ads(self):
        by_id = {b["item_id"]: b for b in self.catalog}
        for s in SPLITS:
            for t, r in zip(self.data[s + ".truth"], self.data[s]):
                ad = by_id[t["ad_id"]]
                self.assertEqual(ad["ad"], s)
                self.assertEqual(ad["title"], r["original_title"])
                self.assertEqual(ad["description"], r["original_description"])
                self.assertIn(len(t["ad_points"]), (3, 4))
                self.assertEqual(len(set(t["ad_point_facets"])), len(t["ad_points"]))
                self.assertIn(ad["facet"], t["ad_point_facets"])
                pos = 0
                for p, f in zip(t["ad_points"], t["ad_point_facets"]):
                    self.assertEqual(W.POINT_FACET[p], f)
                    at = r["original_description"].lower().find(p, pos)  # in order
                    self.assertGreaterEqual(at, 0, p)
                    pos = at + len(p)

    def test_splits_unseen_users_and_ads(self):
        users = {s: {t["user_id"] for t in self.data[s + ".truth"]} for s in SPLITS}
        ads = {s: {t["ad_id"] for t in self.data[s + ".truth"]} for s in SPLITS}
        for a in SPLITS:
            for b in SPLITS:
                if a < b:
                    self.assertFalse(users[a] & users[b], (a, b))
                    self.assertFalse(ads[a] & ads[b], (a, b))
        # every test ad is shown to several users (so cluster mode means something)
        per_ad = {}
        for t in self.data["test.truth"]:
            per_ad[t["ad_id"]] = per_ad.get(t["ad_id"], 0) + 1
        self.assertEqual(sorted(per_ad.values()), [15] * 6)

    def test_truth_and_targets(self):
        users = {u["user_id"]: u for s in SPLITS for u in self.data[s + ".users"]}
        by_id = {b["item_id"]: b for b in self.catalog}
        n_match = n_none = 0
        for s in SPLITS:
            for k, (t, r) in enumerate(zip(self.data[s + ".truth"], self.data[s])):
                self.assertEqual(t["row"], k)
                self.assertEqual(t["target"], r["response"])
                u = users[t["user_id"]]
                # interests = the user's facets that the visible history shows, short-term first
                seen = {by_id[i]["facet"] for i in r["item_id_list"]}
                expect = ([u["short_term"]] if u["short_term"] in seen else []) + \
                         [f for f in u["long_term"] if f in seen]
                self.assertEqual(t["interest_facets"], expect)
                right = [p for p, f in zip(t["ad_points"], t["ad_point_facets"]) if f in expect]
                self.assertEqual(t["right_points"], right)
                if right:
                    n_match += 1
                    best = min(right, key=lambda p: expect.index(W.POINT_FACET[p]))
                    self.assertEqual(t["target_point"], best)
                    self.assertEqual(r["response"], r["original_title"] + ": " + best)
                else:
                    n_none += 1
                    self.assertIsNone(t["target_point"])
                    self.assertEqual(r["response"], r["original_title"])    # never forced
        self.assertGreater(n_match, 0)
        self.assertGreater(n_none, 0)

    def test_requests_align(self):
        for s in SPLITS:
            for q, r in zip(self.data[s + ".requests"], self.data[s]):
                self.assertEqual(q, {"history": r["title_list"], "ad": {
                    "title": r["original_title"], "description": r["original_description"]}})
            p = tool("make_requests", os.path.join(self.out, f"{s}.jsonl"))
            ok(self, p)
            with open(os.path.join(self.out, f"{s}.requests.jsonl"), encoding="utf-8") as f:
                self.assertEqual(p.stdout, f.read())

    def test_nextitem_split(self):
        nd = os.path.join(self.out, "nextitem")
        train, valid, test = (read_jsonl(os.path.join(nd, f"{s}.jsonl")) for s in SPLITS)
        items = {r["item_id"] for r in read_jsonl(os.path.join(nd, "items.jsonl"))}
        self.assertEqual(len(items), sum(1 for b in self.catalog if not b["ad"]))
        self.assertEqual([r["user_id"] for r in train], [r["user_id"] for r in test])
        users = {u["user_id"]: u for s in SPLITS for u in self.data[s + ".users"]}
        self.assertEqual(len(test), sum(1 for u in users.values()
                                        if u["full_history_length"] >= 5))
        for tr, va, te in zip(train, valid, test):
            self.assertEqual(va["history"], tr["item_ids"])
            self.assertEqual(te["history"], tr["item_ids"] + [va["target"]])
            self.assertNotIn(te["target"], te["history"])
            u = users[tr["user_id"]]
            full = te["history"] + [te["target"]]
            self.assertEqual(len(full), u["full_history_length"])
            self.assertEqual(full[-50:], u["item_id_list"])
            self.assertTrue(set(full) <= items)

    def test_templates_file_and_override(self):
        with open(os.path.join(self.out, "templates.json")) as f:
            self.assertEqual(json.load(f), W.TEMPLATES)
        tp = os.path.join(self.tmp.name, "t.json")
        with open(tp, "w") as f:
            json.dump({"prompt2": "Title {title} / {description} ->"}, f)
        d = os.path.join(self.tmp.name, "tpl")
        generate(self, d, "--templates", tp)
        r = read_jsonl(os.path.join(d, "test.jsonl"))[0]
        self.assertEqual(r["prompt2"], f"Title {r['original_title']} / "
                                       f"{r['original_description']} ->")
        with open(tp, "w") as f:
            json.dump({"prompt2": "no fields"}, f)
        fails(self, tool("generate", "--out", d + "2", "--templates", tp), "has no {title}")
        with open(tp, "w") as f:
            json.dump({"promt1": "x"}, f)
        fails(self, tool("generate", "--out", d + "2", "--templates", tp), "unknown template")

    def test_cli_errors(self):
        fails(self, tool("generate", "--out", self.out), "not empty", "--overwrite")
        p = tool("generate", "--out", os.path.join(self.tmp.name, "e"), "--test-ads", "2",
                 "--test-ads-per-user", "3")
        self.assertEqual(p.returncode, 2)
        self.assertIn("--test-ads-per-user 3 > --test-ads 2", p.stderr)
        p = tool("generate", "--out", os.path.join(self.tmp.name, "e"), "--noise", "2")
        self.assertEqual(p.returncode, 2)
        fails(self, tool("generate", "--out", os.path.join(self.tmp.name, "e"),
                         "--books-per-facet", "30"), "--max-history")
        self.assertIn("usage", tool("generate", "--help").stdout)


class TestHistoryFlags(unittest.TestCase):
    """Each documented history flag changes the data the way its help text says."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def gen(self, name, *flags):
        d = os.path.join(self.tmp.name, name)
        generate(self, d, "--train-users", "120", *flags)
        users = [u for s in SPLITS for u in read_jsonl(os.path.join(d, f"{s}.users.jsonl"))]
        cat = {b["item_id"]: b for b in read_jsonl(os.path.join(d, "catalog.jsonl"))}
        return d, users, cat

    def test_empty_history(self):
        _, none, _ = self.gen("e0", "--empty-history", "0")
        self.assertTrue(all(u["full_history_length"] > 0 for u in none))
        _, half, _ = self.gen("e5", "--empty-history", "0.5")
        share = sum(u["full_history_length"] == 0 for u in half) / len(half)
        self.assertTrue(0.35 < share < 0.65, share)

    def test_short_share(self):
        # no noise: with --short-share 1 the last 5 books are all the short-term facet; with 0
        # none of them is (the short-term facet is never a long-term one)
        for share, want in (("1", 1.0), ("0", 0.0)):
            _, users, cat = self.gen("s" + share, "--noise", "0", "--short-share", share,
                                     "--min-history", "12")
            last = [cat[i]["facet"] == u["short_term"] for u in users if u["item_id_list"]
                    for i in u["item_id_list"][-5:]]
            self.assertEqual(sum(last) / len(last), want, share)

    def test_zipf(self):
        # a steeper popularity curve concentrates histories on fewer distinct books
        _, flat, _ = self.gen("z0", "--zipf", "0")
        _, steep, _ = self.gen("z3", "--zipf", "3")
        distinct = lambda us: len({i for u in us for i in u["item_id_list"]})
        self.assertLess(distinct(steep), 0.8 * distinct(flat))

    def test_train_ads_per_user(self):
        d, _, _ = self.gen("a2", "--train-ads-per-user", "2")
        users = read_jsonl(os.path.join(d, "train.users.jsonl"))
        self.assertEqual(len(read_jsonl(os.path.join(d, "train.jsonl"))), 2 * len(users))

    def test_nextitem_min(self):
        d, users, _ = self.gen("n8", "--nextitem-min", "8")
        test = read_jsonl(os.path.join(d, "nextitem", "test.jsonl"))
        self.assertEqual(len(test), sum(1 for u in users if u["full_history_length"] >= 8))
        self.assertTrue(all(len(r["history"]) + 1 >= 8 for r in test))
        p = tool("generate", "--out", os.path.join(self.tmp.name, "n2"), "--nextitem-min", "2")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--nextitem-min", p.stderr)


if __name__ == "__main__":
    unittest.main()
