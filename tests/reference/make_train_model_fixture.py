#!/usr/bin/env python3
"""Backward reference for the trainer's decoder model (tests/unit/test_train_model.c).

Usage:
    python3 tests/reference/make_train_model_fixture.py --out tests/data/train

Writes tests/data/train/model_llama/ and tests/data/train/model_qwen3/, each with
config.json, model.safetensors (f32 weights of a tiny random model built by transformers,
fixed seed) and grads.safetensors:

    input.ids (T,) i32          token ids of the packed batch, -1 at the injected row
    input.pos, input.seg (T,)   RoPE positions and segment index (2 segments)
    input.labels (T,) i32       CE labels, -100 = not labelled
    input.inject_rows (1,) i32  packed row of the injected vector
    input.inject (1, C) f32     the injected vector
    input.R (T, C) f32          weights of the hidden-state term of the loss
    loss, loss_ce (1,) f32
    grad.<parameter name>       dloss/dparameter for every parameter (tied: no lm_head)
    grad.inject (1, C) f32      dloss/dinject
    adamw.<parameter name>      the parameter after 5 AdamW steps (lr 1e-2, betas (0.9, 0.999),
                                eps 1e-8, weight decay 0.01) on this loss, injected vector fixed
    adamw.losses (5,) f32       the loss before each of those steps

The loss is CE(lm_head(final hidden) at labelled rows, mean over all labelled rows of both
segments) + sum(final_hidden * R). Each segment runs as its own sequence (batch 1, its own
position_ids, causal mask) in float64 (weights are f32 values, widened exactly), so the
reference is exact to far below the C test's f32 tolerance. RoPE's cos/sin stay f32 as in
transformers (and the C engine). Deterministic: fixed seeds, one thread.
"""

import argparse
import json
import os
import shutil

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

SEG_LENS = (7, 6)
SEG_POS0 = (0, 5)          # first position of each segment (segment 1 starts mid-sequence)
INJECT = (1, 2)            # (segment, row within it) of the injected vector
ADAM_STEPS = 5
ADAM = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, wd=0.01)  # the C test uses the same

MODELS = [
    dict(name="model_llama", cls=(LlamaConfig, LlamaForCausalLM), seed=2101,
         cfg=dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, rope_theta=1e4,
                  rms_norm_eps=1e-5, tie_word_embeddings=False)),
    dict(name="model_qwen3", cls=(Qwen3Config, Qwen3ForCausalLM), seed=2102,
         cfg=dict(vocab_size=80, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=1, head_dim=16, rope_theta=1e6,
                  rms_norm_eps=1e-6, tie_word_embeddings=True)),
]


def build(spec, out_dir):
    cfg_cls, model_cls = spec["cls"]
    torch.manual_seed(spec["seed"])
    cfg = cfg_cls(**spec["cfg"], max_position_embeddings=64, initializer_range=0.15,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    cfg._attn_implementation = "eager"
    model = model_cls(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):  # every RMSNorm, q_norm/k_norm included
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    model.save_pretrained(out_dir, safe_serialization=True)
    gen = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    return cfg, model


def run(spec, root):
    out_dir = os.path.join(root, spec["name"])
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    cfg, model = build(spec, out_dir)
    model = model.double()
    C, V = cfg.hidden_size, cfg.vocab_size
    T = sum(SEG_LENS)
    g = torch.Generator().manual_seed(spec["seed"] + 7)
    ids = torch.randint(3, V, (T,), generator=g, dtype=torch.int64)
    labels = torch.randint(0, V, (T,), generator=g, dtype=torch.int64)
    labels[torch.rand(T, generator=g) < 0.3] = -100
    R = (torch.randn(T, C, generator=g) * 0.5).float()
    inj = (torch.randn(1, C, generator=g) * 0.5).float()
    pos, seg = [], []
    for s, n in enumerate(SEG_LENS):
        pos += list(range(SEG_POS0[s], SEG_POS0[s] + n))
        seg += [s] * n
    inj_row = sum(SEG_LENS[: INJECT[0]]) + INJECT[1]
    labels[inj_row - 1] = 7  # labelled and unlabelled rows in both segments
    labels[0] = 5
    labels[3] = -100
    labels[T - 2] = -100

    def loss_fn(inj_p):
        hidden, start = [], 0
        for s, n in enumerate(SEG_LENS):
            e = model.model.embed_tokens(ids[start:start + n][None])
            if s == INJECT[0]:
                r = INJECT[1]
                e = torch.cat([e[:, :r], inj_p.view(1, 1, C), e[:, r + 1:]], dim=1)
            p = torch.tensor(pos[start:start + n], dtype=torch.int64)[None]
            out = model.model(inputs_embeds=e, position_ids=p, use_cache=False)
            hidden.append(out.last_hidden_state[0])
            start += n
        hidden = torch.cat(hidden, 0)
        logits = model.lm_head(hidden)
        ce = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum") / n_lab
        return ce + (hidden * R.double()).sum(), ce

    n_lab = int((labels != -100).sum())
    inj_p = inj.double().clone().requires_grad_(True)
    model.zero_grad()
    loss, ce = loss_fn(inj_p)
    loss.backward()
    grads = {name: p.grad.float().contiguous() for name, p in model.named_parameters()}

    # ADAM_STEPS optimizer steps on the same batch (the injected vector stays fixed)
    opt = torch.optim.AdamW(model.parameters(), lr=ADAM["lr"], betas=ADAM["betas"],
                            eps=ADAM["eps"], weight_decay=ADAM["wd"], foreach=False)
    adam_losses = []
    for _ in range(ADAM_STEPS):
        opt.zero_grad()
        l, _ = loss_fn(inj.double())
        l.backward()
        opt.step()
        adam_losses.append(l.item())

    ids_c = ids.clone()
    ids_c[inj_row] = -1
    ref = {
        "input.ids": ids_c.to(torch.int32),
        "input.pos": torch.tensor(pos, dtype=torch.int32),
        "input.seg": torch.tensor(seg, dtype=torch.int32),
        "input.labels": labels.to(torch.int32),
        "input.inject_rows": torch.tensor([inj_row], dtype=torch.int32),
        "input.inject": inj,
        "input.R": R,
        "loss": torch.tensor([loss.item()], dtype=torch.float32),
        "loss_ce": torch.tensor([ce.item()], dtype=torch.float32),
        "grad.inject": inj_p.grad.float(),
    }
    for name, p in model.named_parameters():
        ref["grad." + name] = grads[name]
        ref["adamw." + name] = p.detach().float().contiguous()
    ref["adamw.losses"] = torch.tensor(adam_losses, dtype=torch.float32)
    save_file(ref, os.path.join(out_dir, "grads.safetensors"),
              metadata={"seed": str(spec["seed"]), "torch": torch.__version__})
    print(f"{spec['name']}: T={T} labelled={n_lab} loss={loss.item():.6f} ce={ce.item():.6f} "
          f"params={sum(1 for _ in model.named_parameters())}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/data/train")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for spec in MODELS:
        run(spec, a.out)
    print(json.dumps({"written": [m["name"] for m in MODELS]}))


if __name__ == "__main__":
    main()
