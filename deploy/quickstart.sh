#!/usr/bin/env bash
# Quick start on a fresh Debian 12 machine (README, command 1): installs the dependencies, builds
# everything into build/, and runs the main job on the demo default that ships with the repo:
# a greedy continuation from the tiny Llama test model in tests/data/llm/llama_gqa_f32.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc 2>/dev/null || echo 2)"
MODEL=tests/data/llm/llama_gqa_f32
echo
echo "== build/cli/hllm generate --model $MODEL --ids 1,15,27,3 --max-new 16"
build/cli/hllm generate --model "$MODEL" --ids 1,15,27,3 --max-new 16
