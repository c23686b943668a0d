#!/usr/bin/env python3
"""PyTorch autograd reference for the whole HLLM-Creator training step (trainer/creator_train.h,
tests/unit/test_train_creator_ref.c).

Usage:
    python3 tests/reference/make_train_creator_fixture.py --out tests/data/train

Loads the tiny package tests/data/creator/tiny into transformers modules in float64 (the f32
weights widened exactly): item and user LlamaForCausalLM (their .model only), creative
Qwen3ForCausalLM, the slots, projectors, towers and cls_tower (the MLP-Mixer of
make_train_heads_fixture.py), and makes N_ROWS training rows of random ids from a fixed seed
(item titles incl. an empty one, ad titles, prompt2, response, profile). The prompt ids the C
side derives from creator.json (prompt1, user prompt, profile_prompt) are tokenized here with
`tokenizers` and stored so the C test can assert it uses the same ones. Every sequence is run
alone at batch 1 with explicit position ids, in the layouts of creator_train.h:

  item:     title ids at 64 - L .. 63, the [item] slot (item_emb_tokens) at 64; e = hidden there
  user:     the row's item vectors at 50 - n .., the user prompt, the [user] slot (emb_tokens)
  creative: prompt1, slot(U = user_projector u), prompt2, response, eos at 0..; token-mean CE
  cls:      user_tower(U), item_tower(e_ad) -> cls_tower, BCE over positives and k negatives
            per row; the negatives are drawn here with a Python copy of hc_cls_pick_negatives
            (splitmix64, partial Fisher-Yates) from CLS_RNG and stored (cls.neg, (steps, n, k))
  align:    creative LLM over [profile, dec_emb_tokens], symmetric InfoNCE with
            user_profile_align_projector(u), align_temp clamped in place
  recon:    creative LLM over [user_profile_projector(u), profile_prompt, profile, eos]
  nextitem: user LLM over the first m - 1 item vectors at 0.., InfoNCE against the next item
            with every item vector of the batch as negatives (0.99 rule), scale
            nextitem_logit_scale = f32(ln(1/0.07)) clamped to [0, ln 100]

Writes two files:
  creator_step.safetensors      rows (row.*), prompt ids (ids.*), the four loss terms and token
                                counts (loss.*), gradients of every parameter for weights
                                {1,1,1,1} (grad set "g"), then 5 torch.optim.AdamW steps
                                (lr 1e-3, weight decay 0.01, every parameter, each step a fresh
                                forward/backward of the same rows, new negatives): the losses of
                                each step (adam.loss (5, 4)) and the parameters after them (set "p")
  creator_nextitem.safetensors  the next-item loss and pair count, its gradients (set "g"),
                                5 AdamW steps of it (adam.loss (5)) and the parameters (set "p")
A set stores, for every parameter P of the trainer's table: <set>n.P (L2 norm, f64 as 2 f32:
hi + lo), <set>s.P = flatten()[::stride] with stride = max(1, numel // 97) (whole below 194
elements), and for the three embedding tables <set>r.P: the rows of every id the rows use
(<set>i.P their ids). Deterministic: fixed seeds, one thread, deterministic algorithms.
"""

import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_train_heads_fixture import MLPMixer, nce  # noqa: E402

TINY = "tests/data/creator/tiny"
N_ROWS = 4
SEED = 5101
CLS_RNG = 777
CLS_NEG_NUM = 8
ADAM_STEPS = 5
LR, WD = 1e-3, 0.01
M64 = (1 << 64) - 1


# ---- the negatives' picker (trainer/heads.c) ----------------------------------------------------


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def uniform_below(state, m):
    lim = M64 - M64 % m
    while True:
        state, r = splitmix64(state)
        if r < lim:
            return state, r % m


def pick_negatives(state, n, k):
    neg = []
    for i in range(n):
        pool = [j for j in range(n) if j != i]
        row = []
        for j in range(k):
            state, r = uniform_below(state, n - 1 - j)
            r += j
            pool[j], pool[r] = pool[r], pool[j]
            row.append(pool[j])
        neg.append(row)
    return state, neg


# ---- the package -------------------------------------------------------------------------------


def load_llm(cls, sub, tensors, prefix):
    cfg = cls.config_class.from_pretrained(os.path.join(TINY, sub))
    cfg._attn_implementation = "eager"
    m = cls(cfg)
    sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing, unexpected = m.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k != "lm_head.weight" and "rotary" not in k]
    assert not missing and not unexpected, (prefix, missing, unexpected)
    return m.double().eval()


class Package:
    """Every trainable tensor by its table name (float64 leaves), with the modules using them."""

    def __init__(self):
        f = safe_open(os.path.join(TINY, "model.safetensors"), "pt")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        self.item = load_llm(LlamaForCausalLM, "item_llm", tensors, "item_llm.")
        self.user = load_llm(LlamaForCausalLM, "user_llm", tensors, "user_llm.")
        self.creative = load_llm(Qwen3ForCausalLM, "creative_llm", tensors, "creative_llm.")
        D = tensors["cls_tower.layer_norm.weight"].shape[0]
        ch = tensors["cls_tower.mixer_blocks.0.channel_mix.1.net.0.weight"].shape[0]
        tok = tensors["cls_tower.mixer_blocks.0.token_forward.net.0.weight"].shape[0]
        depth = len({k.split(".")[2] for k in tensors if k.startswith("cls_tower.mixer_blocks.")})
        self.mixer = MLPMixer(D, depth=depth, token_dim=tok, channel_dim=ch)
        self.mixer.load_state_dict({k[len("cls_tower."):]: v for k, v in tensors.items()
                                    if k.startswith("cls_tower.")})
        self.mixer = self.mixer.double()
        self.params = {}
        for pre, mod in (("item_llm.", self.item.model), ("user_llm.", self.user.model),
                         ("creative_llm.model.", self.creative.model)):
            for k, p in mod.named_parameters():
                self.params[pre + ("model." if pre != "creative_llm.model." else "") + k] = p
        self.params["creative_llm.lm_head.weight"] = self.creative.lm_head.weight
        for k, p in self.mixer.named_parameters():
            self.params["cls_tower." + k] = p
        for k, v in tensors.items():
            if k.startswith(("item_llm.", "user_llm.", "creative_llm.", "cls_tower.")):
                continue
            self.params[k] = v.double().clone().requires_grad_(True)
        if "nextitem_logit_scale" not in self.params:  # hc_nextitem_init_param: logf(1/0.07f)
            v = torch.tensor([1.0 / 0.07], dtype=torch.float32).log()
            self.params["nextitem_logit_scale"] = v.double().requires_grad_(True)
        for k, p in self.params.items():
            p.requires_grad_(True)
            if k.startswith(("item_llm.", "user_llm.")):
                assert "lm_head" not in k
        self.P = self.params

    def zero_grad(self):
        for p in self.params.values():
            p.grad = None


# ---- the pipeline ------------------------------------------------------------------------------


def item_vec(pk, ids, S):
    """One item segment: ids at S - L .. S - 1, the slot at S; the final-norm hidden there."""
    m = pk.item.model
    L = len(ids)
    x = torch.cat([m.embed_tokens(torch.tensor(ids, dtype=torch.long)),
                   pk.P["item_emb_tokens"].view(1, -1)], 0)
    pos = torch.arange(S - L, S + 1)
    return m(inputs_embeds=x[None], position_ids=pos[None], use_cache=False).last_hidden_state[0, -1]


def creative_ce(pk, emb_rows, labels):
    """Sum of CE over the labelled rows of one creative-LLM sequence (positions 0..)."""
    x = torch.cat(emb_rows, 0)
    h = pk.creative.model(inputs_embeds=x[None], position_ids=torch.arange(x.shape[0])[None],
                          use_cache=False).last_hidden_state[0]
    logits = pk.creative.lm_head(h)
    lab = torch.tensor(labels, dtype=torch.long)
    return F.cross_entropy(logits, lab, ignore_index=-100, reduction="sum"), int((lab != -100).sum()), h


def cemb(pk, ids):
    return pk.creative.model.embed_tokens(torch.tensor(ids, dtype=torch.long))


def step_losses(pk, rows, ids, neg, S_item, L_hist, eos):
    P = pk.P
    n = len(rows)
    # items and ads
    e_rows = [[item_vec(pk, t, S_item) for t in r["items"]] for r in rows]
    e_ad = torch.stack([item_vec(pk, r["ad"], S_item) for r in rows])
    # users
    um = pk.user.model
    up = um.embed_tokens(torch.tensor(ids["user_prompt"], dtype=torch.long))
    us = []
    for r, es in zip(rows, e_rows):
        x = torch.cat([e.view(1, -1) for e in es] + [up, P["emb_tokens"].view(1, -1)], 0)
        pos = torch.arange(L_hist - len(es), L_hist - len(es) + x.shape[0])
        us.append(um(inputs_embeds=x[None], position_ids=pos[None],
                     use_cache=False).last_hidden_state[0, -1])
    u = torch.stack(us)
    U = u @ P["user_projector.weight"].T
    # creative
    tot, cnt = 0.0, 0
    p1 = ids["prompt1"]
    for i, r in enumerate(rows):
        toks = p1 + [-1] + r["prompt2"] + r["response"] + [eos]
        first = len(p1) + 1 + len(r["prompt2"])
        emb = [cemb(pk, p1), U[i].view(1, -1), cemb(pk, r["prompt2"] + r["response"] + [eos])]
        labels = [toks[t + 1] if t + 1 < len(toks) and t + 1 >= first else -100
                  for t in range(len(toks))]
        s, c, _ = creative_ce(pk, emb, labels)
        tot, cnt = tot + s, cnt + c
    l_creative = tot / cnt
    n_creative = cnt
    # cls
    vu, va = U @ P["user_tower.weight"].T, e_ad @ P["item_tower.weight"].T
    pairs, labels = [], []
    for i in range(n):
        pairs.append(torch.stack([vu[i], va[i]]))
        labels.append(1.0)
        for j in neg[i]:
            pairs.append(torch.stack([vu[i], va[j]]))
            labels.append(0.0)
    logits = pk.mixer(torch.stack(pairs)).squeeze(-1)
    l_cls = F.binary_cross_entropy_with_logits(logits, torch.tensor(labels, dtype=torch.float64))
    # recon
    tot, cnt = 0.0, 0
    pp = ids["profile_prompt"]
    for i, r in enumerate(rows):
        toks = pp + r["profile"] + [eos]
        emb = [(u[i] @ P["user_profile_projector.weight"].T).view(1, -1), cemb(pk, toks)]
        seq = [-1] + toks
        labels = [seq[t + 1] if t + 1 < len(seq) and t >= len(pp) else -100 for t in range(len(seq))]
        s, c, _ = creative_ce(pk, emb, labels)
        tot, cnt = tot + s, cnt + c
    l_recon = tot / cnt
    n_recon = cnt
    # align
    ps = []
    for r in rows:
        x = torch.cat([cemb(pk, r["profile"]), P["dec_emb_tokens"].view(1, -1)], 0)
        h = pk.creative.model(inputs_embeds=x[None], position_ids=torch.arange(x.shape[0])[None],
                              use_cache=False).last_hidden_state[0]
        ps.append(h[-1])
    p = torch.stack(ps)
    a = u @ P["user_profile_align_projector.weight"].T
    with torch.no_grad():
        P["align_temp"].clamp_(0, math.log(100))
    s = P["align_temp"].exp()
    l_align = 0.5 * (nce(a, p, s) + nce(p, a, s))
    return {"creative": l_creative, "recon": l_recon, "align": l_align, "cls": l_cls,
            "n_creative": n_creative, "n_recon": n_recon}


def nextitem_loss(pk, rows, S_item):
    P = pk.P
    e_rows = [[item_vec(pk, t, S_item) for t in r["items"]] for r in rows]
    allv = torch.stack([e for es in e_rows for e in es])
    mn = allv / allv.norm(dim=-1, keepdim=True)
    with torch.no_grad():
        P["nextitem_logit_scale"].clamp_(0, math.log(100))
    s = P["nextitem_logit_scale"].exp()
    tot, cnt, margin = 0.0, 0, 1.0
    for es in e_rows:
        x = torch.stack(es[:-1])
        o = pk.user.model(inputs_embeds=x[None], position_ids=torch.arange(x.shape[0])[None],
                          use_cache=False).last_hidden_state[0]
        for j in range(len(es) - 1):
            xo = o[j] / o[j].norm()
            y = es[j + 1] / es[j + 1].norm()
            fix = (mn @ y).detach()
            keep = fix <= 0.99
            margin = min(margin, float((fix - 0.99).abs().min()))
            lg = torch.cat([(xo @ y).view(1), (mn[keep] @ xo)]) * s
            tot = tot - torch.log_softmax(lg, 0)[0]
            cnt += 1
    assert margin > 1e-3, margin  # no negative near the 0.99 threshold
    return tot / cnt, cnt


# ---- fixture writing ---------------------------------------------------------------------------


def stride_of(numel):
    return max(1, numel // 97)


def norm2(x):
    """f64 norm as two f32 (hi + lo), so the reference norm keeps its precision in the file."""
    v = float(x.detach().double().norm())
    hi = torch.tensor([v], dtype=torch.float32)
    lo = torch.tensor([v - float(hi)], dtype=torch.float32)
    return torch.cat([hi, lo])


EMB = ("item_llm.model.embed_tokens.weight", "user_llm.model.embed_tokens.weight",
       "creative_llm.model.embed_tokens.weight")


def put_set(out, tag, tensors, used):
    for k, v in tensors.items():
        flat = v.detach().double().flatten()
        out[tag + "s." + k] = flat[:: stride_of(flat.numel())].float().contiguous()
        out[tag + "n." + k] = norm2(flat)
        if k in used:
            ids = sorted(set(used[k]))
            out[tag + "i." + k] = torch.tensor(ids, dtype=torch.int32)
            out[tag + "r." + k] = v.detach()[ids].float().contiguous()


def grads_of(pk):
    return {k: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in pk.P.items()}


def make_rows(gen, Vi, Vc):
    rows = []
    n_items = (3, 2, 4, 2)
    for r in range(N_ROWS):
        def ri(lo, hi, V):
            L = int(torch.randint(lo, hi + 1, (1,), generator=gen))
            return torch.randint(3, V - 3, (L,), generator=gen).tolist()
        items = [ri(1, 9, Vi) for _ in range(n_items[r])]
        if r == 2:
            items[1] = []  # an empty title: a segment of the slot only
        rows.append({"items": items, "ad": ri(2, 7, Vi), "prompt2": ri(3, 7, Vc),
                     "response": ri(2, 6, Vc), "profile": ri(3, 9, Vc)})
    return rows


def put_rows(out, rows):
    i32 = lambda x: torch.tensor(x, dtype=torch.int32)  # noqa: E731
    out["row.n_items"] = i32([len(r["items"]) for r in rows])
    out["row.item_lens"] = i32([len(t) for r in rows for t in r["items"]])
    out["row.item_ids"] = i32([i for r in rows for t in r["items"] for i in t])
    for f in ("ad", "prompt2", "response", "profile"):
        out["row.n_" + f] = i32([len(r[f]) for r in rows])
        out["row." + f] = i32([i for r in rows for i in r[f]])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/data/train")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(a.out, exist_ok=True)
    cj = json.load(open(os.path.join(TINY, "creator.json")))
    itok = Tokenizer.from_file(os.path.join(TINY, cj["item_tokenizer"], "tokenizer.json"))
    ctok = Tokenizer.from_file(os.path.join(TINY, cj["creative_tokenizer"], "tokenizer.json"))
    tp = cj["templates"]
    ids = {"prompt1": ctok.encode(tp["prompt1"], add_special_tokens=False).ids,
           "user_prompt": itok.encode(tp["user_prompt"], add_special_tokens=False).ids,
           "profile_prompt": ctok.encode(tp["profile_prompt"], add_special_tokens=False).ids}
    eos = cj["creative_eos_ids"][0]
    S_item, L_hist = cj["max_item_tokens"], cj["max_history"]
    gen = torch.Generator().manual_seed(SEED)
    pk = Package()
    Vi, Vc = pk.item.config.vocab_size, pk.creative.config.vocab_size
    rows = make_rows(gen, Vi, Vc)
    used = {EMB[0]: [i for r in rows for t in r["items"] + [r["ad"]] for i in t],
            EMB[1]: ids["user_prompt"],
            EMB[2]: ids["prompt1"] + ids["profile_prompt"] + [eos] +
            [i for r in rows for f in ("prompt2", "response", "profile") for i in r[f]]}
    n = len(rows)
    k = min(CLS_NEG_NUM, n - 1)
    init = {kk: v.detach().clone() for kk, v in pk.P.items()}

    # ---- the four-term step, then 5 AdamW steps of it
    out = {}
    put_rows(out, rows)
    for kk, v in ids.items():
        out["ids." + kk] = torch.tensor(v, dtype=torch.int32)
    out["ids.eos"] = torch.tensor([eos], dtype=torch.int32)
    out["cls.rng"] = torch.tensor([CLS_RNG], dtype=torch.int32)
    rng = CLS_RNG
    rng, neg = pick_negatives(rng, n, k)
    negs = [neg]
    L = step_losses(pk, rows, ids, neg, S_item, L_hist, eos)
    total = L["creative"] + L["recon"] + L["align"] + L["cls"]
    total.backward()
    out["loss.terms"] = torch.tensor([float(L[t].detach()) for t in ("creative", "recon", "align", "cls")],
                                     dtype=torch.float64).float()
    out["loss.counts"] = torch.tensor([L["n_creative"], L["n_recon"]], dtype=torch.int32)
    put_set(out, "g", grads_of(pk), used)
    info = {"losses": [float(L[t].detach()) for t in ("creative", "recon", "align", "cls")],
            "n_creative": L["n_creative"], "n_recon": L["n_recon"]}
    # AdamW: the first step reuses nothing (fresh forward from the initial parameters)
    for kk, p in pk.P.items():
        with torch.no_grad():
            p.copy_(init[kk])
    opt = torch.optim.AdamW(list(pk.P.values()), lr=LR, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=WD)
    rng = CLS_RNG
    adam_losses = []
    for s in range(ADAM_STEPS):
        opt.zero_grad(set_to_none=True)
        rng, neg = pick_negatives(rng, n, k)
        if s:
            negs.append(neg)
        L = step_losses(pk, rows, ids, neg, S_item, L_hist, eos)
        (L["creative"] + L["recon"] + L["align"] + L["cls"]).backward()
        for p in pk.P.values():  # the C step decays every parameter, with or without gradient
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        opt.step()
        adam_losses.append([float(L[t].detach()) for t in ("creative", "recon", "align", "cls")])
    out["cls.neg"] = torch.tensor(negs, dtype=torch.int32)
    out["adam.loss"] = torch.tensor(adam_losses, dtype=torch.float64).float()
    out["adam.cfg"] = torch.tensor([LR, WD, ADAM_STEPS], dtype=torch.float64).float()
    put_set(out, "p", {kk: v.detach() for kk, v in pk.P.items()}, used)
    info["adam_losses_last"] = adam_losses[-1]
    save_file(out, os.path.join(a.out, "creator_step.safetensors"), metadata={"seed": str(SEED)})

    # ---- next-item
    for kk, p in pk.P.items():
        with torch.no_grad():
            p.copy_(init[kk])
    pk.zero_grad()
    out = {}
    put_rows(out, rows)
    loss, cnt = nextitem_loss(pk, rows, S_item)
    loss.backward()
    out["loss"] = torch.tensor([float(loss.detach())], dtype=torch.float32)
    out["n_pairs"] = torch.tensor([cnt], dtype=torch.int32)
    put_set(out, "g", grads_of(pk), used)
    info["nextitem"] = float(loss.detach())
    for kk, p in pk.P.items():
        with torch.no_grad():
            p.copy_(init[kk])
    opt = torch.optim.AdamW(list(pk.P.values()), lr=LR, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=WD)
    adam_losses = []
    for s in range(ADAM_STEPS):
        opt.zero_grad(set_to_none=True)
        loss, _ = nextitem_loss(pk, rows, S_item)
        loss.backward()
        for p in pk.P.values():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        opt.step()
        adam_losses.append(float(loss.detach()))
    out["adam.loss"] = torch.tensor(adam_losses, dtype=torch.float32)
    out["adam.cfg"] = torch.tensor([LR, WD, ADAM_STEPS], dtype=torch.float64).float()
    put_set(out, "p", {kk: v.detach() for kk, v in pk.P.items()}, used)
    info["nextitem_adam_last"] = adam_losses[-1]
    save_file(out, os.path.join(a.out, "creator_nextitem.safetensors"),
              metadata={"seed": str(SEED)})
    print(json.dumps(info))


if __name__ == "__main__":
    main()
