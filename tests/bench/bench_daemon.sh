#!/usr/bin/env bash
# bench_daemon.sh: hllm-creatord over HTTP with wrk (Debian: apt-get install -y wrk; benchmark
# only, not a test dependency). See tests/bench/README.md, results in docs/BENCHMARKS.md.
#
#   tests/bench/bench_daemon.sh [--daemon BUILD/server/hllm-creatord] [--model PKG]
#                               [--seconds N] [--connections C] [--wrk-threads T]
#                               [--uncached-seconds N] [--threads N]
#                               [--concurrency "1 8 32"] [--skip-cached]
#
# 1. cached titles: one cluster-mode request (a miss, generated), checked to be a hit the second
#    time; then wrk posts that same body for N seconds over C connections: requests/s, p50, p99
#    (wrk --latency), every answer checked to be 200;
# 2. RSS of the daemon before the cached runs, after the first and after a second run of the
#    same length (flat: no growth per request);
# 3. uncached titles/s at each concurrency of --concurrency (default 1 8 32): every request a new ad (cluster mode, so a new
#    title-cache key, max_new_tokens 16), mean TTFT from hllm:time_to_first_token_seconds.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DAEMON=$ROOT/build/server/hllm-creatord
PKG=$ROOT/tests/data/creator/tiny
SECONDS_CACHED=10
SECONDS_UNCACHED=10
CONNS=32
WRK_THREADS=1
THREADS=1
CONCURRENCY="1 8 32"
SKIP_CACHED=0
while [ $# -gt 0 ]; do
  case $1 in
    --daemon) DAEMON=$2; shift 2 ;;
    --model) PKG=$2; shift 2 ;;
    --seconds) SECONDS_CACHED=$2; shift 2 ;;
    --uncached-seconds) SECONDS_UNCACHED=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --wrk-threads) WRK_THREADS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --skip-cached) SKIP_CACHED=1; shift ;;
    *) echo "bench_daemon.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v wrk >/dev/null || { echo "bench_daemon.sh: needs wrk (apt-get install -y wrk)" >&2; exit 2; }
command -v curl >/dev/null || { echo "bench_daemon.sh: needs curl" >&2; exit 2; }
[ -x "$DAEMON" ] || { echo "bench_daemon.sh: no daemon at $DAEMON (--daemon)" >&2; exit 2; }

WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$DAEMON" --model "$PKG" --port "$PORT" --threads "$THREADS" --log-level warn \
  --max-connections 1024 --max-queued 4096 2>"$WORK/daemon.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
URL=http://127.0.0.1:$PORT
for _ in $(seq 1 600); do
  curl -sf "$URL/readyz" >/dev/null 2>&1 && break
  kill -0 $PID 2>/dev/null || { cat "$WORK/daemon.log" >&2; exit 1; }
  sleep 0.1
done
rss() { awk '/^VmRSS/ {print $2}' /proc/$PID/status; }
metric() { curl -s "$URL/metrics" | awk -v n="$1" '$1 == n {print $2}'; }

BODY='{"user": {"history": ["The Hobbit", "Dune", "Small Gods"]}, "ad": {"title": "Night Flight", "description": "A pilot crosses the Andes."}, "mode": "cluster", "max_new_tokens": 16}'
post() { curl -s -H 'Content-Type: application/json' -d "$1" "$URL/v1/titles"; }
first=$(post "$BODY")
second=$(post "$BODY")
python3 - "$first" "$second" <<'EOF'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert a["cached"] is False and b["cached"] is True and a["title"] == b["title"], (a, b)
EOF

# wrk's Lua: the cached body; counts non-200 answers
cat >"$WORK/cached.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[$BODY]]
function done(summary, latency, requests)
  io.write(string.format("non2xx %d\n", summary.errors.status))
end
EOF
run_cached() {
  wrk -t"$WRK_THREADS" -c"$CONNS" -d"${SECONDS_CACHED}s" --latency -s "$WORK/cached.lua" "$URL/v1/titles" \
    >"$WORK/wrk.$1.txt"
  local rps p50 p99 n bad
  rps=$(awk '/^Requests\/sec/ {print $2}' "$WORK/wrk.$1.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$WORK/wrk.$1.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk.$1.txt")
  n=$(awk '/requests in/ {print $1}' "$WORK/wrk.$1.txt")
  bad=$(awk '/^non2xx/ {print $2}' "$WORK/wrk.$1.txt")
  sockerr=$(grep -c "Socket errors" "$WORK/wrk.$1.txt" || true)
  echo "cached run $1: $rps req/s, p50 $p50, p99 $p99 ($n requests, $bad non-200, socket errors: $sockerr)"
  [ "$bad" = 0 ] || { cat "$WORK/wrk.$1.txt"; exit 1; }
}
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$SKIP_CACHED" = 0 ]; then
echo "wrk -t$WRK_THREADS -c$CONNS -d${SECONDS_CACHED}s --latency (cluster-mode title-cache hit, $PKG)"
rss0=$(rss)
hits0=$(metric hllm:title_cache_hits_total)
run_cached 1
rss1=$(rss)
run_cached 2
rss2=$(rss)
hits1=$(metric hllm:title_cache_hits_total)
echo "title cache hits during the runs: $(python3 -c "print(int(float('$hits1') - float('$hits0')))")"
echo "RSS: before $rss0 kB, after run 1 $rss1 kB, after run 2 $rss2 kB"
fi

# uncached: a new ad per request
cat >"$WORK/uncached.lua" <<'EOF'
local counter = 0
local tid = 0
function setup(thread) tid = tid + 1; thread:set("tid", tid) end
function request()
  counter = counter + 1
  local body = string.format('{"user": {"history": ["The Hobbit", "Dune", "Small Gods"]}, ' ..
    '"ad": {"title": "Uncached ad %d-%d-%d"}, "mode": "cluster", "max_new_tokens": 16}',
    tid, counter, math.random(1, 1000000000))
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
function done(summary, latency, requests)
  io.write(string.format("non2xx %d\n", summary.errors.status))
end
EOF
for c in $CONCURRENCY; do
  t0=$(metric hllm:time_to_first_token_seconds_sum); n0=$(metric hllm:time_to_first_token_seconds_count)
  g0=$(metric hllm:generated_tokens_total)
  wrk -t1 -c$c -d"${SECONDS_UNCACHED}s" --latency -s "$WORK/uncached.lua" "$URL/v1/titles" >"$WORK/wrk.u$c.txt"
  t1=$(metric hllm:time_to_first_token_seconds_sum); n1=$(metric hllm:time_to_first_token_seconds_count)
  g1=$(metric hllm:generated_tokens_total)
  rps=$(awk '/^Requests\/sec/ {print $2}' "$WORK/wrk.u$c.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$WORK/wrk.u$c.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk.u$c.txt")
  bad=$(awk '/^non2xx/ {print $2}' "$WORK/wrk.u$c.txt")
  python3 - "$c" "$rps" "$p50" "$p99" "$t0" "$t1" "$n0" "$n1" "$g0" "$g1" "$bad" "$SECONDS_UNCACHED" <<'EOF'
import sys
c, rps, p50, p99 = sys.argv[1:5]
t0, t1, n0, n1, g0, g1 = map(float, sys.argv[5:11])
bad, secs = sys.argv[11], float(sys.argv[12])
n = n1 - n0
print("uncached, concurrency %s: %s titles/s, p50 %s, p99 %s, mean TTFT %.2f ms over %d "
      "titles, %.0f generated tokens/s, %s non-200" %
      (c, rps, p50, p99, 1000 * (t1 - t0) / max(n, 1), n, (g1 - g0) / secs, bad))
EOF
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
