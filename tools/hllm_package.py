"""Shared helpers for writing and validating HLLM-Creator model packages.

The package format is proto/model-package.md (format version 1). This module knows:

* which tensors a package must / may hold, with their shapes, derived from the three
  sub-models' Hugging Face configs (MODEL_SPEC §2), and how to report exactly what is wrong;
* tensor sources that read lazily (a torch.load(mmap=True) state dict, a .safetensors file, a
  sharded index, a directory), so a 42 GB checkpoint is never held in memory;
* a streaming safetensors writer (one tensor converted and written at a time, optional sharding);
* templates (validation, and turning a filled-in parquet prompt2 back into a template);
* writing creator.json, copying configs and tokenizer files.

Used by tools/convert_checkpoint.py, tools/init_package.py and the tests.
"""

import json
import math
import os
import re
import shutil
import struct

import torch

FORMAT = "hllm-creator-package"
VERSION = 1

DEFAULTS = dict(
    max_history=50,
    max_item_tokens=64,
    max_prompt_tokens=4096,
    title_max_chars=768,
    description_max_chars=4096,
    slot_token_id=0,
)
SAMPLING_DEFAULTS = {"temperature": 0.8, "top_k": 50, "top_p": 0.95, "max_new_tokens": 128}
TEMPLATE_KEYS = ("user_prompt", "prompt1", "prompt2", "profile_prompt")

SUBMODELS = ("item_llm", "user_llm", "creative_llm")
HEAD_KEYS = ("item_emb_tokens", "emb_tokens", "user_projector.weight",
             "user_profile_projector.weight", "user_profile_align_projector.weight",
             "align_temp", "dec_emb_tokens", "user_tower.weight", "item_tower.weight")
# Buffers some checkpoints carry that the package never needs; dropped with a note.
DROPPABLE_SUFFIXES = ("rotary_emb.inv_freq", "rotary_emb.cos_cached", "rotary_emb.sin_cached",
                      "rotary_emb.original_inv_freq")

ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
             torch.int32: "I32", torch.int64: "I64"}
OUT_DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


class PackageError(Exception):
    """A problem with the inputs or the package; the message lists every problem found."""


# ---------------------------------------------------------------------------
# configs and expected tensors

def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def head_dim(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def llm_expected(prefix, cfg):
    """{key: (shape, required)} for one Llama / Qwen3 sub-model under `prefix`."""
    mt = cfg.get("model_type")
    if mt not in ("llama", "qwen3"):
        raise PackageError(f"{prefix}: model_type {mt!r} is not supported (llama or qwen3)")
    H, V, I = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = head_dim(cfg)
    ab = bool(cfg.get("attention_bias", False))
    mb = bool(cfg.get("mlp_bias", False))
    e = {f"{prefix}.model.embed_tokens.weight": ((V, H), True),
         f"{prefix}.model.norm.weight": ((H,), True)}
    for n in range(cfg["num_hidden_layers"]):
        p = f"{prefix}.model.layers.{n}."
        e[p + "self_attn.q_proj.weight"] = ((nh * hd, H), True)
        e[p + "self_attn.k_proj.weight"] = ((nkv * hd, H), True)
        e[p + "self_attn.v_proj.weight"] = ((nkv * hd, H), True)
        e[p + "self_attn.o_proj.weight"] = ((H, nh * hd), True)
        if ab:
            e[p + "self_attn.q_proj.bias"] = ((nh * hd,), True)
            e[p + "self_attn.k_proj.bias"] = ((nkv * hd,), True)
            e[p + "self_attn.v_proj.bias"] = ((nkv * hd,), True)
            e[p + "self_attn.o_proj.bias"] = ((H,), True)
        if mt == "qwen3":
            e[p + "self_attn.q_norm.weight"] = ((hd,), True)
            e[p + "self_attn.k_norm.weight"] = ((hd,), True)
        e[p + "mlp.gate_proj.weight"] = ((I, H), True)
        e[p + "mlp.up_proj.weight"] = ((I, H), True)
        e[p + "mlp.down_proj.weight"] = ((H, I), True)
        if mb:
            e[p + "mlp.gate_proj.bias"] = ((I,), True)
            e[p + "mlp.up_proj.bias"] = ((I,), True)
            e[p + "mlp.down_proj.bias"] = ((H,), True)
        e[p + "input_layernorm.weight"] = ((H,), True)
        e[p + "post_attention_layernorm.weight"] = ((H,), True)
    # item / user lm_heads are never used; the creative one is needed unless tied.
    lm_required = prefix == "creative_llm" and not cfg.get("tie_word_embeddings", False)
    e[f"{prefix}.lm_head.weight"] = ((V, H), lm_required)
    return e


def cls_dim_of(shapes, default):
    """The match head's width cls_dim, from the tensors (it is a training setting in no config):
    cls_tower.layer_norm.weight (cls_dim,), else user_tower.weight / item_tower.weight
    (cls_dim, .); `default` (H_i, the reference's choice) when none of them is there."""
    for k in ("cls_tower.layer_norm.weight", "user_tower.weight", "item_tower.weight"):
        s = shapes.get(k)
        if s is not None and len(s) >= 1:
            return int(s[0])
    return default


def heads_expected(item_cfg, user_cfg, creative_cfg, cls_dim=None):
    """{key: (shape, required)} of the heads; cls_dim (from cls_dim_of) defaults to H_i."""
    Hi, Hu, Hc = item_cfg["hidden_size"], user_cfg["hidden_size"], creative_cfg["hidden_size"]
    D = Hi if cls_dim is None else cls_dim
    return {
        "item_emb_tokens": ((1, 1, Hi), True),
        "emb_tokens": ((1, 1, Hu), True),
        "user_projector.weight": ((Hc, Hu), True),
        "user_profile_projector.weight": ((Hc, Hu), False),
        "user_profile_align_projector.weight": ((Hc, Hu), False),
        "align_temp": ((), False),
        "dec_emb_tokens": ((1, 1, Hc), False),
        "user_tower.weight": ((D, Hc), False),
        "item_tower.weight": ((D, Hi), False),
    }


def cls_tower_keys(dim, seq_lens=2, token_dim=8, channel_dim=None, depth=2, num_classes=1):
    """{key: shape} of the MLPMixer cls_tower (MODEL_SPEC §2)."""
    C = channel_dim if channel_dim is not None else 3 * dim
    e = {}
    for b in range(depth):
        p = f"cls_tower.mixer_blocks.{b}."
        e[p + "token_norm.weight"] = (dim,)
        e[p + "token_norm.bias"] = (dim,)
        e[p + "token_forward.net.0.weight"] = (token_dim, seq_lens)
        e[p + "token_forward.net.0.bias"] = (token_dim,)
        e[p + "token_forward.net.3.weight"] = (seq_lens, token_dim)
        e[p + "token_forward.net.3.bias"] = (seq_lens,)
        e[p + "channel_mix.0.weight"] = (dim,)
        e[p + "channel_mix.0.bias"] = (dim,)
        e[p + "channel_mix.1.net.0.weight"] = (C, dim)
        e[p + "channel_mix.1.net.0.bias"] = (C,)
        e[p + "channel_mix.1.net.3.weight"] = (dim, C)
        e[p + "channel_mix.1.net.3.bias"] = (dim,)
    e["cls_tower.layer_norm.weight"] = (dim,)
    e["cls_tower.layer_norm.bias"] = (dim,)
    e["cls_tower.mlp_head.0.weight"] = (num_classes, dim)
    e["cls_tower.mlp_head.0.bias"] = (num_classes,)
    return e


def check_cls_tower(shapes):
    """Validate the cls_tower.* subset of {key: shape}; sizes are inferred from the tensors
    themselves (cls_dim, token_dim, channel_dim are training settings, not in any config)."""
    keys = {k: v for k, v in shapes.items() if k.startswith("cls_tower.")}
    if not keys:
        return []
    errs = []
    try:
        dim = keys["cls_tower.layer_norm.weight"][0]
        S = keys["cls_tower.mixer_blocks.0.token_forward.net.0.weight"][1]
        T = keys["cls_tower.mixer_blocks.0.token_forward.net.0.weight"][0]
        C = keys["cls_tower.mixer_blocks.0.channel_mix.1.net.0.weight"][0]
        ncls = keys["cls_tower.mlp_head.0.weight"][0]
    except (KeyError, IndexError) as ex:
        return [f"cls_tower: cannot infer its sizes, missing or malformed {ex}"]
    blocks = {int(m.group(1)) for k in keys for m in [re.match(r"cls_tower\.mixer_blocks\.(\d+)\.", k)] if m}
    depth = max(blocks) + 1 if blocks else 0
    exp = cls_tower_keys(dim, S, T, C, depth, ncls)
    for k in sorted(exp):
        if k not in keys:
            errs.append(f"missing training-only tensor {k} (cls_tower, expected shape {list(exp[k])})")
        elif tuple(keys[k]) != tuple(exp[k]):
            errs.append(f"wrong shape for {k}: {list(keys[k])}, expected {list(exp[k])}")
    for k in sorted(keys):
        if k not in exp:
            errs.append(f"unexpected tensor {k} (not a cls_tower MLPMixer key)")
    return errs


def expected_tensors(item_cfg, user_cfg, creative_cfg, cls_dim=None):
    e = {}
    e.update(llm_expected("item_llm", item_cfg))
    e.update(llm_expected("user_llm", user_cfg))
    e.update(llm_expected("creative_llm", creative_cfg))
    e.update(heads_expected(item_cfg, user_cfg, creative_cfg, cls_dim))
    return e


def classify(shapes, item_cfg, user_cfg, creative_cfg, allow_unexpected=False):
    """Check a {key: shape} mapping against the configs.

    Returns (keep, dropped, errors): keep is the sorted list of keys to write, dropped a list of
    (key, reason) that are skipped, errors a list of messages (empty when all is well)."""
    exp = expected_tensors(item_cfg, user_cfg, creative_cfg,
                           cls_dim_of(shapes, item_cfg["hidden_size"]))
    errs, keep, dropped = [], [], []
    for k in sorted(exp):
        shape, required = exp[k]
        if k not in shapes:
            if required:
                errs.append(f"missing tensor {k} (expected shape {list(shape)})")
            continue
        if tuple(shapes[k]) != tuple(shape):
            errs.append(f"wrong shape for {k}: {list(shapes[k])}, expected {list(shape)}"
                        + _shape_hint(k, item_cfg, user_cfg, creative_cfg))
    errs.extend(check_cls_tower(shapes))
    known_prefixes = tuple(p + "." for p in SUBMODELS)
    for k in sorted(shapes):
        if k in exp or k.startswith("cls_tower."):
            keep.append(k)
        elif k.endswith(DROPPABLE_SUFFIXES):
            dropped.append((k, "RoPE buffer, recomputed from the config"))
        elif k.startswith("decoder_llm."):
            # decoder_llm aliases creative_llm in the reference (MODEL_SPEC §2)
            dropped.append((k, "decoder_llm aliases creative_llm"))
        elif k.startswith(known_prefixes):
            msg = f"unexpected tensor {k} (not in the {k.split('.')[0]} architecture of its config.json)"
            (dropped.append((k, "unexpected, --allow-unexpected")) if allow_unexpected else errs.append(msg))
        else:
            msg = (f"unexpected tensor {k}: prefix {k.split('.')[0]!r} is none of item_llm., user_llm., "
                   f"creative_llm., cls_tower. or the heads ({', '.join(HEAD_KEYS)})")
            (dropped.append((k, "unexpected prefix, --allow-unexpected")) if allow_unexpected else errs.append(msg))
    return keep, dropped, errs


def _shape_hint(key, item_cfg, user_cfg, creative_cfg):
    for p, c in (("item_llm", item_cfg), ("user_llm", user_cfg), ("creative_llm", creative_cfg)):
        if key.startswith(p + "."):
            return f" (from {p}/config.json: hidden {c['hidden_size']}, vocab {c['vocab_size']})"
    return ""


# ---------------------------------------------------------------------------
# tensor sources (lazy)

class TorchSource:
    """A torch state dict file, memory-mapped: tensors are read from disk on access."""

    def __init__(self, path):
        try:
            sd = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception as ex:  # old non-zip format cannot be mmapped
            raise PackageError(f"{path}: cannot load as a torch state dict with mmap: {ex}")
        for wrap in ("module", "state_dict", "model"):
            if isinstance(sd, dict) and set(sd) == {wrap} and isinstance(sd[wrap], dict):
                sd = sd[wrap]
        if not isinstance(sd, dict):
            raise PackageError(f"{path}: expected a flat dict of tensors, found {type(sd).__name__}")
        bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise PackageError(f"{path}: entries that are not tensors: {bad[:10]}")
        self.sd = sd

    def keys(self):
        return list(self.sd)

    def shape(self, k):
        return tuple(self.sd[k].shape)

    def get(self, k):
        return self.sd[k]


class SafetensorsSource:
    """One .safetensors file, an index.json of shards, or a directory holding either."""

    def __init__(self, path, prefix=""):
        from safetensors import safe_open
        self.prefix = prefix
        files = []
        if os.path.isdir(path):
            idx = os.path.join(path, "model.safetensors.index.json")
            single = os.path.join(path, "model.safetensors")
            if os.path.exists(idx):
                path = idx
            elif os.path.exists(single):
                path = single
            else:
                files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".safetensors"))
                if not files:
                    raise PackageError(f"{path}: no model.safetensors, index or *.safetensors files")
        if not files:
            if path.endswith(".json"):
                wm = read_json(path)["weight_map"]
                d = os.path.dirname(path)
                files = sorted({os.path.join(d, f) for f in wm.values()})
            else:
                files = [path]
        self.handles, self.where = [], {}
        for f in files:
            h = safe_open(f, "pt")
            self.handles.append(h)
            for k in h.keys():
                if prefix + k in self.where:
                    raise PackageError(f"{f}: tensor {k} also present in another shard")
                self.where[prefix + k] = h

    def keys(self):
        return list(self.where)

    def shape(self, k):
        return tuple(self.where[k].get_slice(k[len(self.prefix):]).get_shape())

    def get(self, k):
        return self.where[k].get_tensor(k[len(self.prefix):])


class DictSource:
    def __init__(self, d):
        self.d = d

    def keys(self):
        return list(self.d)

    def shape(self, k):
        return tuple(self.d[k].shape)

    def get(self, k):
        return self.d[k]


class MultiSource:
    """Union of sources; a key present in two sources is an error."""

    def __init__(self, sources):
        self.where = {}
        for s in sources:
            for k in s.keys():
                if k in self.where:
                    raise PackageError(f"tensor {k} comes from two inputs")
                self.where[k] = s

    def keys(self):
        return list(self.where)

    def shape(self, k):
        return self.where[k].shape(k)

    def get(self, k):
        return self.where[k].get(k)


def open_source(path):
    if os.path.isdir(path) or path.endswith(".safetensors") or path.endswith(".index.json"):
        return SafetensorsSource(path)
    return TorchSource(path)


def open_hf_weights(d, prefix):
    """A Hugging Face model directory's weights, keys prefixed with `prefix.`."""
    has_st = any(f.endswith(".safetensors") or f == "model.safetensors.index.json" for f in os.listdir(d))
    if has_st:
        return SafetensorsSource(d, prefix=prefix + ".")
    for name in ("pytorch_model.bin",):
        p = os.path.join(d, name)
        if os.path.exists(p):
            src = TorchSource(p)
            return DictSource({prefix + "." + k: v for k, v in src.sd.items()})
    raise PackageError(f"{d}: no safetensors or pytorch_model.bin weights")


# ---------------------------------------------------------------------------
# streaming safetensors writer

def _nbytes(shape, dtype):
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


def _out_dtype(src_dtype, dtype):
    return dtype if src_dtype.is_floating_point else src_dtype


def _parse_size(s):
    if s is None:
        return None
    if isinstance(s, int):
        return s
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", s.upper())
    if not m:
        raise PackageError(f"bad shard size {s!r} (e.g. 5GB, 500MB, 100KB)")
    mult = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2)]
    return int(float(m.group(1)) * mult)


def write_safetensors(out_dir, source, keys, dtype, shard_size=None, log=None):
    """Write `keys` of `source` converted to `dtype` (floats only) as model.safetensors or as
    model-0000N-of-0000M.safetensors + model.safetensors.index.json. One tensor at a time is
    materialized. Returns the file name to put in creator.json ("weights")."""
    shard_size = _parse_size(shard_size)
    plan = []  # (key, shape, out dtype, nbytes)
    for k in keys:
        t = source.get(k)  # mmap / lazy: shape and dtype only
        od = _out_dtype(t.dtype, dtype)
        if od not in ST_DTYPES:
            raise PackageError(f"tensor {k}: unsupported dtype {t.dtype}")
        plan.append((k, tuple(t.shape), od, _nbytes(t.shape, od)))
        del t
    shards, cur, cur_size = [], [], 0
    for item in plan:
        if shard_size and cur and cur_size + item[3] > shard_size:
            shards.append(cur)
            cur, cur_size = [], 0
        cur.append(item)
        cur_size += item[3]
    shards.append(cur)
    n = len(shards)
    names = ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    weight_map, total = {}, 0
    for name, shard in zip(names, shards):
        header, off = {"__metadata__": {"format": "pt"}}, 0
        for k, shape, od, nb in shard:
            header[k] = {"dtype": ST_DTYPES[od], "shape": list(shape), "data_offsets": [off, off + nb]}
            off += nb
            weight_map[k] = name
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * ((8 - len(hb) % 8) % 8)
        path = os.path.join(out_dir, name)
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(hb)))
            f.write(hb)
            for k, shape, od, nb in shard:
                t = source.get(k).to(od).contiguous()
                data = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
                f.write(memoryview(data) if len(data) else b"")
                if len(data) != nb:
                    raise PackageError(f"internal: {k} wrote {len(data)} bytes, planned {nb}")
                del t, data
        total += off
        if log:
            log(f"wrote {name}: {len(shard)} tensors, {off} bytes")
    if n == 1:
        return names[0]
    idx = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump(idx, f, indent=2)
        f.write("\n")
    return "model.safetensors.index.json"


def read_safetensors_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h


def package_weight_shapes(pkg_dir, weights):
    """{key: (shape, dtype string, file)} of a package's weights, from the headers only."""
    p = os.path.join(pkg_dir, weights)
    if os.path.isdir(p):
        files = sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith(".safetensors"))
    elif p.endswith(".json"):
        files = sorted({os.path.join(os.path.dirname(p), f) for f in read_json(p)["weight_map"].values()})
    else:
        files = [p]
    out = {}
    for f in files:
        for k, v in read_safetensors_header(f).items():
            out[k] = (tuple(v["shape"]), v["dtype"], f)
    return out


# ---------------------------------------------------------------------------
# templates

_FIELD_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def check_prompt2(t):
    """Errors in a prompt2 template: only {title}, {description}, {{ and }} are allowed."""
    errs, seen = [], set()
    for m in _FIELD_RE.finditer(t):
        s = m.group(0)
        if s in ("{{", "}}"):
            continue
        if m.group(1) in ("title", "description"):
            seen.add(m.group(1))
            continue
        errs.append(f"prompt2: {s!r} at offset {m.start()} is not {{title}}, {{description}}, {{{{ or }}}}")
    for f in ("title", "description"):
        if f not in seen:
            errs.append(f"prompt2: has no {{{f}}} field")
    return errs


def render_prompt2(t, title, description, title_max=768, desc_max=4096):
    """Fill prompt2 the way the reference data pipeline does (MODEL_SPEC §5.1)."""
    title = (title or "")[:title_max]
    description = "None" if description is None else description[:desc_max]

    def rep(m):
        s = m.group(0)
        if s == "{{":
            return "{"
        if s == "}}":
            return "}"
        return {"title": title, "description": description}[m.group(1)]
    return _FIELD_RE.sub(rep, t)


def escape_braces(s):
    return s.replace("{", "{{").replace("}", "}}")


def prompt2_to_template(filled, title, description, title_max=768, desc_max=4096):
    """Turn a row's filled-in prompt2 back into a template: the row's title (cut to title_max
    code points) and description (cut to desc_max; None -> "None") are replaced by {title} and
    {description}, other braces are escaped. Raises PackageError when they cannot be found."""
    t = (title or "")[:title_max]
    d = "None" if description is None else description[:desc_max]
    if not t:
        raise PackageError("prompt2 from parquet: the row's original_title is empty; cannot locate it "
                           "in prompt2 (choose another row with --parquet-row)")
    if not d:
        raise PackageError("prompt2 from parquet: the row's original_description is empty; cannot "
                           "locate it in prompt2 (choose another row with --parquet-row)")
    i = filled.find(t)
    if i < 0:
        raise PackageError(f"prompt2 from parquet: original_title (first {min(len(t), 60)} chars: "
                           f"{t[:60]!r}) not found in the row's prompt2")
    j = filled.find(d, i + len(t))
    if j < 0:
        where = "anywhere" if filled.find(d) < 0 else "after the title"
        raise PackageError(f"prompt2 from parquet: original_description cut to {desc_max} chars "
                           f"(first 60: {d[:60]!r}) not found {where} in the row's prompt2")
    tmpl = (escape_braces(filled[:i]) + "{title}" + escape_braces(filled[i + len(t):j]) + "{description}"
            + escape_braces(filled[j + len(d):]))
    if render_prompt2(tmpl, title, description, title_max, desc_max) != filled:
        raise PackageError("prompt2 from parquet: internal error, the template does not re-render the row")
    return tmpl


def load_templates(path):
    t = read_json(path)
    if not isinstance(t, dict):
        raise PackageError(f"{path}: templates must be a JSON object")
    unknown = sorted(set(t) - set(TEMPLATE_KEYS))
    if unknown:
        raise PackageError(f"{path}: unknown template keys {unknown} (known: {list(TEMPLATE_KEYS)})")
    for k, v in t.items():
        if not isinstance(v, str):
            raise PackageError(f"{path}: template {k} must be a string")
    return t


def templates_from_parquet(path, row):
    """prompt1 and the prompt2 template from one parquet row (needs pyarrow)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise PackageError("reading templates from parquet needs pyarrow (pip install pyarrow); "
                           "or pass them in a --templates JSON file")
    tbl = pq.read_table(path, columns=None)
    cols = set(tbl.column_names)
    need = {"prompt1", "prompt2", "original_title", "original_description"}
    if need - cols:
        raise PackageError(f"{path}: missing columns {sorted(need - cols)}")
    if not 0 <= row < tbl.num_rows:
        raise PackageError(f"{path}: row {row} out of range (0..{tbl.num_rows - 1})")
    r = {c: tbl.column(c)[row].as_py() for c in need}
    return {"prompt1": r["prompt1"],
            "prompt2": prompt2_to_template(r["prompt2"], r["original_title"], r["original_description"])}


def check_templates(t):
    errs = []
    for k in ("user_prompt", "prompt1", "prompt2"):
        if not isinstance(t.get(k), str):
            errs.append(f"templates: {k} is missing")
    if isinstance(t.get("prompt2"), str):
        errs.extend(check_prompt2(t["prompt2"]))
    return errs


# ---------------------------------------------------------------------------
# tokenizers, configs

def tokenizer_special_id(tok_dir, token):
    """Id of a token string in tokenizer.json (added tokens first, then the model vocab)."""
    tj = read_json(os.path.join(tok_dir, "tokenizer.json"))
    for a in tj.get("added_tokens", []):
        if a["content"] == token:
            return a["id"]
    v = tj.get("model", {}).get("vocab", {})
    if isinstance(v, dict) and token in v:
        return v[token]
    return None


def tokenizer_max_id(tok_dir):
    tj = read_json(os.path.join(tok_dir, "tokenizer.json"))
    v = tj.get("model", {}).get("vocab", {})
    ids = list(v.values()) if isinstance(v, dict) else list(range(len(v)))
    ids += [a["id"] for a in tj.get("added_tokens", [])]
    return max(ids) if ids else -1


def _token_str(x):
    if isinstance(x, dict):
        return x.get("content")
    return x


def creative_eos_ids(model_dir, tok_dir):
    """Generation stop ids: generation_config.json's eos_token_id (in its order), then the
    tokenizer's eos token; config.json's eos_token_id when neither exists."""
    ids = []

    def add(x):
        for i in (x if isinstance(x, list) else [x]):
            if isinstance(i, int) and i not in ids:
                ids.append(i)
    gc = os.path.join(model_dir, "generation_config.json")
    if os.path.exists(gc):
        add(read_json(gc).get("eos_token_id"))
    tc = os.path.join(tok_dir, "tokenizer_config.json")
    if os.path.exists(tc):
        eos = _token_str(read_json(tc).get("eos_token"))
        if eos:
            i = tokenizer_special_id(tok_dir, eos)
            if i is None:
                raise PackageError(f"{tc}: eos_token {eos!r} is not in tokenizer.json")
            add(i)
    if not ids:
        add(read_json(os.path.join(model_dir, "config.json")).get("eos_token_id"))
    if not ids:
        raise PackageError(f"no eos id found in {model_dir} (generation_config.json, config.json) "
                           f"or {tok_dir} (tokenizer_config.json)")
    return ids


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def copy_tokenizer(src, dst):
    if not os.path.exists(os.path.join(src, "tokenizer.json")):
        raise PackageError(f"{src}: no tokenizer.json (the package needs the fast-tokenizer file)")
    os.makedirs(dst, exist_ok=True)
    for f in TOKENIZER_FILES:
        if os.path.exists(os.path.join(src, f)):
            shutil.copyfile(os.path.join(src, f), os.path.join(dst, f))


def copy_config(src, dst, with_generation=False):
    if not os.path.exists(os.path.join(src, "config.json")):
        raise PackageError(f"{src}: no config.json")
    os.makedirs(dst, exist_ok=True)
    shutil.copyfile(os.path.join(src, "config.json"), os.path.join(dst, "config.json"))
    if with_generation and os.path.exists(os.path.join(src, "generation_config.json")):
        shutil.copyfile(os.path.join(src, "generation_config.json"), os.path.join(dst, "generation_config.json"))


def check_configs(item_cfg, user_cfg, creative_cfg):
    errs = []
    for name, c in (("item", item_cfg), ("user", user_cfg)):
        if c.get("model_type") != "llama":
            errs.append(f"{name} LLM config: model_type {c.get('model_type')!r}, expected 'llama'")
    if creative_cfg.get("model_type") not in ("qwen3", "llama"):
        errs.append(f"creative LLM config: model_type {creative_cfg.get('model_type')!r}, expected 'qwen3' or 'llama'")
    if item_cfg.get("hidden_size") != user_cfg.get("hidden_size"):
        errs.append(f"item hidden_size {item_cfg.get('hidden_size')} != user hidden_size "
                    f"{user_cfg.get('hidden_size')}: item vectors are the user LLM's inputs")
    return errs


def check_tokenizers(item_tok, creative_tok, item_cfg, user_cfg, creative_cfg):
    errs = []
    m = tokenizer_max_id(item_tok)
    for name, c in (("item", item_cfg), ("user", user_cfg)):
        if m >= c["vocab_size"]:
            errs.append(f"item tokenizer has id {m} >= {name} LLM vocab_size {c['vocab_size']}")
    m = tokenizer_max_id(creative_tok)
    if m >= creative_cfg["vocab_size"]:
        errs.append(f"creative tokenizer has id {m} >= creative LLM vocab_size {creative_cfg['vocab_size']}")
    return errs


# ---------------------------------------------------------------------------
# package writing

def write_package(out, *, source, keys, item_model_dir, user_model_dir, creative_model_dir,
                  item_tok_dir, creative_tok_dir, templates, eos_ids, dtype="f32", shard_size=None,
                  centroids=None, assign="ip", sampling=None, log=print):
    """Write a complete package to `out` (created; must not exist or be empty)."""
    if os.path.exists(out) and os.listdir(out):
        raise PackageError(f"{out}: exists and is not empty")
    os.makedirs(out, exist_ok=True)
    copy_config(item_model_dir, os.path.join(out, "item_llm"))
    copy_config(user_model_dir, os.path.join(out, "user_llm"))
    copy_config(creative_model_dir, os.path.join(out, "creative_llm"), with_generation=True)
    copy_tokenizer(item_tok_dir, os.path.join(out, "item_tokenizer"))
    copy_tokenizer(creative_tok_dir, os.path.join(out, "creative_tokenizer"))
    weights = write_safetensors(out, source, keys, OUT_DTYPES[dtype], shard_size, log=log)
    cluster = {"centroids": None, "assign": assign}
    if centroids is not None:
        from safetensors.torch import save_file
        save_file({"centroids": centroids.float().contiguous()}, os.path.join(out, "clusters.safetensors"))
        os.chmod(os.path.join(out, "clusters.safetensors"), 0o644)
        cluster["centroids"] = "clusters.safetensors"
    manifest = {
        "format": FORMAT, "version": VERSION,
        "item_llm": "item_llm", "user_llm": "user_llm", "creative_llm": "creative_llm",
        "item_tokenizer": "item_tokenizer", "creative_tokenizer": "creative_tokenizer",
        "weights": weights,
        **DEFAULTS,
        "templates": {k: templates[k] for k in TEMPLATE_KEYS if k in templates},
        "creative_eos_ids": list(eos_ids),
        "cluster": cluster,
        "sampling": dict(sampling or SAMPLING_DEFAULTS),
    }
    with open(os.path.join(out, "creator.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return manifest


def load_centroids(path, hc):
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        d = load_file(path)
        if "centroids" not in d:
            raise PackageError(f"{path}: no tensor 'centroids'")
        c = d["centroids"]
    else:
        c = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(c, dict):
            raise PackageError(f"{path}: expected a (k, {hc}) tensor, found a dict with keys {list(c)[:5]}")
        if not isinstance(c, torch.Tensor):
            import numpy as np
            c = torch.from_numpy(np.asarray(c))
    if c.dim() != 2 or c.shape[1] != hc:
        raise PackageError(f"{path}: centroids have shape {list(c.shape)}, expected (k, {hc}) "
                           f"with {hc} = creative hidden_size")
    if not torch.isfinite(c.float()).all():
        raise PackageError(f"{path}: centroids contain non-finite values")
    return c.float()


def validate_package(pkg):
    """Check a package directory; returns a list of error messages (empty: valid)."""
    errs = []
    try:
        m = read_json(os.path.join(pkg, "creator.json"))
    except (OSError, ValueError) as ex:
        return [f"creator.json: {ex}"]
    if m.get("format") != FORMAT:
        errs.append(f"creator.json: format {m.get('format')!r}, expected {FORMAT!r}")
    if m.get("version") != VERSION:
        errs.append(f"creator.json: version {m.get('version')!r}, this reader supports {VERSION}")
        return errs
    try:
        cfgs = [read_json(os.path.join(pkg, m[k], "config.json")) for k in SUBMODELS]
    except (OSError, ValueError, KeyError) as ex:
        return errs + [f"configs: {ex}"]
    errs += check_configs(*cfgs)
    for k in ("item_tokenizer", "creative_tokenizer"):
        if not os.path.exists(os.path.join(pkg, m.get(k, "?"), "tokenizer.json")):
            errs.append(f"{k}: no tokenizer.json in {m.get(k)!r}")
    if not errs:
        errs += check_tokenizers(os.path.join(pkg, m["item_tokenizer"]), os.path.join(pkg, m["creative_tokenizer"]), *cfgs)
    errs += check_templates(m.get("templates", {}))
    try:
        shapes = {k: v[0] for k, v in package_weight_shapes(pkg, m["weights"]).items()}
    except (OSError, ValueError, KeyError) as ex:
        return errs + [f"weights: {ex}"]
    _, dropped, e = classify(shapes, *cfgs)
    errs += e + [f"unexpected tensor {k} ({why})" for k, why in dropped]
    c = m.get("cluster") or {}
    if c.get("assign") not in ("ip", "cosine", "l2"):
        errs.append(f"cluster.assign {c.get('assign')!r} is not ip, cosine or l2")
    if c.get("centroids"):
        p = os.path.join(pkg, c["centroids"])
        try:
            h = read_safetensors_header(p)
            cs = h["centroids"]
            if cs["dtype"] != "F32" or len(cs["shape"]) != 2 or cs["shape"][1] != cfgs[2]["hidden_size"]:
                errs.append(f"{c['centroids']}: centroids {cs['dtype']} {cs['shape']}, expected F32 (k, {cfgs[2]['hidden_size']})")
        except (OSError, ValueError, KeyError) as ex:
            errs.append(f"{c['centroids']}: {ex}")
    eos = m.get("creative_eos_ids")
    if not isinstance(eos, list) or not eos or not all(isinstance(i, int) for i in eos):
        errs.append("creative_eos_ids must be a non-empty list of ints")
    return errs
