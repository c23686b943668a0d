#!/usr/bin/env python3
"""Benchmark the C engine (`hllm bench`) against transformers on a ~100M-parameter Llama.

Both sides use the same random checkpoint, the same thread count, prompt length and
number of generated tokens, fp32 compute (weights stored bf16 by default and upcast at
load on both sides). Repetitions are interleaved (C, torch, C, torch, ...) and medians
are reported.

    python3 tests/bench/bench_llm.py                       # both engines
    python3 tests/bench/bench_llm.py --only-torch          # transformers side only
    python3 tests/bench/bench_llm.py --threads 4 --prompt-len 256 --gen 128 --reps 7

The C side is run as
    HLLM bench --model DIR --threads T --prompt-len P --gen N --reps 1 --json
and must print one JSON line containing "prefill_tok_s" and "decode_tok_s".
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

BENCH_CONFIG = dict(
    vocab_size=32000,
    hidden_size=768,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_key_value_heads=4,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=2,
    initializer_range=0.02,
)
SEED = 1234


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def ensure_model(model_dir, storage):
    """Create the random checkpoint once; reuse it if it exists with the right dtype."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg_path = os.path.join(model_dir, "config.json")
    want = {"bf16": "bfloat16", "f32": "float32"}[storage]
    if os.path.exists(cfg_path):
        have = json.load(open(cfg_path)).get("dtype") or json.load(open(cfg_path)).get("torch_dtype")
        if have == want:
            return
        raise SystemExit(f"{model_dir} holds a {have} checkpoint but --storage {storage} was asked; "
                         f"use another --model-dir or delete it")
    log(f"creating random Llama in {model_dir} (storage {storage}, seed {SEED}) ...")
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(LlamaConfig(**BENCH_CONFIG)).float()
    if storage == "bf16":
        model = model.to(torch.bfloat16)
    os.makedirs(model_dir, exist_ok=True)
    model.save_pretrained(model_dir)


def prompt_ids(n, vocab):
    import torch
    g = torch.Generator().manual_seed(SEED + 1)
    return torch.randint(3, vocab, (1, n), generator=g)


class TorchRunner:
    def __init__(self, model_dir, threads, prompt_len, gen):
        import torch
        import transformers
        from transformers import LlamaForCausalLM

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        torch.set_num_threads(threads)
        self.torch = torch
        self.model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.nparams = sum(p.numel() for p in self.model.parameters())
        self.ids = prompt_ids(prompt_len, self.model.config.vocab_size)
        self.gen = gen
        self.attn = self.model.config._attn_implementation

    def _fwd(self, ids, cache, pos):
        import inspect
        kw = {"input_ids": ids, "position_ids": pos, "use_cache": True}
        params = inspect.signature(self.model.forward).parameters
        # transformers >= 5.2x renamed past_key_values -> cache
        kw["cache" if "cache" in params else "past_key_values"] = cache
        if "logits_to_keep" in params:
            kw["logits_to_keep"] = 1  # like generate(): logits for the last token only
        out = self.model(**kw)
        return out.logits[:, -1].argmax(-1, keepdim=True)

    def run_once(self, check=False):
        """Returns (prefill_tok_s, decode_tok_s) for one prefill + gen incremental steps."""
        torch = self.torch
        from transformers import DynamicCache

        with torch.inference_mode():
            cache = DynamicCache(config=self.model.config)
            P = self.ids.shape[1]
            t0 = time.perf_counter()
            nxt = self._fwd(self.ids, cache, torch.arange(P).unsqueeze(0))
            t1 = time.perf_counter()
            toks = [nxt]
            for i in range(self.gen):
                nxt = self._fwd(nxt, cache, torch.tensor([[P + i]]))
                toks.append(nxt)
            t3 = time.perf_counter()
            if check:  # the cached decode must equal full no-cache forwards
                assert cache.get_seq_length() == P + self.gen, cache.get_seq_length()
                seq = torch.cat([self.ids] + toks[:-1], dim=1)
                ref = self.model(input_ids=seq, use_cache=False).logits[0, P - 1:].argmax(-1)
                got = torch.cat(toks, dim=1)[0]
                if not torch.equal(ref, got):
                    log(f"WARNING: cached decode differs from no-cache forward: {got.tolist()} vs {ref.tolist()}")
        return P / (t1 - t0), self.gen / (t3 - t1)

    def run_once_checked(self):
        return self.run_once(check=True)


class CRunner:
    def __init__(self, hllm, model_dir, threads, prompt_len, gen):
        self.cmd = [hllm, "bench", "--model", model_dir, "--threads", str(threads),
                    "--prompt-len", str(prompt_len), "--gen", str(gen), "--reps", "1", "--json"]

    def run_once(self):
        p = subprocess.run(self.cmd, capture_output=True, text=True, timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"`{shlex.join(self.cmd)}` failed ({p.returncode}):\n{p.stderr[-2000:]}")
        for line in reversed(p.stdout.strip().splitlines()):
            line = line.strip()
            if line.startswith("{"):
                d = json.loads(line)
                return float(d["prefill_tok_s"]), float(d["decode_tok_s"])
        raise RuntimeError(f"`{shlex.join(self.cmd)}` printed no JSON line:\n{p.stdout[-2000:]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hllm", default="build/cli/hllm", help="path to the hllm binary")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--storage", choices=["bf16", "f32"], default="bf16",
                    help="checkpoint storage dtype (compute is fp32 on both sides)")
    ap.add_argument("--model-dir", default=None,
                    help="checkpoint cache (default build/bench-llm100m, or build/bench-llm100m-f32)")
    ap.add_argument("--only-torch", action="store_true", help="skip the C engine")
    ap.add_argument("--only-c", action="store_true", help="skip transformers")
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = ap.parse_args()

    model_dir = args.model_dir or ("build/bench-llm100m" + ("" if args.storage == "bf16" else "-f32"))
    ensure_model(model_dir, args.storage)

    runners = {}
    if not args.only_torch:
        if not os.access(args.hllm, os.X_OK):
            raise SystemExit(f"{args.hllm} is not an executable; build it or pass --hllm / --only-torch")
        runners["C (hllm)"] = CRunner(args.hllm, model_dir, args.threads, args.prompt_len, args.gen)
    if not args.only_c:
        runners["transformers"] = TorchRunner(model_dir, args.threads, args.prompt_len, args.gen)

    # warmup, then interleaved repetitions
    for name, r in runners.items():
        log(f"warmup {name} ...")
        (r.run_once_checked if hasattr(r, "run_once_checked") else r.run_once)()
    res = {name: ([], []) for name in runners}
    for i in range(args.reps):
        for name, r in runners.items():
            pf, dc = r.run_once()
            res[name][0].append(pf)
            res[name][1].append(dc)
            log(f"rep {i + 1}/{args.reps} {name:13s} prefill {pf:9.1f} tok/s  decode {dc:8.2f} tok/s")

    med = {n: (statistics.median(v[0]), statistics.median(v[1])) for n, v in res.items()}
    import torch
    import transformers
    info = (f"model {model_dir} ({args.storage} storage, fp32 compute"
            + (f", {runners['transformers'].nparams / 1e6:.1f}M params, attn {runners['transformers'].attn}"
               if "transformers" in runners else "")
            + f"), threads {args.threads}, prompt {args.prompt_len}, gen {args.gen}, reps {args.reps} (medians)")
    print(info)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"| {'engine':14s} | {'prefill tok/s':>13s} | {'decode tok/s':>12s} |")
    print(f"|{'-' * 16}|{'-' * 15}|{'-' * 14}|")
    for n, (pf, dc) in med.items():
        print(f"| {n:14s} | {pf:13.1f} | {dc:12.2f} |")
    out = {"threads": args.threads, "prompt_len": args.prompt_len, "gen": args.gen, "reps": args.reps,
           "storage": args.storage, "results": {n: {"prefill_tok_s": v[0], "decode_tok_s": v[1]}
                                               for n, v in med.items()}}
    if len(med) == 2:
        c, t = med["C (hllm)"], med["transformers"]
        rp, rd = c[0] / t[0], c[1] / t[1]
        print(f"| {'ratio C/torch':14s} | {rp:12.2f}x | {rd:11.2f}x |")
        out["ratio"] = {"prefill": rp, "decode": rd}
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
