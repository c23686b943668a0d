#!/usr/bin/env bash
# usage: make_bench_package.sh [SRC [OUT [CREATIVE_DIR]]]
# Builds the benchmark model package build/bench-creator-pkg: item and user LLM = the ~100M-param
# random Llama of bench_llm.py (build/bench-llm100m, created by running that script once) with the
# Llama-2 tokenizer; creative LLM = the demo package's tiny Qwen3 (only its hidden size matters to
# the embedding benchmark); fresh random heads (tools/init_package.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=${1:-build/bench-llm100m}
OUT=${2:-build/bench-creator-pkg}
# optional: a creative LLM directory (config.json, safetensors, tokenizer.json) instead of the
# demo's tiny Qwen3; the scheduler benchmark (bench_sched) uses the 100M Llama itself plus the
# Llama-2 tokenizer files copied next to it
CREATIVE=${3:-}
[ -f "$SRC/config.json" ] || { echo "run tests/bench/bench_llm.py once first (it creates $SRC)"; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cat >"$TMP/templates.json" <<'T'
{"user_prompt": "The vectors above are the 50 books this user reviewed most recently, oldest first. Predict the book the user may review next:",
 "prompt1": "Rewrite the book title below so that it appeals to this reader:\n",
 "prompt2": "Original title: {title}\nDescription: {description}\nNew title:"}
T
# the demo package's creative LLM as a plain Hugging Face directory
mkdir -p "$TMP/creative"
cp tests/data/creator/tiny/creative_llm/config.json "$TMP/creative/"
cp tests/data/creator/tiny/creative_tokenizer/* "$TMP/creative/"
python3 - "$TMP/creative" <<'PY'
import sys
from safetensors.numpy import load_file, save_file
w = load_file("tests/data/creator/tiny/model.safetensors")
p = "creative_llm."
save_file({k[len(p):]: v for k, v in w.items() if k.startswith(p)}, sys.argv[1] + "/model.safetensors")
PY
rm -rf "$OUT"
python3 tools/init_package.py --item-llm "$SRC" --item-tokenizer tests/data/tokenizers/llama2 \
  --creative-llm "${CREATIVE:-$TMP/creative}" \
  --templates "$TMP/templates.json" --dtype bf16 --out "$OUT"
echo "wrote $OUT"
