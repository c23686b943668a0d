#!/usr/bin/env python3
"""Convert the released HLLM-Creator checkpoint into a model package (proto/model-package.md).

Example (released model):
    python3 tools/convert_checkpoint.py \\
        --checkpoint HLLM_Creator/pretrained_model/zero3_merge_states.pt \\
        --item-llm TinyLlama-1.1B --creative-llm HLLM_Creator/pretrained_model \\
        --templates my_templates.json \\
        [--parquet train/p0.parquet --parquet-row 0] \\
        --centroids HLLM_Creator/pretrained_model/cluster_256.pt \\
        --dtype bf16 --shard-size 5GB --out pkg/

--checkpoint   merged fp32 state dict (torch .pt, loaded with mmap, never fully in RAM),
               or a .safetensors file / index.json / directory with the same key names.
--item-llm     Hugging Face Llama directory: config.json + tokenizer.json (+ tokenizer_config.json).
--user-llm     same for the user LLM (default: --item-llm); its tokenizer is not used.
--creative-llm Qwen3 (or Llama) directory: config.json (+ generation_config.json) and tokenizer.
--templates    JSON {"user_prompt", "prompt1", "prompt2", "profile_prompt"} (profile optional).
--parquet      take prompt1 and prompt2 from one row of the training parquet instead (needs
               pyarrow); prompt2 there is filled in, and is turned back into a template by
               replacing the row's original_title / original_description with {title} /
               {description}. user_prompt (and profile_prompt) still come from --templates.

Exit status 0 on success, 1 on any input problem (every problem found is listed).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hllm_package as hp  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--item-llm", required=True)
    ap.add_argument("--user-llm")
    ap.add_argument("--creative-llm", required=True)
    ap.add_argument("--item-tokenizer", help="default: --item-llm")
    ap.add_argument("--creative-tokenizer", help="default: --creative-llm")
    ap.add_argument("--templates", required=True)
    ap.add_argument("--parquet")
    ap.add_argument("--parquet-row", type=int, default=0)
    ap.add_argument("--centroids", help="cluster_K.pt ((k, H_c) tensor) or .safetensors with key 'centroids'")
    ap.add_argument("--assign", choices=("ip", "cosine", "l2"), default="ip",
                    help="cluster assignment rule (default ip, the reference's)")
    ap.add_argument("--dtype", choices=("bf16", "f32"), default="bf16")
    ap.add_argument("--shard-size", help="e.g. 5GB; default: one file")
    ap.add_argument("--eos-ids", help="comma-separated creative eos ids (default: from the creative dir)")
    ap.add_argument("--allow-unexpected", action="store_true",
                    help="drop (and list) unknown tensors instead of failing")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    try:
        convert(a)
    except hp.PackageError as ex:
        print(f"convert_checkpoint: error: {ex}", file=sys.stderr)
        return 1
    return 0


def convert(a):
    user_dir = a.user_llm or a.item_llm
    item_tok = a.item_tokenizer or a.item_llm
    cre_tok = a.creative_tokenizer or a.creative_llm
    errs = []
    cfgs = []
    for d in (a.item_llm, user_dir, a.creative_llm):
        try:
            cfgs.append(hp.read_json(os.path.join(d, "config.json")))
        except (OSError, ValueError) as ex:
            raise hp.PackageError(f"{d}: cannot read config.json: {ex}")
    errs += hp.check_configs(*cfgs)
    for d in (item_tok, cre_tok):
        if not os.path.exists(os.path.join(d, "tokenizer.json")):
            errs.append(f"{d}: no tokenizer.json")
    if errs:
        raise hp.PackageError("\n  " + "\n  ".join(errs))
    errs += hp.check_tokenizers(item_tok, cre_tok, *cfgs)

    templates = hp.load_templates(a.templates)
    if a.parquet:
        templates.update(hp.templates_from_parquet(a.parquet, a.parquet_row))
    errs += hp.check_templates(templates)

    eos = [int(x) for x in a.eos_ids.split(",")] if a.eos_ids else hp.creative_eos_ids(a.creative_llm, cre_tok)
    centroids = hp.load_centroids(a.centroids, cfgs[2]["hidden_size"]) if a.centroids else None

    src = hp.open_source(a.checkpoint)
    shapes = {k: src.shape(k) for k in src.keys()}
    keep, dropped, e = hp.classify(shapes, *cfgs, allow_unexpected=a.allow_unexpected)
    errs += e
    for k in keep:
        t = src.get(k)
        if not t.dtype.is_floating_point:
            errs.append(f"tensor {k}: dtype {t.dtype}, expected a float tensor")
    if errs:
        raise hp.PackageError(f"{len(errs)} problem(s):\n  " + "\n  ".join(errs))
    for k, why in dropped:
        print(f"convert_checkpoint: dropping {k} ({why})", file=sys.stderr)
    m = hp.write_package(a.out, source=src, keys=keep, item_model_dir=a.item_llm, user_model_dir=user_dir,
                         creative_model_dir=a.creative_llm, item_tok_dir=item_tok, creative_tok_dir=cre_tok,
                         templates=templates, eos_ids=eos, dtype=a.dtype, shard_size=a.shard_size,
                         centroids=centroids, assign=a.assign,
                         log=lambda s: print(f"convert_checkpoint: {s}", file=sys.stderr))
    left = hp.validate_package(a.out)
    if left:
        raise hp.PackageError("written package does not validate:\n  " + "\n  ".join(left))
    print(f"convert_checkpoint: wrote {a.out} ({len(keep)} tensors, {a.dtype}, weights {m['weights']})",
          file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
