#!/usr/bin/env bash
# The main job, by hand: starts hllm-creatord on a model package on 127.0.0.1 (a free port), asks
# it with curl for one ad's title for two readers with different histories (one answer as JSON,
# one streamed as server-sent events), prints the answers and stops the daemon.
# usage: deploy/demo.sh [BUILD_DIR [PACKAGE]]   (defaults: build, the demo package)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
PKG=${2:-}
if [ -z "$PKG" ]; then
    if [ -f demo/pkg/creator.json ]; then PKG=demo/pkg; else PKG=tests/data/creator/tiny; fi
fi
DAEMON=$BUILD/server/hllm-creatord
[ -x "$DAEMON" ] || { echo "demo.sh: $DAEMON not found: build first (README)" >&2; exit 1; }
command -v curl >/dev/null || { echo "demo.sh: curl is needed (apt-get install curl)" >&2; exit 1; }
LOG=$(mktemp)
"$DAEMON" --model "$PKG" --port 0 --log-level info >"$LOG" 2>&1 &
pid=$!
cleanup() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$LOG"
}
trap cleanup EXIT
port=
for _ in $(seq 300); do
    port=$(sed -n 's/.* listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$LOG" | head -1)
    if [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "demo.sh: hllm-creatord exited:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    port=
    sleep 0.1
done
[ -n "$port" ] || { echo "demo.sh: hllm-creatord not ready after 30 s:" >&2; cat "$LOG" >&2; exit 1; }
URL=http://127.0.0.1:$port
# readers and an ad in the synthetic benchmark's world (docs/SYNTH.md), which the demo package
# was trained on: A reads baking books, B gardening ones; the ad's description has a selling
# point for each (the right personalized title adds A's or B's, never forced)
AD='{"title": "A Wealthy Budget", "description": "Expect recipes that rise every time. Inside: vegetables you grow yourself. Also investing with confidence."}'
A='["Buttery Pastry and Croissant", "The Cinnamon Baguette of Muffin", "The Frosted Croissant of Oven", "Scone of Pretzel", "The Almond Bakery of Scone"]'
B='["Heirloom Trellis", "The Mossy Meadow of Border", "The Seasonal Rose", "Perennial Trellis and Border", "Heirloom Tulip and Hedge"]'
echo "hllm-creatord on $URL with $PKG"
echo
echo "== reader A, JSON: curl -s $URL/v1/titles -H 'Content-Type: application/json' -d '{...}'"
curl -sS --fail-with-body "$URL/v1/titles" -H 'Content-Type: application/json' \
    -d "{\"user\": {\"history\": $A}, \"ad\": $AD, \"mode\": \"per_user\", \"max_new_tokens\": 24}"
echo
echo
echo "== reader B, streamed (\"stream\": true; server-sent events: meta, token..., done)"
curl -sS -N --fail-with-body "$URL/v1/titles" -H 'Content-Type: application/json' \
    -d "{\"user\": {\"history\": $B}, \"ad\": $AD, \"mode\": \"per_user\", \"max_new_tokens\": 24, \"stream\": true}"
echo
echo "== the daemon's counters: curl -s $URL/metrics | grep generated_tokens"
curl -sS "$URL/metrics" | grep '^hllm:generated_tokens_total'
if [ -n "${DEMO_REQUESTS_OUT:-}" ]; then # the same two requests as hllm generate input lines
    printf '{"history": %s, "ad": %s}\n{"history": %s, "ad": %s}\n' "$A" "$AD" "$B" "$AD" \
        >"$DEMO_REQUESTS_OUT"
fi
