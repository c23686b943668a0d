#!/usr/bin/env python3
"""hllm-train vs PyTorch: training tokens/s of the HLLM-Creator creative loss (issue 11 item 9).

Usage:
    python3 tests/bench/bench_train_vs_torch.py --train BUILD/trainer/hllm-train \
        [--package tests/data/creator/tiny] [--data tests/data/train/data_rows.jsonl] \
        [--threads 2] [--steps 20] [--warmup 2] [--batch 2] [--rounds 3]

Both sides train the same package on the same rows, in the same order, with the same batch
size, thread count and optimizer, one step = item LLM -> user LLM -> user_projector ->
creative LLM with the creative LM loss (the other three loss weights 0), backward through all
of it, AdamW (lr 2e-5, betas (0.9, 0.999), eps 1e-8, weight decay 0.01 on every package tensor,
cosine schedule after a linear warm-up of 0.1 of the steps: hllm-train's defaults).

* hllm: `hllm-train --steps W+N --batch B --threads T --no-shuffle --creative-weight 1
  --recon-weight 0 --align-weight 0 --cls-weight 0 --metrics FILE`; the time of a step is
  taken from its metrics line (tokens_per_s = its labelled tokens / the step's wall time, which
  covers reading and tokenizing the rows, forward, backward, the gradient norm and AdamW);
  loading and the final checkpoint/package write are left out. The first W steps are not timed.
* torch: float32, transformers LlamaModel (item, user) and Qwen3ForCausalLM (creative) loaded
  from the package's safetensors through tests/reference/make_train_creator_fixture.py's
  load_llm, SDPA attention, torch.set_num_threads(T); each LLM runs once per step over the whole
  micro-batch, padded (item titles and user histories left-padded with explicit positions so
  that every real token keeps the position hllm-train gives it, creative rows right-padded),
  lm_head only at the labelled rows; torch.optim.AdamW (fused) over every package tensor (the
  ones without gradient get a zero gradient, as hllm-train decays every parameter). Rows are
  tokenized once before timing with `tokenizers` from the package's tokenizer.json files (the
  per-step time includes building the padded tensors); W warm-up steps, then N timed.

Tokens (the same count for both sides, from the same tokenized rows): the tokens through each
LLM's forward in a step: item LLM sum(title tokens + 1 slot), user LLM sum(items + user prompt
+ 1 slot), creative LLM sum(prompt1 + 1 slot + prompt2 + response + eos). Padding is not
counted. Both sides run the same steps, so the ratio is also the steps/s ratio.

Fairness check: the loss of every step (hllm's metrics vs torch) must agree within --tol
(default 1e-3 relative); otherwise the script stops with an error. The rows are first copied
into a work file keeping only rows with the fields the trainer needs, and hllm-train must
report 0 skipped rows on it.
"""

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from safetensors import safe_open
from tokenizers import Tokenizer
from transformers import LlamaForCausalLM, Qwen3ForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import make_train_creator_fixture as fx  # noqa: E402


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


# ---- data: the rows hllm-train reads, tokenized the way trainer/data.c does (package templates)


NEEDED = {"user_profile": str, "original_title": str, "prompt1": str, "prompt2": str,
          "response": str, "title_list": list, "item_id_list": list}


def usable(o):
    if not isinstance(o, dict):
        return False
    for k, t in NEEDED.items():
        if not isinstance(o.get(k), t):
            return False
    if not o["response"] or len(o["title_list"]) != len(o["item_id_list"]):
        return False
    if not all(isinstance(t, str) for t in o["title_list"]):
        return False
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in o["item_id_list"]):
        return False
    d = o.get("original_description")
    if d is not None and not isinstance(d, str):
        return False
    try:
        json.loads(o["user_profile"])
    except ValueError:
        return False
    return True


def read_rows(path, out_path):
    rows = []
    with open(path, "rb") as f, open(out_path, "w", encoding="utf-8") as fo:
        for raw in f:
            try:
                line = raw.decode("utf-8")
                o = json.loads(line)
            except (UnicodeDecodeError, ValueError):
                continue
            if usable(o):
                rows.append(o)
                fo.write(json.dumps(o, ensure_ascii=False) + "\n")
    if not rows:
        sys.exit("bench_train_vs_torch: %s: no usable row" % path)
    return rows


def render_prompt2(tpl, title, desc, tmax, dmax):
    """hc_package_render_prompt2: {title}, {description} (None -> "None"), {{ and }}."""
    if desc is None:
        desc = "None"
    title, desc = title[:tmax], desc[:dmax]
    out, i = [], 0
    while i < len(tpl):
        if tpl.startswith("{{", i):
            out.append("{"); i += 2
        elif tpl.startswith("}}", i):
            out.append("}"); i += 2
        elif tpl.startswith("{title}", i):
            out.append(title); i += 7
        elif tpl.startswith("{description}", i):
            out.append(desc); i += 13
        else:
            out.append(tpl[i]); i += 1
    return "".join(out)


class Tok:
    def __init__(self, pkg, max_items=50, max_text=64, max_gen=4096):
        cj = json.load(open(os.path.join(pkg, "creator.json")))
        self.cj = cj
        self.itok = Tokenizer.from_file(os.path.join(pkg, cj["item_tokenizer"], "tokenizer.json"))
        self.ctok = Tokenizer.from_file(os.path.join(pkg, cj["creative_tokenizer"],
                                                     "tokenizer.json"))
        tp = cj["templates"]
        self.prompt1 = self.cenc(tp["prompt1"])
        self.user_prompt = self.ienc(tp["user_prompt"])
        self.eos = cj["creative_eos_ids"][0]
        self.slot = cj.get("slot_token_id", 0)
        self.S_item, self.L_hist = cj["max_item_tokens"], cj["max_history"]
        self.tpl2 = tp["prompt2"]
        self.tmax, self.dmax = cj.get("title_max_chars", 768), cj.get("description_max_chars", 4096)
        self.max_items, self.max_text, self.max_gen = max_items, max_text, max_gen

    def ienc(self, s):
        return self.itok.encode(s, add_special_tokens=False).ids

    def cenc(self, s):
        return self.ctok.encode(s, add_special_tokens=False).ids

    def row(self, o):
        titles = o["title_list"][-self.max_items:]
        items = [self.ienc(t)[: min(self.S_item, self.max_text)] for t in titles]
        p2 = self.cenc(render_prompt2(self.tpl2, o["original_title"], o.get("original_description"),
                                      self.tmax, self.dmax))
        n_prompt = len(self.prompt1) + 1 + len(p2)
        resp = self.cenc(o["response"])[: self.max_gen - n_prompt - 1]
        seq = self.prompt1 + [self.slot] + p2 + resp + [self.eos]
        return {"items": items, "seq": seq, "slot": len(self.prompt1), "first": n_prompt}

    def tokens(self, r):
        """Tokens through the three LLMs' forwards for one row."""
        return (sum(len(t) + 1 for t in r["items"]) + len(r["items"]) + len(self.user_prompt) + 1 +
                len(r["seq"]))


# ---- the PyTorch side


class TorchTrainer:
    def __init__(self, pkg, tok, steps, attn, lr=2e-5, wd=0.01, warmup_ratio=0.1):
        fx.TINY = pkg  # load_llm reads the package directory from the module's TINY
        f = safe_open(os.path.join(pkg, "model.safetensors"), "pt")
        tensors = {k: f.get_tensor(k).float() for k in f.keys()}
        self.item = fx.load_llm(LlamaForCausalLM, "item_llm", tensors, "item_llm.").float()
        self.user = fx.load_llm(LlamaForCausalLM, "user_llm", tensors, "user_llm.").float()
        self.cre = fx.load_llm(Qwen3ForCausalLM, "creative_llm", tensors, "creative_llm.").float()
        for m in (self.item, self.user, self.cre):
            m.train()
            if hasattr(m, "set_attn_implementation"):
                m.set_attn_implementation(attn)
            else:
                m.config._attn_implementation = attn
        params = {}
        for pre, mod in (("item_llm.model.", self.item.model), ("user_llm.model.", self.user.model),
                         ("creative_llm.model.", self.cre.model)):
            for k, p in mod.named_parameters():
                params[pre + k] = p
        params["creative_llm.lm_head.weight"] = self.cre.lm_head.weight
        for k, v in tensors.items():
            if k.startswith(("item_llm.", "user_llm.", "creative_llm.")):
                continue
            params[k] = v.clone().requires_grad_(True)
        for k, p in params.items():
            p.requires_grad_(True)
            p.grad = torch.zeros_like(p)
        want = {k for k in tensors if not (k.startswith(("item_llm.", "user_llm."))
                                           and "lm_head" in k)}
        if set(params) != want:
            sys.exit("bench_train_vs_torch: torch parameters differ from the package: %s" %
                     sorted(set(params) ^ want)[:8])
        self.n_params = sum(p.numel() for p in params.values())
        self.P = params
        self.tok = tok
        try:
            self.opt = torch.optim.AdamW(list(params.values()), lr=lr, betas=(0.9, 0.999),
                                         eps=1e-8, weight_decay=wd, fused=True)
            self.opt_kind = "fused"
        except (RuntimeError, TypeError):
            self.opt = torch.optim.AdamW(list(params.values()), lr=lr, betas=(0.9, 0.999),
                                         eps=1e-8, weight_decay=wd, foreach=True)
            self.opt_kind = "foreach"
        warm = warmup_ratio * steps

        def sched(step):  # hc_cosine_lr / transformers' get_cosine_schedule_with_warmup
            if step < warm:
                return step / max(1.0, warm)
            prog = (step - warm) / max(1.0, steps - warm)
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * prog)))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, sched)

    def loss(self, rows):
        P, tk = self.P, self.tok
        B = len(rows)
        H_i = P["item_emb_tokens"].numel()
        # item LLM: every title of the micro-batch, left-padded, slot last at position S_item
        titles = [t for r in rows for t in r["items"]]
        S = tk.S_item
        if titles:
            Lm = max(len(t) for t in titles)
            ids = torch.zeros(len(titles), Lm, dtype=torch.long)
            mask = torch.zeros(len(titles), Lm + 1, dtype=torch.long)
            for j, t in enumerate(titles):
                if t:
                    ids[j, Lm - len(t):] = torch.tensor(t)
                mask[j, Lm - len(t):] = 1
            x = torch.cat([self.item.model.embed_tokens(ids),
                           P["item_emb_tokens"].view(1, 1, -1).expand(len(titles), 1, H_i)], 1)
            pos = torch.arange(S - Lm, S + 1).expand(len(titles), -1)
            e = self.item.model(inputs_embeds=x, attention_mask=mask, position_ids=pos,
                                use_cache=False).last_hidden_state[:, -1]
        # user LLM: items at L_hist - n .., the user prompt, the [user] slot; left-padded
        um = self.user.model
        up = um.embed_tokens(torch.tensor(tk.user_prompt, dtype=torch.long))
        nmax = max(len(r["items"]) for r in rows)
        Tu = nmax + len(tk.user_prompt) + 1
        xs, mask, k = [], torch.zeros(B, Tu, dtype=torch.long), 0
        for i, r in enumerate(rows):
            n = len(r["items"])
            parts = [up.new_zeros(nmax - n, up.shape[1])] if nmax > n else []
            if n:
                parts.append(e[k:k + n])
            k += n
            parts += [up, P["emb_tokens"].view(1, -1)]
            xs.append(torch.cat(parts, 0))
            mask[i, nmax - n:] = 1
        pos = torch.arange(tk.L_hist - nmax, tk.L_hist - nmax + Tu).expand(B, -1)
        u = um(inputs_embeds=torch.stack(xs), attention_mask=mask, position_ids=pos,
               use_cache=False).last_hidden_state[:, -1]
        U = u @ P["user_projector.weight"].T
        # creative LLM: prompt1, slot(U), prompt2, response, eos at 0..; right-padded
        Tc = max(len(r["seq"]) for r in rows)
        ids = torch.zeros(B, Tc, dtype=torch.long)
        mask = torch.zeros(B, Tc, dtype=torch.long)
        lab_b, lab_t, lab_y = [], [], []
        for i, r in enumerate(rows):
            s = r["seq"]
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
            for t in range(r["first"] - 1, len(s) - 1):
                lab_b.append(i); lab_t.append(t); lab_y.append(s[t + 1])
        x = self.cre.model.embed_tokens(ids)
        slots = torch.tensor([r["slot"] for r in rows])
        x = x.index_put((torch.arange(B), slots), U)
        pos = torch.arange(Tc).expand(B, -1)
        h = self.cre.model(inputs_embeds=x, attention_mask=mask, position_ids=pos,
                           use_cache=False).last_hidden_state
        hl = h[torch.tensor(lab_b), torch.tensor(lab_t)]
        return F.cross_entropy(self.cre.lm_head(hl), torch.tensor(lab_y))

    def step(self, rows):
        self.opt.zero_grad(set_to_none=False)
        loss = self.loss(rows)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return float(loss.detach())


# ---- the two sides


def batches(rows, steps, B):
    return [[rows[(s * B + b) % len(rows)] for b in range(B)] for s in range(steps)]


def run_hllm(a, data_path, work, rnd):
    out = os.path.join(work, "out%d" % rnd)
    met = os.path.join(work, "metrics%d.jsonl" % rnd)
    cmd = [a.train, "--package", a.package, "--data", data_path, "--out", out,
           "--checkpoint-dir", out + ".ckpt", "--steps", str(a.warmup + a.steps),
           "--batch", str(a.batch), "--threads", str(a.threads), "--no-shuffle",
           "--creative-weight", "1", "--recon-weight", "0", "--align-weight", "0",
           "--cls-weight", "0", "--metrics", met, "--keep", "1"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        sys.exit("bench_train_vs_torch: hllm-train failed (%d):\n%s" % (p.returncode, p.stderr))
    m = re.search(r": (\d+) rows, (\d+) skipped", p.stderr) or re.search(r": (\d+) rows", p.stderr)
    if m and len(m.groups()) > 1 and int(m.group(2)):
        sys.exit("bench_train_vs_torch: hllm-train skipped rows of the work file:\n" + p.stderr)
    lines = [json.loads(l) for l in open(met) if l.strip()]
    if len(lines) != a.warmup + a.steps:
        sys.exit("bench_train_vs_torch: %s: %d lines, expected %d" % (met, len(lines),
                                                                     a.warmup + a.steps))
    return cmd, [l["loss"] for l in lines], [l["tokens_per_s"] for l in lines]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True, help="the hllm-train binary")
    ap.add_argument("--package", default=os.path.join(ROOT, "tests/data/creator/tiny"))
    ap.add_argument("--data", default=os.path.join(ROOT, "tests/data/train/data_rows.jsonl"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per side and round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (both sides)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-rows", type=int, default=0, help="use only the first N usable rows")
    ap.add_argument("--attn", default="sdpa", help="transformers attention (sdpa or eager)")
    ap.add_argument("--tol", type=float, default=1e-3, help="relative loss agreement required")
    ap.add_argument("--json", help="also write the raw results here")
    a = ap.parse_args()
    a.package = os.path.abspath(a.package)
    torch.set_num_threads(a.threads)
    work = tempfile.mkdtemp(prefix="bench_train_")
    data_path = os.path.join(work, "rows.jsonl")
    raw = read_rows(a.data, data_path)
    if a.max_rows:
        raw = raw[: a.max_rows]
        with open(data_path, "w", encoding="utf-8") as fo:
            for o in raw:
                fo.write(json.dumps(o, ensure_ascii=False) + "\n")
    if a.batch > len(raw):
        sys.exit("bench_train_vs_torch: --batch %d > %d usable rows" % (a.batch, len(raw)))
    tok = Tok(a.package)
    rows = [tok.row(o) for o in raw]
    total = a.warmup + a.steps
    plan = batches(rows, total, a.batch)
    step_tokens = [sum(tok.tokens(r) for r in b) for b in plan]
    step_labels = [sum(len(r["seq"]) - r["first"] for r in b) for b in plan]
    timed_tokens = sum(step_tokens[a.warmup:])

    print("machine: %s, nproc %d; torch %s (%d threads, %s); hllm-train --threads %d"
          % (cpu_model(), os.cpu_count(), torch.__version__, torch.get_num_threads(),
             torch.__config__.parallel_info().splitlines()[-1].strip(), a.threads))
    print("package %s, data %s (%d usable rows), batch %d, %d warm-up + %d timed steps, "
          "%d tokens in the timed steps (%.1f per step), %d rounds"
          % (os.path.relpath(a.package, ROOT), a.data, len(rows), a.batch, a.warmup, a.steps,
             timed_tokens, timed_tokens / a.steps, a.rounds))
    res = []
    for rnd in range(a.rounds):
        la0 = loadavg()
        cmd, h_loss, h_rate = run_hllm(a, data_path, work, rnd)
        h_time = sum(step_labels[s] / h_rate[s] for s in range(a.warmup, total))
        tt = TorchTrainer(a.package, tok, total, a.attn)
        t_loss = []
        for s in range(a.warmup):
            t_loss.append(tt.step(plan[s]))
        t0 = time.perf_counter()
        for s in range(a.warmup, total):
            t_loss.append(tt.step(plan[s]))
        t_time = time.perf_counter() - t0
        la1 = loadavg()
        rel = [abs(x - y) / max(abs(y), 1e-12) for x, y in zip(h_loss, t_loss)]
        print("round %d: first-step loss hllm %.7f torch %.7f (rel %.2e); last step %.7f vs "
              "%.7f; worst step rel %.2e" % (rnd + 1, h_loss[0], t_loss[0], rel[0], h_loss[-1],
                                             t_loss[-1], max(rel)))
        if max(rel) > a.tol:
            sys.exit("bench_train_vs_torch: the two sides disagree (loss rel %.3e > %.1e): not "
                     "the same computation" % (max(rel), a.tol))
        res.append({"round": rnd + 1, "hllm_s": h_time, "torch_s": t_time,
                    "hllm_tok_s": timed_tokens / h_time, "torch_tok_s": timed_tokens / t_time,
                    "load_before": la0, "load_after": la1, "loss_rel_first": rel[0],
                    "loss_rel_worst": max(rel)})
        if rnd == 0:
            print("hllm: %s" % " ".join(cmd))
            print("torch: %d parameters (= the package's trained tensors), AdamW %s, attention %s"
                  % (tt.n_params, tt.opt_kind, a.attn))
        del tt

    print()
    print("| round | hllm tok/s | torch tok/s | hllm/torch | load avg before | after |")
    print("|---|---|---|---|---|---|")
    for r in res:
        print("| %d | %.0f | %.0f | %.2f | %s | %s |" % (r["round"], r["hllm_tok_s"],
                                                        r["torch_tok_s"],
                                                        r["hllm_tok_s"] / r["torch_tok_s"],
                                                        r["load_before"], r["load_after"]))
    mh = statistics.median(r["hllm_tok_s"] for r in res)
    mt = statistics.median(r["torch_tok_s"] for r in res)
    print("| median | %.0f | %.0f | %.2f | | |" % (mh, mt, mh / mt))
    print("median steps/s: hllm %.2f, torch %.2f; target hllm/torch >= 2: %s"
          % (a.steps * mh / timed_tokens, a.steps * mt / timed_tokens,
             "met" if mh / mt >= 2 else "NOT met (%.2fx)" % (mh / mt)))
    shutil.rmtree(work, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "rounds": res, "median_hllm_tok_s": mh,
                       "median_torch_tok_s": mt, "torch": torch.__version__}, f, indent=1)


if __name__ == "__main__":
    main()
