#!/usr/bin/env bash
# Quick start on a fresh Debian 12 machine (README, command 1): installs the dependencies, builds
# everything into build/, and runs the main job (deploy/demo.sh): hllm-creatord on the demo model
# package that ships with the repo, asked with curl for one ad's title for two readers, one
# answer streamed; then the same three users through the offline tool, hllm generate.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc 2>/dev/null || echo 2)"
echo
REQ=$(mktemp)
trap 'rm -f "$REQ"' EXIT
DEMO_REQUESTS_OUT=$REQ deploy/demo.sh build
if [ -f demo/pkg/creator.json ]; then PKG=demo/pkg; else PKG=tests/data/creator/tiny; fi
echo
echo "== offline, the same two readers: build/cli/hllm generate --model $PKG --per-user < requests.jsonl"
build/cli/hllm generate --model "$PKG" --per-user --max-new 24 <"$REQ"
