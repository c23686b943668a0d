#!/usr/bin/env python3
"""Make the demo model's starting package from a synthetic benchmark directory (docs/DEMO.md).

    python3 tools/make_demo_package.py --data SYNTH_DIR --out PKG [--seed 0] [sizes...]

SYNTH_DIR is what tools/synth/generate.py wrote (train.jsonl, catalog.jsonl, templates.json).
This script
  1. trains two BPE tokenizers on the benchmark's text with `tokenizers`, the way
     tests/reference/make_creator_fixtures.py trains the tiny package's: a Llama-2 style item
     tokenizer (byte fallback, "▁" words) and a Qwen2 style byte-level creative tokenizer with
     <|endoftext|>, <|im_start|>, <|im_end|>. Corpus: every catalog title, every ad description,
     the training responses and the templates (nothing of the valid or test rows beyond the
     catalog titles and descriptions, which any deployment has);
  2. writes randomly initialized (seeded) Hugging Face dirs: a Llama item LLM, a Llama user LLM
     and a Qwen3 creative LLM (config.json + model.safetensors; no lm_head for item/user);
  3. calls tools/init_package.py on them with SYNTH_DIR/templates.json (or --templates), which
     adds the fresh heads and writes PKG (f32).

Deterministic for a seed (torch single-threaded). PKG must not exist or be empty.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def die(msg):
    print(f"make_demo_package: error: {msg}", file=sys.stderr)
    sys.exit(1)


def read_jsonl(path):
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError as ex:
                        die(f"{path}:{n}: not JSON ({ex.msg})")
    except OSError as ex:
        die(f"{path}: {ex.strerror}")
    return out


def corpus(data, templates):
    """Texts the tokenizers are trained on, in a fixed order."""
    cat = read_jsonl(os.path.join(data, "catalog.jsonl"))
    train = read_jsonl(os.path.join(data, "train.jsonl"))
    if not cat or not train:
        die(f"{data}: catalog.jsonl or train.jsonl is empty")
    titles = [b["title"] for b in cat]
    descs = [b["description"] for b in cat if b.get("description")]
    resp = [r["response"] for r in train]
    tpl = [templates[k] for k in sorted(templates)]
    tpl_filled = [templates["prompt2"].replace("{title}", t).replace("{description}", d)
                  for t, d in zip(titles[:50], descs[:50])] if "prompt2" in templates else []
    return titles, descs + resp + tpl + tpl_filled


QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def train_item_tokenizer(texts, vocab_size):
    """Llama-2 style: Prepend/Replace normalizer, BPE with byte fallback, no pre-tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 256, special_tokens=["<unk>", "<s>", "</s>"],
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    j = json.loads(tok.to_str())
    old = sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = 3 + b
    for t, _ in old:
        if t not in vocab:
            vocab[t] = len(vocab)
    j["model"]["vocab"] = vocab
    j["pre_tokenizer"] = None
    j["post_processor"] = None
    j["decoder"] = None
    j["added_tokens"] = [dict(id=i, content=c, single_word=False, lstrip=False, rstrip=False,
                              normalized=False, special=True) for c, i in (("<unk>", 0), ("<s>", 1), ("</s>", 2))]
    tok = Tokenizer.from_str(json.dumps(j))
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return tok


def train_creative_tokenizer(texts, vocab_size):
    """Qwen2 style byte-level BPE; <|endoftext|>, <|im_start|>, <|im_end|> after the base vocab."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, \
        processors, trainers
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 3, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False)
                            for s in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")])
    j = json.loads(tok.to_str())
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    j["pre_tokenizer"]["pretokenizers"][1] = dict(bl)
    j["decoder"] = dict(bl)
    j["post_processor"] = dict(bl)
    return Tokenizer.from_str(json.dumps(j))


def save_tokenizer(tok, d, cfg):
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")


def save_model(model, d, drop_lm_head):
    from safetensors.torch import save_file
    os.makedirs(d, exist_ok=True)
    model.config.save_pretrained(d)
    sd = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()
          if not (drop_lm_head and k == "lm_head.weight")}
    save_file(sd, os.path.join(d, "model.safetensors"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="tools/synth/generate.py output directory")
    ap.add_argument("--out", required=True, help="package directory to write (must not exist or be empty)")
    ap.add_argument("--templates", help="templates JSON (default: DATA/templates.json)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--item-vocab", type=int, default=1024)
    ap.add_argument("--creative-vocab", type=int, default=1536)
    ap.add_argument("--item-hidden", type=int, default=64)
    ap.add_argument("--item-layers", type=int, default=2)
    ap.add_argument("--user-hidden", type=int, default=64)
    ap.add_argument("--user-layers", type=int, default=2)
    ap.add_argument("--creative-hidden", type=int, default=128)
    ap.add_argument("--creative-layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4, help="attention heads of every LLM (kv heads: half)")
    ap.add_argument("--mlp-mult", type=int, default=2, help="intermediate_size = mult * hidden")
    ap.add_argument("--work", help="keep the intermediate HF dirs here (default: a temporary dir, removed)")
    a = ap.parse_args(argv)

    if os.path.exists(a.out) and (not os.path.isdir(a.out) or os.listdir(a.out)):
        die(f"{a.out}: exists and is not an empty directory")
    if not os.path.isdir(a.data):
        die(f"{a.data}: not a directory (run tools/synth/generate.py --out {a.data} first)")
    tpath = a.templates or os.path.join(a.data, "templates.json")
    try:
        with open(tpath, encoding="utf-8") as f:
            templates = json.load(f)
    except (OSError, json.JSONDecodeError) as ex:
        die(f"{tpath}: cannot read templates ({ex})")
    for h in (a.item_hidden, a.user_hidden, a.creative_hidden):
        if h % a.heads or (h // a.heads) % 2:
            die(f"hidden size {h} is not a multiple of 2 * --heads {a.heads}")

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM
    import init_package
    torch.set_num_threads(1)

    titles, rest = corpus(a.data, templates)
    item_texts = titles + [t.lower() for t in titles] + [templates.get("user_prompt", "")]
    item_tok = train_item_tokenizer(item_texts, a.item_vocab)
    cre_tok = train_creative_tokenizer(titles + rest, a.creative_vocab)
    eot, ime = cre_tok.token_to_id("<|endoftext|>"), cre_tok.token_to_id("<|im_end|>")
    eos_ids = [ime, eot]
    iv, cv = item_tok.get_vocab_size(), cre_tok.get_vocab_size()

    work = a.work or tempfile.mkdtemp(prefix="hllm-demo-")
    try:
        os.makedirs(work, exist_ok=True)
        save_tokenizer(item_tok, os.path.join(work, "item_llm"), {
            "add_bos_token": False, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
            "unk_token": "<unk>", "pad_token": "</s>", "clean_up_tokenization_spaces": False,
            "model_max_length": 2048, "tokenizer_class": "LlamaTokenizerFast"})
        save_tokenizer(cre_tok, os.path.join(work, "creative_llm"), {
            "add_bos_token": False, "add_prefix_space": False, "bos_token": None, "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>", "unk_token": None, "clean_up_tokenization_spaces": False,
            "model_max_length": 8192, "tokenizer_class": "Qwen2TokenizerFast"})

        def llama(h, layers):
            return LlamaConfig(vocab_size=iv, hidden_size=h, intermediate_size=a.mlp_mult * h,
                               num_hidden_layers=layers, num_attention_heads=a.heads,
                               num_key_value_heads=max(1, a.heads // 2), max_position_embeddings=256,
                               rms_norm_eps=1e-5, rope_theta=1e4, tie_word_embeddings=False,
                               initializer_range=0.02, bos_token_id=1, eos_token_id=2, pad_token_id=None)

        h = a.creative_hidden
        qcfg = Qwen3Config(vocab_size=cv, hidden_size=h, intermediate_size=a.mlp_mult * h,
                           num_hidden_layers=a.creative_layers, num_attention_heads=a.heads,
                           num_key_value_heads=max(1, a.heads // 2), head_dim=h // a.heads,
                           max_position_embeddings=2048, rms_norm_eps=1e-6, rope_theta=1e4,
                           tie_word_embeddings=False, initializer_range=0.02, bos_token_id=None,
                           eos_token_id=eos_ids, pad_token_id=eot)
        for i, (name, cls, cfg) in enumerate((("item_llm", LlamaForCausalLM, llama(a.item_hidden, a.item_layers)),
                                              ("user_llm", LlamaForCausalLM, llama(a.user_hidden, a.user_layers)),
                                              ("creative_llm", Qwen3ForCausalLM, qcfg))):
            torch.manual_seed(a.seed * 1000 + i + 1)
            m = cls(cfg).float()
            if name == "creative_llm":
                g = m.generation_config
                g.eos_token_id, g.pad_token_id, g.bos_token_id = eos_ids, eot, None
                g.save_pretrained(os.path.join(work, name))
            save_model(m, os.path.join(work, name), drop_lm_head=(name != "creative_llm"))
        rc = init_package.main(["--item-llm", os.path.join(work, "item_llm"),
                                "--user-llm", os.path.join(work, "user_llm"),
                                "--creative-llm", os.path.join(work, "creative_llm"),
                                "--templates", tpath, "--seed", str(a.seed), "--out", a.out])
        if rc:
            die("tools/init_package.py failed (message above)")
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"make_demo_package: wrote {a.out} (item vocab {iv}, creative vocab {cv}, "
          f"hidden {a.item_hidden}/{a.user_hidden}/{a.creative_hidden}, "
          f"layers {a.item_layers}/{a.user_layers}/{a.creative_layers})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
