#!/usr/bin/env bash
# Checks the deployment files: deploy/hllm-creatord.service with `systemd-analyze verify` (the
# ExecStart binary replaced by a temp copy, since verify needs it to exist) and the required
# service/hardening directives; deploy/nginx-lb.conf with `nginx -t` and its SSE-safe settings.
# Both checkers must also reject a broken copy, so the test cannot pass vacuously.
# usage: deploy_units.sh /path/to/hllm /path/to/tests
set -u
HLLM=$1
TESTS=$2
ROOT=$(cd "$TESTS/.." && pwd)
UNIT=$ROOT/deploy/hllm-creatord.service
NGX=$ROOT/deploy/nginx-lb.conf
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

command -v systemd-analyze >/dev/null || { echo "deploy_units: systemd-analyze missing (deploy/install-deps.sh)" >&2; exit 1; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "deploy_units: nginx missing (deploy/install-deps.sh)" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# --- systemd unit ---
cp "$HLLM" "$TMP/hllm-creatord"
chmod 755 "$TMP/hllm-creatord"
sed "s#/usr/local/bin/hllm-creatord#$TMP/hllm-creatord#g" "$UNIT" >"$TMP/hllm-creatord.service"
grep -q "$TMP/hllm-creatord --config /etc/hllm-creatord.conf" "$TMP/hllm-creatord.service" || bad "ExecStart path not substituted"
out=$(systemd-analyze verify "$TMP/hllm-creatord.service" 2>&1)
rc=$?
# verify also reports on unrelated host units; only lines naming ours count
mine=$(grep -i "hllm-creatord" <<<"$out")
if [ $rc -ne 0 ] || [ -n "$mine" ]; then bad "systemd-analyze verify: rc $rc: $out"; else ok; fi

# a misspelt directive and a missing binary must be reported (the check is not vacuous)
sed 's/^TimeoutStopSec=/TimeoutStopSecs=/' "$TMP/hllm-creatord.service" >"$TMP/broken1.service"
grep -qi "unknown key\|TimeoutStopSecs" <<<"$(systemd-analyze verify "$TMP/broken1.service" 2>&1)" && ok || bad "verify missed a bad key"
sed "s#$TMP/hllm-creatord#$TMP/absent-binary#g" "$TMP/hllm-creatord.service" >"$TMP/broken2.service"
systemd-analyze verify "$TMP/broken2.service" >/dev/null 2>&1 && bad "verify accepted a missing ExecStart binary" || ok

# the daemon speaks sd_notify (READY/RELOADING/STOPPING/WATCHDOG) and reloads on SIGHUP
# (tests/server/test_daemon.py checks that against a NOTIFY_SOCKET it binds)
for d in 'Type=notify' 'NotifyAccess=main' 'WatchdogSec=30' 'ExecReload=/bin/kill -HUP $MAINPID'; do
    grep -qxF -- "$d" "$UNIT" && ok || bad "unit lacks $d"
done
grep -q '^Type=exec' "$UNIT" && bad "the unit still says Type=exec" || ok
# the daemon must really link libsystemd's sd_notify (the unit would time out at start otherwise)
DAEMON_BIN=$(dirname "$HLLM")/../server/hllm-creatord
if [ -x "$DAEMON_BIN" ]; then
    grep -q "WATCHDOG=1" "$DAEMON_BIN" && grep -q "READY=1" "$DAEMON_BIN" && ok || bad "hllm-creatord has no sd_notify states"
fi
# a Type=notify unit with a typo in the watchdog key must be reported (not vacuous)
sed 's/^WatchdogSec=/WatchdogSecs=/' "$TMP/hllm-creatord.service" >"$TMP/broken3.service"
grep -qi "unknown key\|WatchdogSecs" <<<"$(systemd-analyze verify "$TMP/broken3.service" 2>&1)" && ok || bad "verify missed a bad watchdog key"
for d in 'DynamicUser=yes' \
    'ProtectSystem=strict' 'ProtectHome=yes' 'PrivateTmp=yes' 'NoNewPrivileges=yes' \
    'CapabilityBoundingSet=' 'SystemCallFilter=@system-service' 'RestrictAddressFamilies=' \
    'ReadOnlyPaths=' 'StateDirectory=' 'RuntimeDirectory=' '--config /etc/hllm-creatord.conf'; do
    grep -qF -- "$d" "$UNIT" && ok || bad "unit lacks $d"
done
# MemoryDenyWriteExecute breaks the CUDA driver's JIT: it must not be switched on by default
grep -q '^MemoryDenyWriteExecute=yes' "$UNIT" && bad "MemoryDenyWriteExecute=yes is on (CUDA JIT)" || ok
# the config the unit points at uses only the daemon's option names: check it with the shipped example
grep -q '^model = ' "$ROOT/deploy/hllm-creatord.conf" && ok || bad "deploy/hllm-creatord.conf has no model key"

# --- nginx ---
mkdir -p "$TMP/ngx/logs"
out=$("$NGINX" -t -p "$TMP/ngx" -e stderr -c "$NGX" 2>&1) && ok || bad "nginx -t: $out"
sed 's/least_conn;/least_conn/' "$NGX" >"$TMP/broken.conf"
"$NGINX" -t -p "$TMP/ngx" -e stderr -c "$TMP/broken.conf" >/dev/null 2>&1 && bad "nginx -t accepted a broken config" || ok
for d in 'least_conn;' 'proxy_buffering off;' 'proxy_http_version 1.1;' 'proxy_set_header Connection "";' \
    'proxy_read_timeout' 'keepalive'; do
    grep -qF -- "$d" "$NGX" && ok || bad "nginx-lb.conf lacks $d"
done
n=$(grep -c '^\s*server 127\.0\.0\.1:' "$NGX")
[ "$n" -ge 2 ] && ok || bad "nginx-lb.conf has $n replicas (want >= 2)"

# docs/SERVICE.md's install step: `cmake --install BUILD --prefix P` puts both binaries in P/bin
BUILD=$(dirname "$(dirname "$HLLM")")
if [ -f "$BUILD/cmake_install.cmake" ]; then
    cmake --install "$BUILD" --prefix "$TMP/inst" >/dev/null 2>"$TMP/inst.err" &&
        [ -x "$TMP/inst/bin/hllm-creatord" ] && [ -x "$TMP/inst/bin/hllm" ] &&
        "$TMP/inst/bin/hllm-creatord" --help 2>&1 | grep -q -- '--config' && ok ||
        bad "cmake --install --prefix: $(cat "$TMP/inst.err")"
else
    bad "no cmake_install.cmake in $BUILD (the hllm binary is not in a CMake build tree)"
fi
echo "deploy_units: $pass passed, $fail failed"
[ $fail -eq 0 ]
