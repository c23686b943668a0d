#!/usr/bin/env python3
"""Build a model package from Hugging Face LLM directories with freshly initialized heads:
the starting point for training HLLM-Creator (MODEL_SPEC §2).

    python3 tools/init_package.py --item-llm TinyLlama --creative-llm Qwen3-8B \\
        --templates templates.json --out pkg/ [--user-llm DIR] [--dtype f32|bf16] [--seed 0]

The item and user LLMs are Llama directories (the user LLM defaults to the item one; the same
weights are then copied under both prefixes, as the reference loads both from one dir). The
creative LLM is a Qwen3 (or Llama) directory. Each needs config.json and safetensors (or
pytorch_model.bin) weights; the item and creative dirs also need tokenizer.json.

Heads, seeded (--seed), created in this order:
  item_emb_tokens (1,1,H_i), emb_tokens (1,1,H_u), dec_emb_tokens (1,1,H_c): N(0, 0.02)
  user_projector, user_profile_projector, user_profile_align_projector (H_c,H_u),
  user_tower (cls_dim,H_c), item_tower (cls_dim,H_i): torch.nn.Linear default init, no bias
  (cls_dim = --cls-dim, default H_i)
  align_temp = ln(20)
  cls_tower: MLPMixer(dim=--cls-dim (default H_i), seq_lens 2, token_dim 8,
             channel_dim 3*dim, depth 2, num_classes 1), torch default init
"""

import argparse
import math
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hllm_package as hp  # noqa: E402


class FeedForward(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0),
                                 nn.Linear(hidden, dim), nn.Dropout(0.0))


class MixerBlock(nn.Module):
    def __init__(self, dim, seq_lens, token_dim, channel_dim):
        super().__init__()
        self.token_norm = nn.LayerNorm(dim)
        self.token_forward = FeedForward(seq_lens, token_dim)
        self.channel_mix = nn.Sequential(nn.LayerNorm(dim), FeedForward(dim, channel_dim))


class MLPMixer(nn.Module):
    """Parameter layout only (names and shapes of MODEL_SPEC §2's cls_tower)."""

    def __init__(self, dim, seq_lens=2, num_classes=1, depth=2, token_dim=8, channel_dim=None):
        super().__init__()
        channel_dim = channel_dim or 3 * dim
        self.mixer_blocks = nn.ModuleList(MixerBlock(dim, seq_lens, token_dim, channel_dim) for _ in range(depth))
        self.layer_norm = nn.LayerNorm(dim)
        self.mlp_head = nn.Sequential(nn.Linear(dim, num_classes))


def init_heads(hi, hu, hc, seed=0, cls_dim=None):
    """Fresh training heads, deterministic for a given seed."""
    torch.manual_seed(seed)
    h = {}
    d = cls_dim or hi  # the match head's width: user_tower (d, H_c), item_tower (d, H_i)
    h["item_emb_tokens"] = torch.randn(1, 1, hi) * 0.02
    h["emb_tokens"] = torch.randn(1, 1, hu) * 0.02
    h["dec_emb_tokens"] = torch.randn(1, 1, hc) * 0.02
    for name, (i, o) in (("user_projector", (hu, hc)), ("user_profile_projector", (hu, hc)),
                         ("user_profile_align_projector", (hu, hc)), ("user_tower", (hc, d)),
                         ("item_tower", (hi, d))):
        h[name + ".weight"] = nn.Linear(i, o, bias=False).weight.detach().clone()
    h["align_temp"] = torch.tensor(math.log(1 / 0.05))
    mixer = MLPMixer(d)
    for k, v in mixer.state_dict().items():
        h["cls_tower." + k] = v.detach().clone()
    return {k: v.float().contiguous() for k, v in h.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--item-llm", required=True)
    ap.add_argument("--user-llm")
    ap.add_argument("--creative-llm", required=True)
    ap.add_argument("--item-tokenizer")
    ap.add_argument("--creative-tokenizer")
    ap.add_argument("--templates", required=True)
    ap.add_argument("--dtype", choices=("bf16", "f32"), default="f32")
    ap.add_argument("--shard-size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cls-dim", type=int, help="cls_tower dim (default: item hidden size)")
    ap.add_argument("--centroids")
    ap.add_argument("--assign", choices=("ip", "cosine", "l2"), default="ip")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    try:
        build(a)
    except hp.PackageError as ex:
        print(f"init_package: error: {ex}", file=sys.stderr)
        return 1
    return 0


def build(a):
    user_dir = a.user_llm or a.item_llm
    item_tok = a.item_tokenizer or a.item_llm
    cre_tok = a.creative_tokenizer or a.creative_llm
    cfgs = [hp.read_json(os.path.join(d, "config.json")) for d in (a.item_llm, user_dir, a.creative_llm)]
    errs = hp.check_configs(*cfgs)
    if errs:
        raise hp.PackageError("\n  " + "\n  ".join(errs))
    errs += hp.check_tokenizers(item_tok, cre_tok, *cfgs)
    templates = hp.load_templates(a.templates)
    errs += hp.check_templates(templates)
    heads = init_heads(cfgs[0]["hidden_size"], cfgs[1]["hidden_size"], cfgs[2]["hidden_size"], a.seed, a.cls_dim)
    src = hp.MultiSource([hp.open_hf_weights(a.item_llm, "item_llm"), hp.open_hf_weights(user_dir, "user_llm"),
                          hp.open_hf_weights(a.creative_llm, "creative_llm"), hp.DictSource(heads)])
    shapes = {k: src.shape(k) for k in src.keys()}
    keep, dropped, e = hp.classify(shapes, *cfgs)
    errs += e
    if errs:
        raise hp.PackageError(f"{len(errs)} problem(s):\n  " + "\n  ".join(errs))
    for k, why in dropped:
        print(f"init_package: dropping {k} ({why})", file=sys.stderr)
    eos = hp.creative_eos_ids(a.creative_llm, cre_tok)
    centroids = hp.load_centroids(a.centroids, cfgs[2]["hidden_size"]) if a.centroids else None
    hp.write_package(a.out, source=src, keys=keep, item_model_dir=a.item_llm, user_model_dir=user_dir,
                     creative_model_dir=a.creative_llm, item_tok_dir=item_tok, creative_tok_dir=cre_tok,
                     templates=templates, eos_ids=eos, dtype=a.dtype, shard_size=a.shard_size,
                     centroids=centroids, assign=a.assign,
                     log=lambda s: print(f"init_package: {s}", file=sys.stderr))
    left = hp.validate_package(a.out)
    if left:
        raise hp.PackageError("written package does not validate:\n  " + "\n  ".join(left))
    print(f"init_package: wrote {a.out} ({len(keep)} tensors, {a.dtype})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
