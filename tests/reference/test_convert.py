#!/usr/bin/env python3
"""Tests for tools/convert_checkpoint.py and tools/init_package.py on tiny fake inputs.

    python3 tests/reference/test_convert.py      # prints "N passed, M failed"; exit 1 on failure

Builds tiny fake Hugging Face dirs (Llama item/user, Qwen3 creative, tokenizers) and a fake
zero3_merge_states.pt with the reference key layout (MODEL_SPEC §2, written out here
independently of tools/hllm_package.py), runs the CLIs as subprocesses and checks the packages.
The parquet template path needs pyarrow (tools/requirements.txt installs it); if it is missing the
test only checks that the converter refuses --parquet with a clear message.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import traceback

import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOOLS = os.path.join(ROOT, "tools")
sys.path.insert(0, TOOLS)
import hllm_package as hp  # noqa: E402

HI, HC, VI, VC = 32, 48, 40, 50
TEMPLATES = {"user_prompt": "Predict the next book:", "prompt1": "Rewrite for {this} reader:\n",
             "prompt2": "Title: {title}\nDesc ({{braces}}): {description}\nNew:", "profile_prompt": "Profile:"}
RESULTS = []


def check(name, fn):
    try:
        fn()
        RESULTS.append((name, None))
        print(f"PASS {name}")
    except Exception as ex:  # noqa: BLE001
        RESULTS.append((name, ex))
        print(f"FAIL {name}: {ex}")
        traceback.print_exc()


def wjson(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)


# ---------------------------------------------------------------------------
# fake inputs

def llama_cfg(layers=2):
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": HI,
            "intermediate_size": 40, "num_hidden_layers": layers, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": VI, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2}


def qwen_cfg():
    return {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "hidden_size": HC,
            "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "vocab_size": VC, "rms_norm_eps": 1e-6,
            "rope_theta": 1e6, "tie_word_embeddings": False, "eos_token_id": VC - 3}


def tokenizer_json(vocab, added):
    return {"version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True} for c, i in added],
            "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": None,
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": vocab, "merges": []}}


def make_hf_dirs(root):
    item, user, cre = (os.path.join(root, d) for d in ("tinyllama", "tinyllama_user", "qwen3"))
    wjson(os.path.join(item, "config.json"), llama_cfg())
    wjson(os.path.join(user, "config.json"), llama_cfg())
    wjson(os.path.join(cre, "config.json"), qwen_cfg())
    wjson(os.path.join(cre, "generation_config.json"), {"eos_token_id": [VC - 1, VC - 3], "pad_token_id": VC - 3})
    letters = "abcdefghijklmnopqrstuvwxyz▁ "
    iv = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for ch in letters:
        iv[ch] = len(iv)
    wjson(os.path.join(item, "tokenizer.json"), tokenizer_json(iv, [("<unk>", 0), ("<s>", 1), ("</s>", 2)]))
    wjson(os.path.join(item, "tokenizer_config.json"), {"add_bos_token": False, "eos_token": "</s>"})
    cv = {ch: i for i, ch in enumerate(letters)}
    wjson(os.path.join(cre, "tokenizer.json"), tokenizer_json(
        cv, [("<|endoftext|>", VC - 3), ("<|im_start|>", VC - 2), ("<|im_end|>", VC - 1)]))
    wjson(os.path.join(cre, "tokenizer_config.json"), {"add_bos_token": False, "eos_token": "<|im_end|>",
                                                       "pad_token": "<|endoftext|>"})
    return item, user, cre


def llama_keys(p, cfg, qwen=False):
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg.get("head_dim", H // cfg["num_attention_heads"])
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    k = {f"{p}model.embed_tokens.weight": (V, H), f"{p}model.norm.weight": (H,), f"{p}lm_head.weight": (V, H)}
    for n in range(cfg["num_hidden_layers"]):
        b = f"{p}model.layers.{n}."
        k.update({b + "self_attn.q_proj.weight": (q, H), b + "self_attn.k_proj.weight": (kv, H),
                  b + "self_attn.v_proj.weight": (kv, H), b + "self_attn.o_proj.weight": (H, q),
                  b + "mlp.gate_proj.weight": (I, H), b + "mlp.up_proj.weight": (I, H),
                  b + "mlp.down_proj.weight": (H, I), b + "input_layernorm.weight": (H,),
                  b + "post_attention_layernorm.weight": (H,)})
        if qwen:
            k.update({b + "self_attn.q_norm.weight": (hd,), b + "self_attn.k_norm.weight": (hd,)})
    return k


def reference_layout(cls_dim=HI):
    """The merged state dict's keys and shapes (MODEL_SPEC §2), written out independently; the
    match head's width cls_dim is H_i in the reference, any size in a trained checkpoint."""
    k = {}
    k.update(llama_keys("item_llm.", llama_cfg()))
    k.update(llama_keys("user_llm.", llama_cfg()))
    k.update(llama_keys("creative_llm.", qwen_cfg(), qwen=True))
    k.update({"item_emb_tokens": (1, 1, HI), "emb_tokens": (1, 1, HI), "user_projector.weight": (HC, HI),
              "user_profile_projector.weight": (HC, HI), "user_profile_align_projector.weight": (HC, HI),
              "align_temp": (), "dec_emb_tokens": (1, 1, HC), "user_tower.weight": (cls_dim, HC),
              "item_tower.weight": (cls_dim, HI)})
    D, C = cls_dim, 3 * cls_dim
    for b in (0, 1):
        p = f"cls_tower.mixer_blocks.{b}."
        k.update({p + "token_norm.weight": (D,), p + "token_norm.bias": (D,),
                  p + "token_forward.net.0.weight": (8, 2), p + "token_forward.net.0.bias": (8,),
                  p + "token_forward.net.3.weight": (2, 8), p + "token_forward.net.3.bias": (2,),
                  p + "channel_mix.0.weight": (D,), p + "channel_mix.0.bias": (D,),
                  p + "channel_mix.1.net.0.weight": (C, D), p + "channel_mix.1.net.0.bias": (C,),
                  p + "channel_mix.1.net.3.weight": (D, C), p + "channel_mix.1.net.3.bias": (D,)})
    k.update({"cls_tower.layer_norm.weight": (D,), "cls_tower.layer_norm.bias": (D,),
              "cls_tower.mlp_head.0.weight": (1, D), "cls_tower.mlp_head.0.bias": (1,)})
    return k


def fake_state(seed=0, cls_dim=HI):
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(s, generator=g) * 3 for k, s in sorted(reference_layout(cls_dim).items())}
    return sd


def run(tool, *args):
    """The CLI as a subprocess (what users run)."""
    p = subprocess.run([sys.executable, os.path.join(TOOLS, tool), *args], capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def run_inproc(tool, *args):
    """The same CLI entry point in this process (error cases: saves a torch import per case)."""
    import contextlib
    import importlib
    import io
    mod = importlib.import_module(tool[:-3])
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
        rc = mod.main(list(args))
    return rc, buf.getvalue()


def load_pkg_weights(pkg):
    m = json.load(open(os.path.join(pkg, "creator.json")))
    w = m["weights"]
    if w.endswith(".json"):
        out = {}
        for f in sorted(set(json.load(open(os.path.join(pkg, w)))["weight_map"].values())):
            out.update(load_file(os.path.join(pkg, f)))
        return m, out
    return m, load_file(os.path.join(pkg, w))


# ---------------------------------------------------------------------------

def main():
    t = tempfile.mkdtemp(prefix="hllm_convert_test_")
    try:
        tests(t)
    finally:
        shutil.rmtree(t, ignore_errors=True)
    failed = sum(1 for _, e in RESULTS if e)
    print(f"{len(RESULTS) - failed} passed, {failed} failed")
    return 1 if failed else 0


def tests(t):
    item, user, cre = make_hf_dirs(t)
    sd = fake_state()
    sd_with_buf = dict(sd)
    sd_with_buf["item_llm.model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.rand(HI // 8)
    ckpt = os.path.join(t, "zero3_merge_states.pt")
    torch.save(sd_with_buf, ckpt)
    tmpl = os.path.join(t, "templates.json")
    wjson(tmpl, TEMPLATES)
    cent = torch.randn(5, HC, generator=torch.Generator().manual_seed(3))
    cpath = os.path.join(t, "cluster_5.pt")
    torch.save(cent, cpath)
    base = ["--checkpoint", ckpt, "--item-llm", item, "--creative-llm", cre, "--templates", tmpl]

    def conv_f32():
        out = os.path.join(t, "pkg_f32")
        rc, log = run("convert_checkpoint.py", *base, "--dtype", "f32", "--centroids", cpath, "--out", out)
        assert rc == 0, log
        assert "dropping item_llm.model.layers.0.self_attn.rotary_emb.inv_freq" in log, log
        assert hp.validate_package(out) == []
        m, w = load_pkg_weights(out)
        assert set(w) == set(sd), sorted(set(w) ^ set(sd))[:5]
        for k, v in sd.items():
            assert w[k].dtype == torch.float32 and w[k].shape == v.shape and torch.equal(w[k], v), k
        assert m["weights"] == "model.safetensors"
        expect = {"format": "hllm-creator-package", "version": 1, "item_llm": "item_llm", "user_llm": "user_llm",
                  "creative_llm": "creative_llm", "item_tokenizer": "item_tokenizer",
                  "creative_tokenizer": "creative_tokenizer", "max_history": 50, "max_item_tokens": 64,
                  "max_prompt_tokens": 4096, "title_max_chars": 768, "description_max_chars": 4096,
                  "slot_token_id": 0, "templates": TEMPLATES, "creative_eos_ids": [VC - 1, VC - 3],
                  "cluster": {"centroids": "clusters.safetensors", "assign": "ip"},
                  "sampling": {"temperature": 0.8, "top_k": 50, "top_p": 0.95, "max_new_tokens": 128}}
        for k, v in expect.items():
            assert m[k] == v, (k, m[k], v)
        c = load_file(os.path.join(out, "clusters.safetensors"))["centroids"]
        assert c.dtype == torch.float32 and torch.equal(c, cent)
        for d, src in (("item_llm", item), ("user_llm", item), ("creative_llm", cre)):
            assert json.load(open(os.path.join(out, d, "config.json"))) == json.load(open(os.path.join(src, "config.json")))
        assert os.path.exists(os.path.join(out, "creative_llm", "generation_config.json"))
        for d, src in (("item_tokenizer", item), ("creative_tokenizer", cre)):
            for f in ("tokenizer.json", "tokenizer_config.json"):
                assert open(os.path.join(out, d, f), "rb").read() == open(os.path.join(src, f), "rb").read()
    check("convert f32 single file, JSON templates, centroids", conv_f32)

    def conv_bf16_sharded():
        out = os.path.join(t, "pkg_bf16")
        rc, log = run("convert_checkpoint.py", *base, "--user-llm", user, "--dtype", "bf16",
                      "--shard-size", "20KB", "--assign", "cosine", "--out", out)
        assert rc == 0, log
        assert hp.validate_package(out) == []
        m, w = load_pkg_weights(out)
        assert m["weights"] == "model.safetensors.index.json"
        idx = json.load(open(os.path.join(out, m["weights"])))
        shards = sorted(set(idx["weight_map"].values()))
        assert len(shards) > 3, shards
        for s in shards:
            assert os.path.getsize(os.path.join(out, s)) <= 20 * 1024 + 4096 or \
                len([k for k, v in idx["weight_map"].items() if v == s]) == 1, s
        assert set(w) == set(sd)
        for k, v in sd.items():
            got = w[k]
            assert got.dtype == torch.bfloat16 and got.shape == v.shape, k
            assert torch.equal(got, v.to(torch.bfloat16)), k  # round-to-nearest-even of the fp32 source
            assert torch.all((got.float() - v).abs() <= v.abs() * 2 ** -8), k
        assert m["cluster"] == {"centroids": None, "assign": "cosine"}
    check("convert bf16 sharded, separate user dir", conv_bf16_sharded)

    def conv_from_safetensors():
        st = os.path.join(t, "merged.safetensors")
        save_file(sd, st)
        out = os.path.join(t, "pkg_st")
        rc, log = run_inproc("convert_checkpoint.py", "--checkpoint", st, *base[2:], "--dtype", "f32", "--out", out)
        assert rc == 0, log
        _, w = load_pkg_weights(out)
        assert set(w) == set(sd) and all(torch.equal(w[k], v) for k, v in sd.items())
    check("convert from a .safetensors checkpoint", conv_from_safetensors)

    def conv_cls_dim():
        # a match head narrower than H_i (cls_dim 24 != 32): converts, every tensor kept as is
        sd24 = fake_state(seed=7, cls_dim=24)
        p = os.path.join(t, "cls24.pt")
        torch.save(sd24, p)
        out = os.path.join(t, "pkg_cls24")
        rc, log = run_inproc("convert_checkpoint.py", "--checkpoint", p, *base[2:], "--dtype", "f32", "--out", out)
        assert rc == 0, log
        assert hp.validate_package(out) == []
        _, w = load_pkg_weights(out)
        assert set(w) == set(sd24) and all(torch.equal(w[k], v) for k, v in sd24.items())
        assert tuple(w["user_tower.weight"].shape) == (24, HC) and tuple(w["item_tower.weight"].shape) == (24, HI)
        shapes = {k: tuple(v.shape) for k, v in sd24.items()}
        assert hp.cls_dim_of(shapes, HI) == 24 and hp.cls_dim_of({}, HI) == HI
        # towers that do not fit the cls_tower's width are refused, naming the tower
        bad24 = dict(sd24, **{"item_tower.weight": torch.zeros(HI, HI)})
        p2 = os.path.join(t, "cls24_bad.pt")
        torch.save(bad24, p2)
        rc, log = run_inproc("convert_checkpoint.py", "--checkpoint", p2, *base[2:], "--out", out + "_bad")
        assert rc == 1 and "wrong shape for item_tower.weight: [32, 32], expected [24, 32]" in log, log
        # towers without a cls_tower: cls_dim from user_tower, item_tower must agree
        towers = {k: v for k, v in sd24.items() if not k.startswith("cls_tower.")}
        p3 = os.path.join(t, "cls24_towers.pt")
        torch.save(towers, p3)
        rc, log = run_inproc("convert_checkpoint.py", "--checkpoint", p3, *base[2:], "--out", out + "_towers")
        assert rc == 0, log
    check("convert a checkpoint with cls_dim != H_i (cls_dim from the tensors)", conv_cls_dim)

    def bad(name, mutate, needle, extra=()):
        def f():
            s = dict(sd)
            mutate(s)
            p = os.path.join(t, f"bad_{name}.pt")
            torch.save(s, p)
            out = os.path.join(t, f"out_bad_{name}")
            rc, log = run_inproc("convert_checkpoint.py", "--checkpoint", p, *base[2:], *extra, "--out", out)
            assert rc == 1, (rc, log)
            for n in ([needle] if isinstance(needle, str) else needle):
                assert n in log, f"expected {n!r} in:\n{log}"
            assert not os.path.exists(out), "no package may be written on error"
        check(f"error: {name}", f)

    bad("missing key", lambda s: s.pop("user_projector.weight"),
        "missing tensor user_projector.weight (expected shape [48, 32])")
    bad("missing layer", lambda s: s.pop("creative_llm.model.layers.1.self_attn.k_norm.weight"),
        "missing tensor creative_llm.model.layers.1.self_attn.k_norm.weight")
    bad("wrong shape", lambda s: s.__setitem__("emb_tokens", torch.zeros(1, 1, HI + 1)),
        "wrong shape for emb_tokens: [1, 1, 33], expected [1, 1, 32]")
    bad("wrong LLM shape", lambda s: s.__setitem__("item_llm.model.embed_tokens.weight", torch.zeros(VI + 1, HI)),
        "wrong shape for item_llm.model.embed_tokens.weight: [41, 32], expected [40, 32]")
    bad("unexpected prefix", lambda s: s.__setitem__("id_embedding.weight", torch.zeros(3, 3)),
        "unexpected tensor id_embedding.weight: prefix 'id_embedding'")
    bad("unexpected layer", lambda s: s.__setitem__("user_llm.model.layers.7.mlp.up_proj.weight", torch.zeros(3)),
        "unexpected tensor user_llm.model.layers.7.mlp.up_proj.weight")
    bad("cls_tower key", lambda s: s.pop("cls_tower.mixer_blocks.1.channel_mix.0.bias"),
        "missing training-only tensor cls_tower.mixer_blocks.1.channel_mix.0.bias")
    bad("all problems listed", lambda s: (s.pop("item_emb_tokens"), s.pop("creative_llm.lm_head.weight")),
        ["2 problem(s)", "missing tensor item_emb_tokens", "missing tensor creative_llm.lm_head.weight"])

    def bad_template():
        p = os.path.join(t, "bad_templates.json")
        wjson(p, dict(TEMPLATES, prompt2="Title: {title} {desc}"))
        rc, log = run_inproc("convert_checkpoint.py", *base[:6], "--templates", p, "--out", os.path.join(t, "o_bt"))
        assert rc == 1 and "'{desc}'" in log and "no {description}" in log, log
    check("error: bad prompt2 template", bad_template)

    def bad_centroids():
        p = os.path.join(t, "bad_cent.pt")
        torch.save(torch.zeros(4, HC + 1), p)
        rc, log = run_inproc("convert_checkpoint.py", *base, "--centroids", p, "--out", os.path.join(t, "o_bc"))
        assert rc == 1 and "expected (k, 48)" in log, log
    check("error: centroid width", bad_centroids)

    def nonempty_out():
        out = os.path.join(t, "pkg_f32")  # written above
        rc, log = run_inproc("convert_checkpoint.py", *base, "--out", out)
        assert rc == 1 and "not empty" in log, log
    check("error: output dir not empty", nonempty_out)

    # -- prompt2 templating (in-process; the parquet reader is a thin wrapper around it)
    def p2_roundtrip():
        title = "Brave {New} World"
        desc = "x" * 5000
        filled = hp.render_prompt2("Original: {title}\nAbout {{it}}: {description}\nNew:", title, desc)
        assert filled == "Original: Brave {New} World\nAbout {it}: " + "x" * 4096 + "\nNew:"
        tm = hp.prompt2_to_template(filled, title, desc)
        assert tm == "Original: {title}\nAbout {{it}}: {description}\nNew:", tm
        assert hp.check_prompt2(tm) == []
        tm = hp.prompt2_to_template("T: Dune\nD: None\n", "Dune", None)
        assert tm == "T: {title}\nD: {description}\n", tm
        assert hp.render_prompt2(tm, "Dune", None) == "T: Dune\nD: None\n"
        long_title = "é" * 800
        tm = hp.prompt2_to_template("T: " + "é" * 768 + "\nD: d\n", long_title, "d")
        assert tm == "T: {title}\nD: {description}\n", tm
        for args, needle in ((("T: Dune\nD: x\n", "Dune Messiah", "x"), "original_title"),
                             (("T: Dune\nD: x\n", "Dune", "spice"), "original_description"),
                             (("T: Dune\nD: x\n", "", "x"), "empty")):
            try:
                hp.prompt2_to_template(*args)
            except hp.PackageError as ex:
                assert needle in str(ex), ex
            else:
                raise AssertionError(f"no error for {args}")
    check("prompt2 -> template (truncation, None, braces, not found)", p2_roundtrip)

    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet as pq
        have_pa = True
    except ImportError:
        have_pa = False

    if have_pa:
        def parquet():
            import pyarrow as pa
            desc = "A desc with {braces} " + "y" * 4100
            p2 = "Original title: Dune\nDesc: " + desc[:4096] + "\nNew title:\n"
            tbl = pa.table({"prompt1": ["P1 from parquet\n", "x"], "prompt2": [p2, "x"],
                            "original_title": ["Dune", "x"], "original_description": [desc, "x"],
                            "response": ["r", "r"]})
            pp = os.path.join(t, "train.parquet")
            pq.write_table(tbl, pp)
            out = os.path.join(t, "pkg_pq")
            rc, log = run("convert_checkpoint.py", *base, "--parquet", pp, "--parquet-row", "0", "--out", out)
            assert rc == 0, log
            m = json.load(open(os.path.join(out, "creator.json")))
            assert m["templates"]["prompt1"] == "P1 from parquet\n"
            assert m["templates"]["prompt2"] == "Original title: {title}\nDesc: {description}\nNew title:\n"
            assert m["templates"]["user_prompt"] == TEMPLATES["user_prompt"]
            # row 1: prompt2 "x" cannot hold both the title "x" and the description "x" after it
            rc, log = run("convert_checkpoint.py", *base, "--parquet", pp, "--parquet-row", "1",
                          "--out", os.path.join(t, "pkg_pq1"))
            assert rc == 1 and "not found after the title" in log, log
        check("templates from a parquet row", parquet)
    else:
        def parquet_missing():
            rc, log = run_inproc("convert_checkpoint.py", *base, "--parquet", os.path.join(t, "none.parquet"),
                          "--out", os.path.join(t, "pkg_pq"))
            assert rc == 1 and "needs pyarrow" in log, log
        check("parquet without pyarrow: clear error (pyarrow not installed, parquet path untested)",
              parquet_missing)

    # -- init_package
    def hf_weights():
        for d, prefix in ((item, "item_llm."), (user, "user_llm."), (cre, "creative_llm.")):
            save_file({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)},
                      os.path.join(d, "model.safetensors"))

    def init_pkg():
        hf_weights()
        outs = []
        for n, runner in ((1, run), (2, run_inproc)):
            out = os.path.join(t, f"init{n}")
            rc, log = runner("init_package.py", "--item-llm", item, "--user-llm", user, "--creative-llm", cre,
                          "--templates", tmpl, "--seed", "5", "--out", out)
            assert rc == 0, log
            outs.append(out)
        assert hp.validate_package(outs[0]) == []
        m, w = load_pkg_weights(outs[0])
        layout = reference_layout()
        assert set(w) == set(layout), sorted(set(w) ^ set(layout))
        for k, s in layout.items():
            assert tuple(w[k].shape) == s, (k, w[k].shape, s)
            if k.startswith(("item_llm.", "user_llm.", "creative_llm.")):
                assert torch.equal(w[k], sd[k]), k
        assert abs(float(w["align_temp"]) - math.log(20)) < 1e-6
        for k in ("item_emb_tokens", "emb_tokens", "dec_emb_tokens"):
            assert 0.01 < float(w[k].std()) < 0.04, (k, float(w[k].std()))
        for k, fan_in in (("user_projector.weight", HI), ("user_tower.weight", HC), ("item_tower.weight", HI)):
            assert float(w[k].abs().max()) <= 1 / math.sqrt(fan_in) + 1e-7, k
        assert torch.equal(w["cls_tower.layer_norm.weight"], torch.ones(HI))
        _, w2 = load_pkg_weights(outs[1])
        assert all(torch.equal(w[k], w2[k]) for k in w), "init_package is not deterministic"
        assert open(os.path.join(outs[0], "model.safetensors"), "rb").read() == \
            open(os.path.join(outs[1], "model.safetensors"), "rb").read()
        assert m["creative_eos_ids"] == [VC - 1, VC - 3] and m["templates"] == TEMPLATES
    check("init_package: keys, shapes, init, determinism", init_pkg)

    def init_pkg_cls_dim():
        out = os.path.join(t, "init_cls20")
        rc, log = run_inproc("init_package.py", "--item-llm", item, "--user-llm", user, "--creative-llm", cre,
                             "--templates", tmpl, "--cls-dim", "20", "--out", out)
        assert rc == 0, log
        assert hp.validate_package(out) == []
        _, w = load_pkg_weights(out)
        layout = reference_layout(cls_dim=20)
        for k, s in layout.items():
            if not k.startswith(("item_llm.", "user_llm.", "creative_llm.")):
                assert tuple(w[k].shape) == s, (k, w[k].shape, s)
    check("init_package --cls-dim 20: user_tower (20, H_c), item_tower (20, H_i), cls_tower dim 20",
          init_pkg_cls_dim)


if __name__ == "__main__":
    sys.exit(main())
