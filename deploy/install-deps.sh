#!/usr/bin/env bash
# Installs every Debian package that hllm-creator's build and tests need. Idempotent: packages
# already present are left alone and apt is not even asked. Run as root (or through sudo).
#   deploy/install-deps.sh          build + test dependencies
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git python3 python3-pip
  libopenblas-dev        # BLAS for the CPU backend's matrix products
  libdnnl-dev            # oneDNN: the CPU backend's prefill GEMM, f32 and bf16 (OpenBLAS without it)
  libpcre2-dev           # Unicode regex for the tokenizer's pre-tokenizers
  libutf8proc-dev        # NFC normalization
  libjansson-dev         # JSON: configs, tokenizer.json, CLI and HTTP I/O
  libfaiss-dev           # k-means and cluster assignment (static libfaiss.a + C API headers)
  libxxhash-dev          # XXH3: cache keys, package digest (engine/creator/title_key.c)
  libuv1-dev             # the daemon's event loop
  libmicrohttpd-dev      # the daemon's HTTP server
  libsystemd-dev         # the daemon's sd_notify (READY, RELOADING, STOPPING, WATCHDOG)
  valgrind               # memcheck run of the engine tests
  systemd                # test: systemd-analyze verify of deploy/hllm-creatord.service
  nginx-light            # test: nginx -t of deploy/nginx-lb.conf (tests/cli/deploy_units.sh)
  curl                   # deploy/demo.sh (the README's main job) and its test
  openssl                # test: a self-signed certificate for the daemon's HTTPS (tests/server)
  python3-yaml python3-jsonschema  # test: responses checked against proto/openapi.yaml
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
