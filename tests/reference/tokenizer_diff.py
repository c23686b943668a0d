#!/usr/bin/env python3
"""tokenizer_diff.py: writes the differential corpus for the C tokenizer (engine/tokenizer*.c).

For each tokenizer under tests/data/tokenizers/ it generates random and adversarial strings with a
fixed seed, encodes them with Hugging Face `tokenizers` (the Rust library, PyPI, 0.23.x) and
writes tests/data/tokenizers/diff_<name>.jsonl. The C test (tests/unit/test_tokenizer_diff.c)
must reproduce every line exactly. Rerun after changing the generator:

    python3 tests/reference/tokenizer_diff.py            # both tokenizers
    python3 tests/reference/tokenizer_diff.py --check    # regenerate in memory, compare to files

Line kinds (compact keys keep the committed files small):
  {"t": text, "i": ids}                 encode(text, add_special_tokens=False)
  {"t": text, "s": 1, "i": ids}         encode(text, add_special_tokens=True)
  {"b": hex, "i": ids}                  raw bytes that are not valid UTF-8; ids are
                                        encode(bytes.decode("utf-8", "replace")), the documented
                                        C behaviour for invalid input (U+FFFD per maximal
                                        ill-formed subsequence)
  {"d": ids, "k": 0|1, "o": text}       decode(ids, skip_special_tokens=k)
"""
import argparse
import json
import os
import random
import sys

import tokenizers
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "tokenizers")
N_TEXT = 20000      # encode strings per tokenizer (the issue asks for >= 20,000)
N_SPECIAL = 300     # add_special_tokens=True
N_BYTES = 600       # invalid UTF-8 inputs
N_DECODE = 2000     # random id sequences, decoded with and without skip_special_tokens

WORDS = """the a of and to in is for on with by from at as an be this that it not or are was
book novel guide history story life world love war time house night secret girl boy king queen
dark light blood fire ice shadow river city garden street last first new old great little lost
children mother father daughter son family friends murder mystery death summer winter spring
cooking recipes kitchen science mind brain body health yoga diet running business money
leadership management marketing startup programming python java learning deep machine data
vol volume edition illustrated complete collection series part chapter book one two three
don't can't won't it's she's they're we've i'm you'll he'd O'Brien McDonald's rock'n'roll
Harry Potter Hobbit Tolkien Rowling Austen Pride Prejudice Gatsby Dune Foundation Sherlock""".split()

SPECIALISH = ["<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>",
              "</think>", "<tool_call>", "<|fim_prefix|>", "<|im_", "|>", "<", ">", "</", "<<s>>",
              "<s", "s>", "<0x41>", "<0xE4>", "▁", "▁▁", "Ġ", "Ċ", "<|vision_pad|>", "<|box_start|>"]

# code point pools: (lo, hi) inclusive
POOLS = {
    "ascii": [(0x20, 0x7E)],
    "digits": [(0x30, 0x39), (0x660, 0x669), (0xFF10, 0xFF19), (0x2460, 0x2473), (0xBC, 0xBE)],
    "space": [(0x20, 0x20), (0x09, 0x0D), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680),
              (0x2000, 0x200D), (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F),
              (0x3000, 0x3000), (0xFEFF, 0xFEFF), (0x1C, 0x1F), (0x180E, 0x180E)],
    "latin": [(0xC0, 0x24F), (0x1E00, 0x1EFF)],
    "combining": [(0x300, 0x36F), (0x1AB0, 0x1ABE), (0x20D0, 0x20F0), (0xFE20, 0xFE2F)],
    "greek_cyr": [(0x370, 0x3FF), (0x400, 0x4FF)],
    "semitic": [(0x590, 0x5FF), (0x600, 0x6FF), (0x750, 0x77F)],
    "indic": [(0x900, 0x97F), (0x980, 0x9FF), (0xB80, 0xBFF), (0xE00, 0xE7F)],
    "cjk": [(0x3040, 0x30FF), (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xFF00, 0xFFEF)],
    "hangul": [(0xAC00, 0xD7A3), (0x1100, 0x11FF), (0x3130, 0x318F)],
    "emoji": [(0x1F300, 0x1F5FF), (0x1F600, 0x1F64F), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF),
              (0x2600, 0x27BF), (0x1F1E6, 0x1F1FF)],
    "symbols": [(0x2000, 0x206F), (0x2100, 0x22FF), (0x2190, 0x21FF), (0x25A0, 0x25FF),
                (0x1D400, 0x1D7FF)],
    "control": [(0x00, 0x1F), (0x7F, 0x9F)],
    "rare": [(0x10000, 0x1007F), (0x13000, 0x1342F), (0x20000, 0x2A6DF), (0xE000, 0xE0FF),
             (0xF0000, 0xF00FF), (0xFFF0, 0xFFFD), (0xE0000, 0xE007F)],
}

EMOJI_SEQ = ["👨‍👩‍👧‍👦", "👩🏽‍💻", "🏳️‍🌈", "🇯🇵", "🇺🇸", "1️⃣", "#️⃣", "❤️", "👍🏿", "🧑🏻‍🤝‍🧑🏿",
             "👁️‍🗨️", "🐻‍❄️", "😀", "🙂", "✨", "©", "™"]


def rand_cp(rng, pool):
    lo, hi = rng.choice(POOLS[pool])
    while True:
        c = rng.randint(lo, hi)
        if not (0xD800 <= c <= 0xDFFF):
            return chr(c)


def rand_chunk(rng):
    k = rng.random()
    if k < 0.30:
        w = rng.choice(WORDS)
        r = rng.random()
        if r < 0.15:
            w = w.upper()
        elif r < 0.3:
            w = w.capitalize()
        return w
    if k < 0.40:
        return rng.choice(SPECIALISH)
    if k < 0.47:
        return rng.choice(EMOJI_SEQ)
    if k < 0.52:  # whitespace runs
        return "".join(rand_cp(rng, "space") if rng.random() < 0.4 else " "
                       for _ in range(rng.randint(1, 12)))
    if k < 0.57:  # digits
        return "".join(rand_cp(rng, "digits") if rng.random() < 0.1 else str(rng.randint(0, 9))
                       for _ in range(rng.randint(1, 14)))
    if k < 0.60:  # long word
        base = rng.choice(WORDS + ["a", "ab", "xyz", "ñ", "中", "é"])
        return base * rng.randint(4, 30)
    if k < 0.63:  # decomposed accents: letter + combining marks
        return rng.choice("aeiouAEIOUnNcs") + "".join(rand_cp(rng, "combining")
                                                    for _ in range(rng.randint(1, 3)))
    if k < 0.66:  # contractions, case-folded forms
        return rng.choice(["'s", "'S", "'t", "'re", "'VE", "'m", "'ll", "'LL", "'d", "'ſ", "’s",
                           "''", "'", "'x"])
    pool = rng.choice(list(POOLS))
    return "".join(rand_cp(rng, pool) for _ in range(rng.randint(1, 6)))


def rand_text(rng):
    r = rng.random()
    if r < 0.02:
        return ""
    n = rng.randint(1, 4) if r < 0.93 else rng.randint(5, 16)
    out = []
    for _ in range(n):
        out.append(rand_chunk(rng))
        s = rng.random()
        if s < 0.55:
            out.append(" ")
        elif s < 0.6:
            out.append(rng.choice(["\n", "\t", "  ", "\r\n", " \n ", "", "-", ": "]))
    t = "".join(out)
    if rng.random() < 0.1:
        t = " " + t
    if rng.random() < 0.1:
        t = t + rng.choice([" ", "\n", "  "])
    return t


def rand_bytes(rng):
    """Valid text with invalid UTF-8 spliced in: stray continuation bytes, truncated sequences,
    overlongs, surrogates, > U+10FFFF, 0xFE/0xFF."""
    parts = []
    for _ in range(rng.randint(1, 6)):
        k = rng.random()
        if k < 0.4:
            parts.append(rand_chunk(rng).encode("utf-8"))
        elif k < 0.5:
            parts.append(b" ")
        else:
            parts.append(rng.choice([
                b"\x80", b"\xbf", b"\xc0\xaf", b"\xc1\xbf", b"\xc2", b"\xe0\x80\xaf", b"\xe0\xa0",
                b"\xe4\xb8", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf0\x9f\x98", b"\xf0\x80\x80\x80",
                b"\xf4\x90\x80\x80", b"\xf5\x80", b"\xfe", b"\xff", b"\xf8\x88\x80\x80\x80",
                b"\xe2\x82", b"\xc3", bytes([rng.randint(0x80, 0xff)]),
                bytes(rng.randint(0x80, 0xff) for _ in range(rng.randint(1, 5)))]))
    b = b"".join(parts)
    try:
        b.decode("utf-8")
        b += b"\xff"  # make sure it is invalid
    except UnicodeDecodeError:
        pass
    return b


def rand_ids(rng, tok, n_vocab, specials):
    n = rng.randint(0, 16)
    ids = []
    for _ in range(n):
        r = rng.random()
        if r < 0.15 and specials:
            ids.append(rng.choice(specials))
        elif r < 0.35:
            ids.append(rng.randint(0, min(n_vocab, 300)))  # byte tokens / low ids
        else:
            ids.append(rng.randint(0, n_vocab - 1))
    return ids


def generate(name):
    tok = Tokenizer.from_file(os.path.join(DATA, name, "tokenizer.json"))
    rng = random.Random(f"hllm-creator-tokenizer-diff-{name}-v1")
    lines = []
    seen = set()
    texts = []
    while len(texts) < N_TEXT:
        t = rand_text(rng)
        if t in seen:
            continue
        seen.add(t)
        texts.append(t)
    for enc, t in zip(tok.encode_batch(texts, add_special_tokens=False), texts):
        lines.append({"t": t, "i": enc.ids})
    for _ in range(N_SPECIAL):
        t = rand_text(rng)
        lines.append({"t": t, "s": 1, "i": tok.encode(t, add_special_tokens=True).ids})
    for _ in range(N_BYTES):
        b = rand_bytes(rng)
        lines.append({"b": b.hex(), "i": tok.encode(b.decode("utf-8", "replace"),
                                                      add_special_tokens=False).ids})
    n_vocab = tok.get_vocab_size(with_added_tokens=True)
    specials = [a.content for a in tok.get_added_tokens_decoder().values()]
    special_ids = [tok.token_to_id(s) for s in specials]
    for _ in range(N_DECODE):
        ids = rand_ids(rng, tok, n_vocab + 5, special_ids)  # a few out-of-range ids too
        k = rng.randint(0, 1)
        lines.append({"d": ids, "k": k, "o": tok.decode(ids, skip_special_tokens=bool(k))})
    return "".join(json.dumps(l, ensure_ascii=False, separators=(",", ":")) + "\n" for l in lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed files")
    ap.add_argument("names", nargs="*", default=["llama2", "qwen3"])
    args = ap.parse_args()
    print(f"tokenizers {tokenizers.__version__}", file=sys.stderr)
    rc = 0
    for name in args.names:
        text = generate(name)
        path = os.path.join(DATA, f"diff_{name}.jsonl")
        if args.check:
            same = os.path.exists(path) and open(path, encoding="utf-8").read() == text
            print(f"{path}: {'identical' if same else 'DIFFERENT'}", file=sys.stderr)
            rc |= not same
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"wrote {path}: {text.count(chr(10))} lines, {len(text.encode())} bytes",
                  file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
