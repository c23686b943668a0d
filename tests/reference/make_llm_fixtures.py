#!/usr/bin/env python3
"""Create tiny random Llama / Qwen3 checkpoints and transformers reference outputs.

Usage:
    python3 tests/reference/make_llm_fixtures.py --out tests/data/llm
    python3 tests/reference/make_llm_fixtures.py --out tests/data/llm --verify-only

Every fixture directory is removed and rewritten. Seeds are fixed and torch runs
single-threaded, so a rerun with the same torch/transformers versions reproduces
the files bit for bit. See tests/reference/README.md for the key layout of
reference.safetensors.
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

MIN_MARGIN = 1e-2  # greedy top1 - top2 logit margin required at every step (brief: > 1e-3)
PACKED_LENS = (5, 1, 9)
PACKED_LAST_POS = 16  # right-aligned positions: last token of every segment at 16
SINGLE_T = 12
EMBD_T = 10
EMBD_ROWS = (3, 9)
PROMPT_LEN = 7
GREEDY_N = 32
MIN_DISTINCT = 12  # greedy continuation must not collapse into one repeated token

COMMON = dict(
    vocab_size=256,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    initializer_range=0.2,
)

FIXTURES = [
    dict(name="llama_gqa_f32", family="llama", dtype="f32", seed=1001,
         cfg=dict(num_key_value_heads=2, intermediate_size=128, rope_theta=1e4,
                  tie_word_embeddings=False, rms_norm_eps=1e-5)),
    dict(name="llama_mha_bf16_tied", family="llama", dtype="bf16", seed=1002,
         cfg=dict(num_key_value_heads=4, intermediate_size=176, rope_theta=1e4,
                  tie_word_embeddings=True, rms_norm_eps=1e-5)),
    dict(name="llama_sharded", family="llama", dtype="f32", seed=1003, shard="100KB",
         cfg=dict(num_key_value_heads=2, intermediate_size=128, rope_theta=1e6,
                  tie_word_embeddings=False, rms_norm_eps=1e-5)),
    dict(name="qwen3_gqa_f32", family="qwen3", dtype="f32", seed=1004,
         cfg=dict(num_key_value_heads=2, head_dim=32, intermediate_size=128, rope_theta=1e6,
                  tie_word_embeddings=False, rms_norm_eps=1e-6)),
    dict(name="qwen3_tied_bf16", family="qwen3", dtype="bf16", seed=1005,
         cfg=dict(num_key_value_heads=2, head_dim=16, intermediate_size=160, rope_theta=1e4,
                  tie_word_embeddings=True, rms_norm_eps=1e-6)),
]

CLASSES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen3": (Qwen3Config, Qwen3ForCausalLM)}


def make_config(fx):
    cfg_cls, _ = CLASSES[fx["family"]]
    kw = dict(COMMON)
    kw.update(fx["cfg"])
    return cfg_cls(**kw)


def create_checkpoint(fx, seed, out_dir):
    cfg_cls, model_cls = CLASSES[fx["family"]]
    config = make_config(fx)
    torch.manual_seed(seed)
    model = model_cls(config).float()
    with torch.no_grad():
        # Non-trivial RMSNorm weights (incl. Qwen3 q_norm/k_norm), so a missing or
        # misplaced norm weight shows up in the comparison.
        g = torch.Generator().manual_seed(seed + 17)
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
    if fx["dtype"] == "bf16":
        model = model.to(torch.bfloat16)
    kw = {}
    if "shard" in fx:
        kw["max_shard_size"] = fx["shard"]
    model.save_pretrained(out_dir, **kw)


def load_reference_model(fx, out_dir):
    _, model_cls = CLASSES[fx["family"]]
    model, info = model_cls.from_pretrained(
        out_dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k != "error_msgs"}
    if bad or info.get("error_msgs"):
        raise RuntimeError(f"{fx['name']}: checkpoint did not load cleanly: {info}")
    model.eval()
    for p in model.parameters():
        assert p.dtype == torch.float32
    return model


@torch.no_grad()
def run_segment(model, ids=None, embeds=None, pos=None):
    """One segment, batch 1, explicit positions. Returns (hidden (T,H), logits (T,V))."""
    kw = {}
    if embeds is not None:
        kw["inputs_embeds"] = embeds.unsqueeze(0)
        t = embeds.shape[0]
    else:
        kw["input_ids"] = ids.long().unsqueeze(0)
        t = ids.shape[0]
    pos = pos.long().unsqueeze(0)
    # An explicit all-ones mask keeps transformers from guessing packed sequences
    # from position_ids; attention is then plain causal over the segment.
    mask = torch.ones(1, t, dtype=torch.long)
    out = model.model(position_ids=pos, attention_mask=mask, use_cache=False, **kw)
    hidden = out.last_hidden_state[0]
    logits = model.lm_head(hidden)
    return hidden.float().contiguous(), logits.float().contiguous()


def i32(x):
    return torch.as_tensor(x).to(torch.int32).contiguous()


@torch.no_grad()
def compute_reference(model, config, seed):
    g = torch.Generator().manual_seed(seed + 101)
    V, H = config.vocab_size, config.hidden_size
    ref = {}

    # single
    ids = torch.randint(3, V, (SINGLE_T,), generator=g)
    pos = torch.arange(SINGLE_T)
    h, lg = run_segment(model, ids=ids, pos=pos)
    ref.update({"single.ids": i32(ids), "single.pos": i32(pos),
                "single.seg": i32(torch.zeros(SINGLE_T)), "single.is_embd": i32(torch.zeros(SINGLE_T)),
                "single.hidden": h, "single.logits": lg})

    # packed: segments run alone with right-aligned positions, then concatenated
    ids_l, pos_l, seg_l, h_l, lg_l = [], [], [], [], []
    for s, L in enumerate(PACKED_LENS):
        sid = torch.randint(3, V, (L,), generator=g)
        spos = torch.arange(PACKED_LAST_POS - L + 1, PACKED_LAST_POS + 1)
        h, lg = run_segment(model, ids=sid, pos=spos)
        ids_l.append(sid); pos_l.append(spos); seg_l.append(torch.full((L,), s))
        h_l.append(h); lg_l.append(lg)
    T = sum(PACKED_LENS)
    ref.update({"packed.ids": i32(torch.cat(ids_l)), "packed.pos": i32(torch.cat(pos_l)),
                "packed.seg": i32(torch.cat(seg_l)), "packed.is_embd": i32(torch.zeros(T)),
                "packed.hidden": torch.cat(h_l).contiguous(), "packed.logits": torch.cat(lg_l).contiguous()})

    # embd: rows EMBD_ROWS carry injected vectors instead of token embeddings
    ids = torch.randint(3, V, (EMBD_T,), generator=g)
    is_embd = torch.zeros(EMBD_T, dtype=torch.int32)
    embd = torch.zeros(EMBD_T, H)
    for r in EMBD_ROWS:
        ids[r] = 0
        is_embd[r] = 1
        embd[r] = torch.randn(H, generator=g) * 0.5
    x = model.model.embed_tokens(ids.long()).clone()
    for r in EMBD_ROWS:
        x[r] = embd[r]
    pos = torch.arange(EMBD_T)
    h, lg = run_segment(model, embeds=x, pos=pos)
    ref.update({"embd.ids": i32(ids), "embd.pos": i32(pos), "embd.seg": i32(torch.zeros(EMBD_T)),
                "embd.is_embd": i32(is_embd), "embd.embd": embd.contiguous(),
                "embd.hidden": h, "embd.logits": lg})

    # greedy: full forward without cache at every step, never stops at eos
    prompt = torch.randint(3, V, (PROMPT_LEN,), generator=g)
    seq = prompt.clone()
    toks, margins = [], []
    for _ in range(GREEDY_N):
        _, lg = run_segment(model, ids=seq, pos=torch.arange(seq.shape[0]))
        last = lg[-1]
        top2 = torch.topk(last, 2).values
        margins.append(float(top2[0] - top2[1]))
        nxt = torch.argmax(last)
        toks.append(int(nxt))
        seq = torch.cat([seq, nxt.view(1)])
    ref.update({"greedy.prompt": i32(prompt), "greedy.tokens": i32(torch.tensor(toks))})
    return ref, min(margins), toks


@torch.no_grad()
def check_with_generate(model, prompt, toks):
    """Cross-check the no-cache greedy loop against generate() with the KV cache."""
    out = model.generate(prompt.long().unsqueeze(0), attention_mask=torch.ones(1, prompt.shape[0], dtype=torch.long),
                         do_sample=False, max_new_tokens=GREEDY_N, min_new_tokens=GREEDY_N,
                         eos_token_id=None, pad_token_id=0)
    got = out[0, prompt.shape[0]:].tolist()
    if got != toks:
        raise RuntimeError(f"generate() disagrees with manual greedy loop: {got} vs {toks}")


def build_fixture(fx, root):
    out_dir = os.path.join(root, fx["name"])
    for attempt in range(20):
        seed = fx["seed"] + 1000 * attempt
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.makedirs(out_dir)
        create_checkpoint(fx, seed, out_dir)
        model = load_reference_model(fx, out_dir)
        ref, margin, toks = compute_reference(model, model.config, seed)
        if margin > MIN_MARGIN and len(set(toks)) >= MIN_DISTINCT:
            break
        print(f"  {fx['name']}: seed {seed}: min greedy margin {margin:.2e}, "
              f"{len(set(toks))} distinct tokens; reseeding")
    else:
        raise RuntimeError(f"{fx['name']}: no seed gave greedy margins > {MIN_MARGIN}")
    assert margin > MIN_MARGIN and len(set(toks)) >= MIN_DISTINCT
    check_with_generate(model, ref["greedy.prompt"], toks)
    save_file(ref, os.path.join(out_dir, "reference.safetensors"), metadata={"seed": str(seed)})
    print(f"  {fx['name']}: seed {seed}, min greedy margin {margin:.3f}, tokens {toks[:8]}...")


# ---------------------------------------------------------------------------
# Independent numpy re-implementation used to verify the fixtures: it runs the
# packed case as ONE flat batch with a segment-block-diagonal causal mask, the way
# the C engine does, and must agree with the per-segment transformers outputs.

def load_weights(d):
    w = {}
    files = [f for f in sorted(os.listdir(d)) if f.startswith("model") and f.endswith(".safetensors")]
    for f in files:
        with safe_open(os.path.join(d, f), "pt") as sf:
            for k in sf.keys():
                w[k] = sf.get_tensor(k).float().numpy().astype(np.float64)
    return w


def np_forward(d, cfg, w, ids, pos, seg, is_embd, embd):
    H = cfg["hidden_size"]; nh = cfg["num_attention_heads"]; nkv = cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nh
    eps = cfg["rms_norm_eps"]
    rp = cfg.get("rope_parameters") or {}
    theta = rp.get("rope_theta", cfg.get("rope_theta"))
    qwen = cfg["model_type"] == "qwen3"

    def rms(x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g

    def rope(x):  # x (T, heads, hd)
        inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
        ang = pos[:, None].astype(np.float64) * inv[None, :]
        ang = np.concatenate([ang, ang], -1)[:, None, :]
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
        return x * np.cos(ang) + np.concatenate([-x2, x1], -1) * np.sin(ang)

    T = len(ids)
    x = w["model.embed_tokens.weight"][ids]
    x[is_embd == 1] = embd[is_embd == 1]
    allowed = (seg[:, None] == seg[None, :]) & (np.arange(T)[None, :] <= np.arange(T)[:, None])
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(T, nh, hd)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(T, nkv, hd)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(T, nkv, hd)
        if qwen:
            q = rms(q, w[p + "self_attn.q_norm.weight"])
            k = rms(k, w[p + "self_attn.k_norm.weight"])
        q, k = rope(q), rope(k)
        rep = nh // nkv
        k = np.repeat(k, rep, axis=1); v = np.repeat(v, rep, axis=1)
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd)
        s = np.where(allowed[None], s, -np.inf)
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", s, v).reshape(T, nh * hd)
        x = x + o @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        gt = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + ((gt / (1 + np.exp(-gt))) * up) @ w[p + "mlp.down_proj.weight"].T
    hid = rms(x, w["model.norm.weight"])
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"]) if not cfg["tie_word_embeddings"] \
        else w["model.embed_tokens.weight"]
    return hid, hid @ head.T


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def verify_fixture(root, name):
    d = os.path.join(root, name)
    cfg = json.load(open(os.path.join(d, "config.json")))
    w = load_weights(d)
    with safe_open(os.path.join(d, "reference.safetensors"), "np") as sf:
        ref = {k: sf.get_tensor(k) for k in sf.keys()}
    worst = 0.0
    for case in ("single", "packed", "embd"):
        embd = ref.get(f"{case}.embd", np.zeros((len(ref[f"{case}.ids"]), cfg["hidden_size"]), np.float32))
        hid, lg = np_forward(d, cfg, w, ref[f"{case}.ids"], ref[f"{case}.pos"], ref[f"{case}.seg"],
                             ref[f"{case}.is_embd"], embd.astype(np.float64))
        for kind, got in (("hidden", hid), ("logits", lg)):
            e = rel_err(got, ref[f"{case}.{kind}"].astype(np.float64))
            worst = max(worst, e)
            if e > 1e-4:
                raise RuntimeError(f"{name} {case}.{kind}: numpy vs reference rel err {e:.2e}")
    # greedy tokens with the numpy model (argmax of the last row each step)
    seq = list(ref["greedy.prompt"])
    for t in ref["greedy.tokens"]:
        n = len(seq)
        _, lg = np_forward(d, cfg, w, np.array(seq), np.arange(n), np.zeros(n, int), np.zeros(n, int),
                           np.zeros((n, cfg["hidden_size"])))
        nxt = int(np.argmax(lg[-1]))
        if nxt != int(t):
            raise RuntimeError(f"{name} greedy: numpy {nxt} vs reference {int(t)}")
        seq.append(nxt)
    print(f"  {name}: numpy packed/single/embd max rel err {worst:.2e}, greedy tokens identical")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/data/llm", help="fixture root directory")
    ap.add_argument("--verify-only", action="store_true", help="only re-verify existing fixtures")
    ap.add_argument("--no-verify", action="store_true", help="skip the numpy verification")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    if not args.verify_only:
        os.makedirs(args.out, exist_ok=True)
        for fx in FIXTURES:
            build_fixture(fx, args.out)
    if not args.no_verify:
        for fx in FIXTURES:
            verify_fixture(args.out, fx["name"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
