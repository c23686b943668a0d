#!/usr/bin/env python3
"""bench_tokenizer.py: C tokenizer (`hllm tokenize --bench`) vs Hugging Face `tokenizers` on the
HLLM-Creator batch: the 50 most recent titles of a user, encoded without special tokens.

Both run single-threaded on the same machine in the same invocation (RAYON_NUM_THREADS=1,
TOKENIZERS_PARALLELISM=false for the Rust library). Each "pass" encodes all 50 titles; the
medians over ROUNDS passes are compared. Both sides keep their BPE word cache across passes (the
Rust BPE has one built in; the C side reuses one hc_tok_ctx); the C cold number uses a fresh
context per pass. Before timing, the script checks that both produce the same ids.

    python3 tests/bench/bench_tokenizer.py --hllm build/cli/hllm [--rounds 2000]

Not a ctest test: it prints one table and exits 0 (1 only if the ids differ).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
import tokenizers  # noqa: E402  (after the environment is set)
from tokenizers import Tokenizer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "tokenizers")

# A user's 50 most recent titles: the shape of Amazon Books / Goodreads titles (series in
# parentheses, subtitles, editions, a few non-English), which is what HLLM-Creator encodes.
TITLES = [
    "The Name of the Wind (The Kingkiller Chronicle, #1)",
    "The Wise Man's Fear (The Kingkiller Chronicle, #2)",
    "Mistborn: The Final Empire (Mistborn, #1)",
    "The Way of Kings (The Stormlight Archive, #1)",
    "Project Hail Mary",
    "Dune (Dune Chronicles, #1)",
    "Children of Time (Children of Time, #1)",
    "A Memory Called Empire (Teixcalaan, #1)",
    "The Three-Body Problem (Remembrance of Earth's Past, #1)",
    "Piranesi",
    "Atomic Habits: An Easy & Proven Way to Build Good Habits & Break Bad Ones",
    "Thinking, Fast and Slow",
    "Sapiens: A Brief History of Humankind",
    "The Pragmatic Programmer: Your Journey to Mastery, 20th Anniversary Edition (2nd Edition)",
    "Designing Data-Intensive Applications: The Big Ideas Behind Reliable, Scalable, and Maintainable Systems",
    "Clean Code: A Handbook of Agile Software Craftsmanship",
    "Harry Potter and the Sorcerer's Stone (Harry Potter, #1)",
    "The Hobbit, or There and Back Again",
    "Pride and Prejudice (Penguin Classics)",
    "One Hundred Years of Solitude",
    "Cien años de soledad",
    "L'Étranger",
    "Der Steppenwolf",
    "ノルウェイの森",
    "三体",
    "The Midnight Library: A Novel",
    "Where the Crawdads Sing",
    "The Seven Husbands of Evelyn Hugo: A Novel",
    "Klara and the Sun",
    "The Song of Achilles",
    "Circe",
    "Educated: A Memoir",
    "Becoming",
    "The Body Keeps the Score: Brain, Mind, and Body in the Healing of Trauma",
    "Salt, Fat, Acid, Heat: Mastering the Elements of Good Cooking",
    "The Joy of Cooking: 2019 Edition Fully Revised and Updated",
    "Good Omens: The Nice and Accurate Prophecies of Agnes Nutter, Witch",
    "The Hitchhiker's Guide to the Galaxy (Hitchhiker's Guide to the Galaxy, #1)",
    "Foundation (Foundation, #1)",
    "Neuromancer (Sprawl, #1)",
    "Snow Crash",
    "The Left Hand of Darkness (Hainish Cycle, #4)",
    "Hyperion (Hyperion Cantos, #1)",
    "Red Rising (Red Rising Saga, #1)",
    "The Fifth Season (The Broken Earth, #1)",
    "Gideon the Ninth (The Locked Tomb, #1)",
    "Tomorrow, and Tomorrow, and Tomorrow",
    "Lessons in Chemistry",
    "Fourth Wing (The Empyrean, #1)",
    "Babel: Or the Necessity of Violence: An Arcane History of the Oxford Translators' Revolution",
]
assert len(TITLES) == 50


def c_bench(hllm, tok_dir, rounds, lines_path):
    with open(lines_path, "rb") as f:
        out = subprocess.run([hllm, "tokenize", "--tokenizer", tok_dir, "--bench", str(rounds)],
                             stdin=f, capture_output=True, check=True)
    return json.loads(out.stdout)


def c_ids(hllm, tok_dir, lines_path):
    with open(lines_path, "rb") as f:
        out = subprocess.run([hllm, "tokenize", "--tokenizer", tok_dir], stdin=f,
                             capture_output=True, check=True)
    return [json.loads(l)["ids"] for l in out.stdout.decode().splitlines()]


def hf_bench(tok, rounds):
    batch, loop = [], []
    tok.encode_batch(TITLES, add_special_tokens=False)  # warm the cache like the C warm pass
    for _ in range(rounds):
        t0 = time.perf_counter()
        tok.encode_batch(TITLES, add_special_tokens=False)
        batch.append((time.perf_counter() - t0) * 1e6)
        t0 = time.perf_counter()
        for t in TITLES:
            tok.encode(t, add_special_tokens=False)
        loop.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(batch), statistics.median(loop)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hllm", default=os.path.join(HERE, "..", "..", "build", "cli", "hllm"))
    ap.add_argument("--rounds", type=int, default=2000)
    args = ap.parse_args()
    print(f"tokenizers {tokenizers.__version__}, RAYON_NUM_THREADS=1, {len(TITLES)} titles/pass, "
          f"{args.rounds} passes; medians in microseconds per pass")
    print(f"{'tokenizer':10} {'tokens':>6} {'C warm':>9} {'C cold':>9} {'HF batch':>9} "
          f"{'HF loop':>9} {'HF/C':>6} {'C load ms':>9} {'HF load ms':>10}")
    rc = 0
    with tempfile.TemporaryDirectory() as td:
        lines = os.path.join(td, "titles.jsonl")
        with open(lines, "w", encoding="utf-8") as f:
            for t in TITLES:
                f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
        for name in ["llama2", "qwen3"]:
            d = os.path.join(DATA, name)
            t0 = time.perf_counter()
            tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
            hf_load = (time.perf_counter() - t0) * 1e3
            want = [e.ids for e in tok.encode_batch(TITLES, add_special_tokens=False)]
            if c_ids(args.hllm, d, lines) != want:
                print(f"{name}: C and HF ids differ", file=sys.stderr)
                rc = 1
            c = c_bench(args.hllm, d, args.rounds, lines)
            hb, hl = hf_bench(tok, args.rounds)
            best_hf = min(hb, hl)
            print(f"{name:10} {c['n_tokens']:>6} {c['median_us']:>9.1f} {c['median_us_cold']:>9.1f} "
                  f"{hb:>9.1f} {hl:>9.1f} {best_hf / c['median_us']:>5.1f}x {c['load_ms']:>9.1f} "
                  f"{hf_load:>10.1f}")
    print("HF/C = faster of HF batch/loop divided by C warm; > 1 means C is faster.")
    return rc


if __name__ == "__main__":
    sys.exit(main())
