#!/usr/bin/env python3
"""PyTorch reference for the trainer's loss heads (trainer/heads.h, tests/unit/test_train_heads.c).

Usage:
    python3 tests/reference/make_train_heads_fixture.py --out tests/data/train

Builds each head of MODEL_SPEC §6.1 / §6.3 in PyTorch (float64; the f32 weights widened
exactly) on the tiny package tests/data/creator/tiny (its projectors, towers, align_temp,
dec_emb_tokens and its creative LLM, a transformers Qwen3, as the decoder), with random inputs
from fixed seeds, and writes one safetensors file per head:

  heads_cls.safetensors       L_cls: user_tower / item_tower from the package; the package's
                              cls_tower has dim 16, which does not match its towers' output 64
                              (H_i), so a consistent MLPMixer(dim 64, token_dim 8, channel 40,
                              depth 2) is generated here and stored as cls_tower.* (the C test
                              puts it in the table). N = 6 rows, K = 3 negatives per row
                              (input.neg, drawn here with randperm over the other rows; the C
                              picker is tested on its own). Stores loss, score (the positive
                              pairs' logits) and grad.* of U, e_ad and every cls parameter.
  heads_align.safetensors     L_align: 3 rows, profile lengths (5, 8, 3) cut to max_len 6, each
                              row a separate sequence [profile[:6], dec_emb_tokens slot] with
                              positions 0..L; symmetric InfoNCE as basemodel.nce_loss.
  heads_recon.safetensors     L_recon: 3 rows [slot = user_profile_projector(u), prompt (4 ids),
                              profile[:R - 1], eos], R = max_len (12) - 5; labels on the profile
                              and eos, HF's shifted token-mean CE over all rows.
  heads_nextitem.safetensors  HLLM next-item InfoNCE: o (3, 5, 16), e (3, 6, 16), mask (3, 5),
                              6 negatives (one within 0.99 cosine of a target: masked there).

Decoder parameter gradients are too big to store whole (the fixtures stay < 500 KB): for each
decoder parameter P the file has gnorm.P (the gradient's L2 norm) and gsub.P = grad.flatten()
[::stride] with stride = max(1, numel // 97), and gemb.ids / gemb.rows: the embedding
gradient's rows of every id used. Deterministic: fixed seeds, one thread.
"""

import argparse
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import Qwen3Config, Qwen3ForCausalLM

TINY = "tests/data/creator/tiny"
PREFIX = "creative_llm."
LN_EPS = 1e-5


def load_tiny():
    f = safe_open(os.path.join(TINY, "model.safetensors"), "pt")
    return {k: f.get_tensor(k) for k in f.keys()}


def load_decoder(tensors):
    cfg = Qwen3Config.from_pretrained(os.path.join(TINY, "creative_llm"))
    cfg._attn_implementation = "eager"
    model = Qwen3ForCausalLM(cfg)
    sd = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    return model.double().eval(), cfg


def stride_of(numel):
    return max(1, numel // 97)


def decoder_grads(model, used_ids, out):
    for name, p in model.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        flat = g.flatten()
        out["gsub." + PREFIX + name] = flat[:: stride_of(flat.numel())].float().contiguous()
        out["gnorm." + PREFIX + name] = torch.tensor([flat.norm().item()], dtype=torch.float32)
    ids = sorted(set(int(i) for i in used_ids))
    out["gemb.ids"] = torch.tensor(ids, dtype=torch.int32)
    out["gemb.rows"] = model.model.embed_tokens.weight.grad[ids].float().contiguous()


# ---- cls --------------------------------------------------------------------------------------


class FeedForward(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0),
                                 nn.Linear(hidden, dim), nn.Dropout(0.0))

    def forward(self, x):
        return self.net(x)


class MixerBlock(nn.Module):
    def __init__(self, dim, seq_lens, token_dim, channel_dim):
        super().__init__()
        self.token_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.token_forward = FeedForward(seq_lens, token_dim)
        self.channel_mix = nn.Sequential(nn.LayerNorm(dim, eps=LN_EPS),
                                         FeedForward(dim, channel_dim))

    def forward(self, x):
        x = x + self.token_forward(self.token_norm(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mix(x)


class MLPMixer(nn.Module):
    def __init__(self, dim, seq_lens=2, num_classes=1, depth=2, token_dim=8, channel_dim=40):
        super().__init__()
        self.mixer_blocks = nn.ModuleList(MixerBlock(dim, seq_lens, token_dim, channel_dim)
                                          for _ in range(depth))
        self.layer_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp_head = nn.Sequential(nn.Linear(dim, num_classes))

    def forward(self, x):
        for b in self.mixer_blocks:
            x = b(x)
        return self.mlp_head(self.layer_norm(x).mean(dim=1))


def make_cls(tensors, out_dir):
    torch.manual_seed(4101)
    N, K = 6, 3
    Wu = tensors["user_tower.weight"].double().clone().requires_grad_(True)
    Wi = tensors["item_tower.weight"].double().clone().requires_grad_(True)
    D, HC = Wu.shape
    HI = Wi.shape[1]
    mixer = MLPMixer(D)
    with torch.no_grad():  # LayerNorm weights and biases away from (1, 0) so their grads matter
        for name, p in mixer.named_parameters():
            if "norm" in name or "channel_mix.0" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
    cls_w = {"cls_tower." + k: v.detach().float().clone() for k, v in mixer.state_dict().items()}
    mixer = mixer.double()
    U = torch.randn(N, HC, dtype=torch.float64).float().double().requires_grad_(True)
    E = torch.randn(N, HI, dtype=torch.float64).float().double().requires_grad_(True)
    neg = torch.stack([torch.tensor([j for j in range(N) if j != i])[torch.randperm(N - 1)[:K]]
                       for i in range(N)])
    vu, va = U @ Wu.T, E @ Wi.T
    pairs, labels = [], []
    for i in range(N):
        pairs.append(torch.stack([vu[i], va[i]]))
        labels.append(1.0)
        for j in neg[i].tolist():
            pairs.append(torch.stack([vu[i], va[j]]))
            labels.append(0.0)
    logits = mixer(torch.stack(pairs)).squeeze(-1)
    loss = F.binary_cross_entropy_with_logits(logits, torch.tensor(labels, dtype=torch.float64))
    loss.backward()
    with torch.no_grad():
        score = mixer(torch.stack([vu, va], dim=1)).squeeze(-1)
    ref = dict(cls_w)
    ref.update({"input.U": U.detach().float(), "input.e_ad": E.detach().float(),
                "input.neg": neg.to(torch.int32).contiguous(),
                "loss": torch.tensor([loss.item()], dtype=torch.float32),
                "score": score.float(), "grad.U": U.grad.float(), "grad.e_ad": E.grad.float(),
                "grad.user_tower.weight": Wu.grad.float(),
                "grad.item_tower.weight": Wi.grad.float()})
    for k, p in mixer.named_parameters():
        ref["grad.cls_tower." + k] = p.grad.float().contiguous()
    save_file(ref, os.path.join(out_dir, "heads_cls.safetensors"), metadata={"seed": "4101"})
    return {"cls_loss": loss.item(), "pairs": len(labels)}


# ---- align ------------------------------------------------------------------------------------


def nce(x, y, s):
    """basemodel.nce_loss on one rank: pos = cos(x_i, y_i); negatives all y_j, masked where
    y_i . y_j > 0.99 (the own positive included), logits * s, CE with target 0."""
    x = x / x.norm(dim=-1, keepdim=True)
    y = y / y.norm(dim=-1, keepdim=True)
    pos = F.cosine_similarity(x, y, dim=-1).unsqueeze(-1)
    neg = x @ y.T
    neg = neg.masked_fill(y @ y.T > 0.99, torch.finfo(neg.dtype).min)
    logits = torch.cat([pos, neg], dim=-1) * s
    return F.cross_entropy(logits, torch.zeros(x.shape[0], dtype=torch.int64))


def rows_of(lens, V, gen):
    ids = torch.randint(0, V - 3, (sum(lens),), generator=gen)
    return ids, list(lens)


def make_align(tensors, out_dir):
    model, cfg = load_decoder(tensors)
    gen = torch.Generator().manual_seed(4202)
    N, MAXLEN, lens = 3, 6, (5, 8, 3)
    HU = tensors["user_profile_align_projector.weight"].shape[1]
    W = tensors["user_profile_align_projector.weight"].double().clone().requires_grad_(True)
    slot = tensors["dec_emb_tokens"].double().clone().requires_grad_(True)
    temp = tensors["align_temp"].double().clone().requires_grad_(True)
    u = torch.randn(N, HU, generator=gen).float().double().requires_grad_(True)
    ids, lens = rows_of(lens, cfg.vocab_size, gen)
    p_rows, off, used = [], 0, []
    for i in range(N):
        r = ids[off:off + lens[i]][:MAXLEN]
        off += lens[i]
        used += r.tolist()
        e = torch.cat([model.model.embed_tokens(r), slot.view(1, -1)], 0)[None]
        pos = torch.arange(e.shape[1])[None]
        h = model.model(inputs_embeds=e, position_ids=pos, use_cache=False).last_hidden_state
        p_rows.append(h[0, -1])
    p = torch.stack(p_rows)
    a = u @ W.T
    with torch.no_grad():
        temp.clamp_(0, math.log(100))
    s = temp.exp()
    loss = 0.5 * (nce(a, p, s) + nce(p, a, s))
    loss.backward()
    ref = {"input.u": u.detach().float(), "input.profile_ids": ids.to(torch.int32),
           "input.profile_lens": torch.tensor(lens, dtype=torch.int32),
           "input.max_len": torch.tensor([MAXLEN], dtype=torch.int32),
           "loss": torch.tensor([loss.item()], dtype=torch.float32),
           "grad.u": u.grad.float(), "grad.user_profile_align_projector.weight": W.grad.float(),
           "grad.dec_emb_tokens": slot.grad.float().reshape(-1),
           "grad.align_temp": temp.grad.float().reshape(1)}
    decoder_grads(model, used, ref)
    save_file(ref, os.path.join(out_dir, "heads_align.safetensors"), metadata={"seed": "4202"})
    return {"align_loss": loss.item()}


# ---- recon ------------------------------------------------------------------------------------


def make_recon(tensors, out_dir):
    model, cfg = load_decoder(tensors)
    gen = torch.Generator().manual_seed(4303)
    N, MAXLEN, EOS, lens = 3, 12, 511, (4, 9, 2)
    prompt = torch.randint(0, cfg.vocab_size - 3, (4,), generator=gen)
    P = prompt.numel()
    R = MAXLEN - (1 + P)
    HU = tensors["user_profile_projector.weight"].shape[1]
    W = tensors["user_profile_projector.weight"].double().clone().requires_grad_(True)
    u = torch.randn(N, HU, generator=gen).float().double().requires_grad_(True)
    ids, lens = rows_of(lens, cfg.vocab_size, gen)
    total, count, off, used = 0.0, 0, 0, []
    for i in range(N):
        prof = ids[off:off + lens[i]][: R - 1]
        off += lens[i]
        toks = torch.cat([prompt, prof, torch.tensor([EOS])])
        used += toks.tolist()
        e = torch.cat([(u[i] @ W.T).view(1, -1), model.model.embed_tokens(toks)], 0)[None]
        labels = torch.full((e.shape[1],), -100, dtype=torch.int64)
        labels[1 + P:] = toks[P:]  # the profile tokens and the eos
        pos = torch.arange(e.shape[1])[None]
        h = model.model(inputs_embeds=e, position_ids=pos, use_cache=False).last_hidden_state
        logits = model.lm_head(h[0])
        # HF ForCausalLMLoss: the logit at t predicts the label at t + 1
        total = total + F.cross_entropy(logits[:-1], labels[1:], ignore_index=-100,
                                        reduction="sum")
        count += int((labels[1:] != -100).sum())
    loss = total / count
    loss.backward()
    ref = {"input.u": u.detach().float(), "input.prompt": prompt.to(torch.int32),
           "input.profile_ids": ids.to(torch.int32),
           "input.profile_lens": torch.tensor(lens, dtype=torch.int32),
           "input.eos": torch.tensor([EOS], dtype=torch.int32),
           "input.max_len": torch.tensor([MAXLEN], dtype=torch.int32),
           "loss": torch.tensor([loss.item()], dtype=torch.float32),
           "n_tokens": torch.tensor([count], dtype=torch.int32),
           "grad.u": u.grad.float(), "grad.user_profile_projector.weight": W.grad.float()}
    decoder_grads(model, used, ref)
    save_file(ref, os.path.join(out_dir, "heads_recon.safetensors"), metadata={"seed": "4303"})
    return {"recon_loss": loss.item(), "recon_tokens": count}


# ---- next-item --------------------------------------------------------------------------------


def make_nextitem(out_dir):
    gen = torch.Generator().manual_seed(4404)
    N, S, H, M = 3, 5, 16, 6
    o = torch.randn(N, S, H, generator=gen).float().double().requires_grad_(True)
    e = torch.randn(N, S + 1, H, generator=gen).float().double()
    negs = torch.randn(M, H, generator=gen)
    negs[0] = e[1, 3].float() * 1.5 + 0.01 * torch.randn(H, generator=gen)  # ~ the target of (1, 2)
    negs = negs.float().double().requires_grad_(True)
    e.requires_grad_(True)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 0, 1]], dtype=torch.int32)
    ls = torch.tensor(2.3, dtype=torch.float32).double().requires_grad_(True)
    # hllm.py nce_loss
    with torch.no_grad():
        ls.clamp_(0, math.log(100))
    scale = ls.exp()
    out_e = o / o.norm(dim=-1, keepdim=True)
    tgt = e[:, 1:] / e[:, 1:].norm(dim=-1, keepdim=True)
    pos = F.cosine_similarity(out_e, tgt, dim=-1).unsqueeze(-1)
    nn_ = negs / negs.norm(dim=-1, keepdim=True)
    neg_logits = out_e @ nn_.T
    fix = tgt @ nn_.T
    n_masked = int((fix > 0.99).sum())
    assert n_masked >= 1
    neg_logits = neg_logits.masked_fill(fix > 0.99, torch.finfo(neg_logits.dtype).min)
    logits = torch.cat([pos, neg_logits], dim=-1)[mask.bool()] * scale
    loss = F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.int64))
    loss.backward()
    ref = {"input.o": o.detach().float(), "input.e": e.detach().float(),
           "input.mask": mask, "input.neg": negs.detach().float(),
           "input.logit_scale": torch.tensor([2.3], dtype=torch.float32),
           "loss": torch.tensor([loss.item()], dtype=torch.float32),
           "n_pairs": torch.tensor([int(mask.sum())], dtype=torch.int32),
           "grad.o": o.grad.float(), "grad.e": e.grad.float(), "grad.neg": negs.grad.float(),
           "grad.logit_scale": ls.grad.float().reshape(1)}
    save_file(ref, os.path.join(out_dir, "heads_nextitem.safetensors"), metadata={"seed": "4404"})
    return {"nextitem_loss": loss.item(), "masked_negatives": n_masked}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/data/train")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(a.out, exist_ok=True)
    tensors = load_tiny()
    info = {}
    info.update(make_cls(tensors, a.out))
    info.update(make_align(tensors, a.out))
    info.update(make_recon(tensors, a.out))
    info.update(make_nextitem(a.out))
    print(json.dumps(info))


if __name__ == "__main__":
    main()
