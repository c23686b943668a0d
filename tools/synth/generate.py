#!/usr/bin/env python3
"""Generate the synthetic personalization benchmark (docs/SYNTH.md).

    python3 tools/synth/generate.py --out data/synth [--seed 0] [sizes...]

Writes, into --out (which must not exist or be empty, unless --overwrite):

  {train,valid,test}.jsonl           rows in the reference's training schema (MODEL_SPEC §5.1, §9)
  {train,valid,test}.truth.jsonl     the known answer of each row, line by line (trainers ignore it)
  {train,valid,test}.requests.jsonl  the rows as `hllm generate --model PKG` input lines
  {train,valid,test}.users.jsonl     one line per user (`hllm cluster --users` reads it as is)
  catalog.jsonl                      every book: id, title, facet; ads with description and points
  nextitem/{items,train,valid,test}.jsonl   leave-one-out next-item split (MODEL_SPEC §6.3)
  templates.json                     prompt1/prompt2/user_prompt/profile_prompt used (init_package)
  world.json                         the facets, lexicons and selling points
  manifest.json                      seed, sizes, counts, ceilings, sha256 of every file

The same seed and sizes give byte-identical files. Standard library only.
"""

import argparse
import bisect
import hashlib
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import world as W  # noqa: E402
from synthio import UserError, dumps, read_json, run_main, write_json, write_jsonl  # noqa: E402

SPLITS = ("train", "valid", "test")
MAX_HISTORY_KEPT = 50   # gen_user_open keeps the last 50 titles and ids (MODEL_SPEC §9.1)
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------
# catalog

def make_title(rng, facet):
    pat = rng.choice(W.TITLE_PATTERNS)
    n, n2 = rng.sample(facet["nouns"], 2)
    return pat.format(M=rng.choice(facet["mods"]), N=n, N2=n2)


def build_catalog(seed, books_per_facet, zipf):
    """Books of every facet with unique titles, globally shuffled ids (1..n: an id says nothing of
    the facet) and a Zipf popularity within the facet."""
    books = []
    for f in W.FACETS:
        rng = random.Random(f"{seed}/catalog/{f['id']}")
        titles, seen, tries = [], set(), 0
        while len(titles) < books_per_facet:
            tries += 1
            if tries > 200 * books_per_facet:
                raise UserError(f"--books-per-facet {books_per_facet}: the lexicon of {f['id']} "
                                f"cannot make that many distinct titles")
            t = make_title(rng, f)
            if t not in seen:
                seen.add(t)
                titles.append(t)
        for rank, t in enumerate(titles):   # titles come out in random order: rank = popularity
            books.append({"title": t, "facet": f["id"], "weight": 1.0 / (rank + 1) ** zipf})
    ids = list(range(1, len(books) + 1))
    random.Random(f"{seed}/catalog/ids").shuffle(ids)
    for b, i in zip(books, ids):
        b["item_id"] = i
    return books


def pick_ads(seed, books, counts):
    """Disjoint ad books per split, facets as balanced as the counts allow."""
    by_facet = {f: [b for b in books if b["facet"] == f] for f in W.FACET_IDS}
    rng = random.Random(f"{seed}/ads")
    for f in W.FACET_IDS:
        rng.shuffle(by_facet[f])
    ads = {}
    for split in SPLITS:
        order = list(W.FACET_IDS)
        rng.shuffle(order)
        chosen = []
        for j in range(counts[split]):
            pool = by_facet[order[j % len(order)]]
            if not pool:
                raise UserError("too many ads for the catalog: raise --books-per-facet")
            chosen.append(pool.pop())
        ads[split] = chosen
    return ads


def describe_ad(rng, ad):
    """3 or 4 selling points from different facets (the book's own among them), shuffled, each
    stated by one sentence of the description."""
    k = rng.choice((3, 4))
    others = [f for f in W.FACET_IDS if f != ad["facet"]]
    facets = [ad["facet"]] + rng.sample(others, k - 1)
    points = [rng.choice(W.FACET_BY_ID[f]["points"]) for f in facets]
    order = list(range(k))
    rng.shuffle(order)
    ad["points"] = [points[i] for i in order]
    ad["point_facets"] = [facets[i] for i in order]
    sentences = []
    for p in ad["points"]:
        frame = rng.choice(W.DESCRIPTION_FRAMES)
        sentences.append(frame.format(P=p[0].upper() + p[1:], p=p))
    ad["description"] = " ".join(sentences)


# ---------------------------------------------------------------------------
# users

class FacetSampler:
    """Popularity-weighted draws of history books (ads excluded) per facet."""

    def __init__(self, books):
        self.books, self.cum = {}, {}
        for f in W.FACET_IDS:
            bs = [b for b in books if b["facet"] == f and not b.get("ad")]
            acc, cum = 0.0, []
            for b in bs:
                acc += b["weight"]
                cum.append(acc)
            self.books[f], self.cum[f] = bs, cum

    def draw(self, rng, facet, used):
        bs, cum = self.books[facet], self.cum[facet]
        for _ in range(64):
            b = bs[min(bisect.bisect_left(cum, rng.random() * cum[-1]), len(bs) - 1)]
            if b["item_id"] not in used:
                return b
        for b in bs:                      # rare: the popular books are all read already
            if b["item_id"] not in used:
                return b
        raise UserError("a user read every book of a facet: raise --books-per-facet")


def make_user(rng, sampler, uid, split, a):
    n_long = 1 if rng.random() < 0.5 else 2
    fs = rng.sample(W.FACET_IDS, n_long + 1)
    long_term, short_term = fs[:n_long], fs[n_long]
    weights = [1.0] if n_long == 1 else [0.6, 0.4]
    others = [f for f in W.FACET_IDS if f not in fs]
    length = 0 if rng.random() < a.empty_history else rng.randint(a.min_history, a.max_history)
    window = min(length, rng.randint(5, 10))
    hist, used = [], set()
    for pos in range(length):
        r = rng.random()
        if r < a.noise:
            facet = rng.choice(others)
        elif pos >= length - window and rng.random() < a.short_share:
            facet = short_term
        else:
            facet = rng.choices(long_term, weights)[0]
        b = sampler.draw(rng, facet, used)
        used.add(b["item_id"])
        hist.append(b)
    visible = hist[-MAX_HISTORY_KEPT:]
    count = {}
    for b in visible:
        count[b["facet"]] = count.get(b["facet"], 0) + 1
    long_seen = [f for f in long_term if count.get(f)]
    short_seen = short_term if count.get(short_term) else None
    interest = ([short_seen] if short_seen else []) + long_seen
    return {"user_id": uid, "split": split, "long_term": long_term, "short_term": short_term,
            "long_seen": long_seen, "short_seen": short_seen, "interest_facets": interest,
            "history": [b["title"] for b in visible],
            "history_ids": [b["item_id"] for b in visible],
            "full_history_ids": [b["item_id"] for b in hist],
            "profile": profile(long_seen, short_seen, len(visible))}


def _names(fids):
    names = [W.FACET_BY_ID[f]["name"] for f in fids]
    return " and ".join(names)


def _tastes(fids):
    return " and ".join(W.FACET_BY_ID[f]["taste"] for f in fids)


def profile(long_seen, short_seen, n_read):
    """The user_profile string: the six keys of the reference's profiling script (MODEL_SPEC §9.1),
    stated only from what the visible history shows, as indent-4 JSON."""
    if not long_seen and not short_seen:
        p = {"Long-term Interest": "unknown", "Short-term Interest": "unknown",
             "Preference": "unknown",
             "User Needs": "Has not reviewed any book yet; needs broadly appealing titles.",
             "Delivery Suggestion": "Recommend popular books from many genres.",
             "User Profile Description": "A new reader with no reviewed books."}
    else:
        lt = _names(long_seen) if long_seen else "unknown"
        st = W.FACET_BY_ID[short_seen]["name"] if short_seen else "unknown"
        pref = f"Enjoys {_tastes(long_seen)}" if long_seen else "No settled taste yet"
        if short_seen:
            pref += f"; lately drawn to {W.FACET_BY_ID[short_seen]['taste']}"
        order = ([short_seen] if short_seen else []) + long_seen
        desc = f"A reader of {lt}" if long_seen else "A reader"
        if short_seen:
            desc += f" who is currently reading {st}"
        p = {"Long-term Interest": lt, "Short-term Interest": st, "Preference": pref + ".",
             "User Needs": f"Books about {_tastes(order)}.",
             "Delivery Suggestion": f"Recommend {_names(order[:1])} titles first"
                                    + (f", then {_names(order[1:])}." if order[1:] else "."),
             "User Profile Description": f"{desc}; has reviewed {n_read} books."}
    return json.dumps(p, indent=4, ensure_ascii=False)


# ---------------------------------------------------------------------------
# rows

def assign_ads(rng, users, ads, per_user):
    """Each user gets per_user distinct ads, the least used first (ties at random)."""
    used = {ad["item_id"]: 0 for ad in ads}
    pairs = []
    for u in users:
        ranked = sorted(ads, key=lambda ad: (used[ad["item_id"]], rng.random()))
        for ad in ranked[:per_user]:
            used[ad["item_id"]] += 1
            pairs.append((u, ad))
    return pairs


def make_row(u, ad, templates):
    interest = u["interest_facets"]
    right = [p for p, f in zip(ad["points"], ad["point_facets"]) if f in interest]
    best = None
    for f in interest:                 # priority: the short-term facet, then long-term by weight
        if f in ad["point_facets"]:
            best = ad["points"][ad["point_facets"].index(f)]
            break
    target = W.target_title(ad["title"], best)
    row = {"user_profile": u["profile"], "original_title": ad["title"],
           "original_description": ad["description"], "prompt1": templates["prompt1"],
           "prompt2": W.render_prompt2(templates["prompt2"], ad["title"], ad["description"]),
           "response": target, "title_list": u["history"], "item_id_list": u["history_ids"]}
    truth = {"user_id": u["user_id"], "ad_id": ad["item_id"], "original_title": ad["title"],
             "ad_facet": ad["facet"], "ad_points": ad["points"],
             "ad_point_facets": ad["point_facets"], "user_long_term": u["long_term"],
             "user_short_term": u["short_term"], "interest_facets": interest,
             "right_points": right, "target_point": best, "target": target}
    return row, truth


def load_templates(path):
    t = dict(W.TEMPLATES)
    if path:
        user = read_json(path, "templates")
        if not isinstance(user, dict):
            raise UserError(f"{path}: templates must be a JSON object")
        unknown = sorted(set(user) - set(W.TEMPLATES))
        if unknown:
            raise UserError(f"{path}: unknown template keys {unknown} "
                            f"(known: {sorted(W.TEMPLATES)})")
        for k, v in user.items():
            if not isinstance(v, str):
                raise UserError(f"{path}: template {k} must be a string")
        t.update(user)
    errs = W.prompt2_errors(t["prompt2"])
    if errs:
        raise UserError(f"{path or 'templates'}: " + "; ".join(errs))
    return t


# ---------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="generate.py", description="Generate the synthetic personalization benchmark "
        "(docs/SYNTH.md). The same seed and sizes give byte-identical files.")
    ap.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    ap.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--books-per-facet", type=int, default=200,
                    help="catalog books per facet (16 facets; default 200)")
    g = ap.add_argument_group("users and ads per split")
    for split, users, ads, per in (("train", 600, 150, 4), ("valid", 100, 20, 2),
                                   ("test", 100, 20, 5)):
        g.add_argument(f"--{split}-users", type=int, default=users,
                       help=f"users in {split} (default {users})")
        g.add_argument(f"--{split}-ads", type=int, default=ads,
                       help=f"ad books in {split} (default {ads})")
        g.add_argument(f"--{split}-ads-per-user", type=int, default=per,
                       help=f"rows per {split} user, one ad each (default {per})")
    h = ap.add_argument_group("histories")
    h.add_argument("--min-history", type=int, default=1,
                   help="shortest non-empty history (default 1)")
    h.add_argument("--max-history", type=int, default=60,
                   help="longest history (default 60; rows keep the last 50)")
    h.add_argument("--empty-history", type=float, default=0.05,
                   help="share of users with no history at all (default 0.05)")
    h.add_argument("--noise", type=float, default=0.15,
                   help="share of history books from facets the user does not like (default 0.15)")
    h.add_argument("--short-share", type=float, default=0.7,
                   help="share of the short-term facet among the last 5-10 books (default 0.7)")
    h.add_argument("--zipf", type=float, default=1.0,
                   help="popularity exponent of books within a facet (default 1.0)")
    h.add_argument("--nextitem-min", type=int, default=5,
                   help="shortest history kept in the next-item split (default 5, at least 3)")
    ap.add_argument("--templates", help="JSON file overriding prompt1/prompt2/user_prompt/"
                    "profile_prompt (default: the synthetic demo's, tools/synth/world.py)")
    a = ap.parse_args(argv)
    errs = []
    if a.books_per_facet < 2:
        errs.append("--books-per-facet must be at least 2")
    for split in SPLITS:
        nu, na = getattr(a, f"{split}_users"), getattr(a, f"{split}_ads")
        per = getattr(a, f"{split}_ads_per_user")
        if nu < 1 or na < 1 or per < 1:
            errs.append(f"--{split}-users, --{split}-ads and --{split}-ads-per-user must be >= 1")
        elif per > na:
            errs.append(f"--{split}-ads-per-user {per} > --{split}-ads {na}")
    if not 1 <= a.min_history <= a.max_history:
        errs.append("need 1 <= --min-history <= --max-history")
    for name in ("empty_history", "noise", "short_share"):
        if not 0.0 <= getattr(a, name) <= 1.0:
            errs.append(f"--{name.replace('_', '-')} must be in [0, 1]")
    if a.zipf < 0:
        errs.append("--zipf must be >= 0")
    if a.nextitem_min < 3:
        errs.append("--nextitem-min must be at least 3 (one item to train on, one to validate, "
                    "one to test)")
    if errs:
        ap.error("; ".join(errs))
    return a


def check_out(out, overwrite):
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise UserError(f"--out {out}: exists and is not a directory")
        if os.listdir(out) and not overwrite:
            raise UserError(f"--out {out}: directory is not empty (use --overwrite)")
    os.makedirs(os.path.join(out, "nextitem"), exist_ok=True)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def generate(a):
    errs = W.check_world()
    if errs:
        raise UserError("tools/synth/world.py breaks its own rules: " + "; ".join(errs))
    templates = load_templates(a.templates)
    check_out(a.out, a.overwrite)
    seed = a.seed
    books = build_catalog(seed, a.books_per_facet, a.zipf)
    ads = pick_ads(seed, books, {s: getattr(a, f"{s}_ads") for s in SPLITS})
    for split in SPLITS:
        rng = random.Random(f"{seed}/describe/{split}")
        for ad in ads[split]:
            ad["ad"] = split
            describe_ad(rng, ad)
    if a.max_history > min(len([b for b in books if b["facet"] == f and not b.get("ad")])
                           for f in W.FACET_IDS):
        raise UserError("--max-history is larger than the books of a facet: raise "
                        "--books-per-facet")
    sampler = FacetSampler(books)

    files, counts, ceilings, all_users = {}, {"books": len(books)}, {}, []
    for split in SPLITS:
        rng = random.Random(f"{seed}/users/{split}")
        users = [make_user(rng, sampler, f"{split}-{i:05d}", split, a)
                 for i in range(getattr(a, f"{split}_users"))]
        all_users.extend(users)
        pairs = assign_ads(random.Random(f"{seed}/assign/{split}"), users, ads[split],
                           getattr(a, f"{split}_ads_per_user"))
        random.Random(f"{seed}/rows/{split}").shuffle(pairs)
        rows, truths = [], []
        for i, (u, ad) in enumerate(pairs):
            row, truth = make_row(u, ad, templates)
            rows.append(row)
            truths.append(dict({"row": i, "split": split}, **truth))
        write_jsonl(os.path.join(a.out, f"{split}.jsonl"), rows)
        write_jsonl(os.path.join(a.out, f"{split}.truth.jsonl"), truths)
        write_jsonl(os.path.join(a.out, f"{split}.requests.jsonl"),
                    [{"history": r["title_list"], "ad": {"title": r["original_title"],
                                                         "description": r["original_description"]}}
                     for r in rows])
        write_jsonl(os.path.join(a.out, f"{split}.users.jsonl"),
                    [{"user_id": u["user_id"], "history": u["history"],
                      "item_id_list": u["history_ids"], "long_term": u["long_term"],
                      "short_term": u["short_term"], "interest_facets": u["interest_facets"],
                      "full_history_length": len(u["full_history_ids"]),
                      "user_profile": u["profile"]} for u in users])
        matching = sum(1 for t in truths if t["right_points"])
        counts[split] = {"users": len(users), "ads": len(ads[split]), "rows": len(rows),
                         "rows_with_matching_point": matching,
                         "empty_histories": sum(1 for u in users if not u["history"])}
        ceilings[split] = {"oracle_good": matching, "oracle_adv": matching / len(rows)}

    write_jsonl(os.path.join(a.out, "catalog.jsonl"),
                [dict({"item_id": b["item_id"], "title": b["title"], "facet": b["facet"],
                       "ad": b.get("ad")},
                      **({"description": b["description"], "points": b["points"],
                          "point_facets": b["point_facets"]} if b.get("ad") else {}))
                 for b in sorted(books, key=lambda b: b["item_id"])])

    seqs = [(u["user_id"], u["full_history_ids"]) for u in all_users
            if len(u["full_history_ids"]) >= a.nextitem_min]
    nd = os.path.join(a.out, "nextitem")
    write_jsonl(os.path.join(nd, "items.jsonl"),
                [{"item_id": b["item_id"], "title": b["title"]}
                 for b in sorted(books, key=lambda b: b["item_id"]) if not b.get("ad")])
    write_jsonl(os.path.join(nd, "train.jsonl"), [{"user_id": u, "item_ids": s[:-2]}
                                                  for u, s in seqs])
    write_jsonl(os.path.join(nd, "valid.jsonl"), [{"user_id": u, "history": s[:-2],
                                                   "target": s[-2]} for u, s in seqs])
    write_jsonl(os.path.join(nd, "test.jsonl"), [{"user_id": u, "history": s[:-1],
                                                  "target": s[-1]} for u, s in seqs])
    counts["nextitem"] = {"items": sum(1 for b in books if not b.get("ad")), "users": len(seqs)}
    write_json(os.path.join(a.out, "templates.json"), templates)
    write_json(os.path.join(a.out, "world.json"), W.world_json())

    for dirpath, _, names in os.walk(a.out):
        for n in names:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, a.out).replace(os.sep, "/")
            if rel != "manifest.json":
                files[rel] = sha256(p)
    args = {k: v for k, v in sorted(vars(a).items()) if k not in ("out", "overwrite")}
    manifest = {"format": "hllm-synth", "version": FORMAT_VERSION, "seed": seed, "args": args,
                "counts": counts, "ceilings": ceilings, "files": dict(sorted(files.items()))}
    write_json(os.path.join(a.out, "manifest.json"), manifest)
    return manifest


def main(argv):
    a = parse_args(argv)
    m = generate(a)
    c = m["counts"]
    print(dumps({"out": a.out, "seed": a.seed, "rows": {s: c[s]["rows"] for s in SPLITS},
                 "test_oracle_adv": round(m["ceilings"]["test"]["oracle_adv"], 4),
                 "nextitem_users": c["nextitem"]["users"]}))
    return 0


if __name__ == "__main__":
    run_main(main)
