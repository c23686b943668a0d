#!/usr/bin/env bash
# Quick start on a fresh Debian 12 machine (README, command 1): installs the dependencies, builds
# everything into build/, and runs the main job on the demo model package that ships with the
# repo: personalized titles for three users (tests/data/creator/cases.jsonl) from the tiny random
# HLLM-Creator package tests/data/creator/tiny.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc 2>/dev/null || echo 2)"
PKG=tests/data/creator/tiny
echo
echo "== head -3 tests/data/creator/cases.jsonl | build/cli/hllm generate --model $PKG --max-new 16"
head -3 tests/data/creator/cases.jsonl | build/cli/hllm generate --model "$PKG" --max-new 16
