#!/usr/bin/env python3
"""hllm-creatord operations: API keys, TLS, scheduler and KV metrics, a non-streaming client's
disconnect, and the completeness of the config file and of the tests' option coverage.

usage: test_daemon_ops.py HLLM_CREATORD HLLM TESTS_DIR
Uses test_daemon.py's helpers (a real daemon on 127.0.0.1 and a free port; every response of
Daemon.req checked against proto/openapi.yaml)."""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import openapi_check  # noqa: E402
import test_daemon as td  # noqa: E402
from test_daemon import DAEMON, PKG, TESTS, Daemon, check, title_body  # noqa: E402

ROOT = os.path.dirname(TESTS.rstrip("/"))
CONF = os.path.join(ROOT, "deploy", "hllm-creatord.conf")
TMP = tempfile.mkdtemp(prefix="hllm-creatord-ops-")
ENDPOINTS = [("GET", "/readyz", None), ("GET", "/v1/model", None), ("GET", "/metrics", None),
             ("POST", "/v1/titles", title_body(["Dune"], "Auth ad", None, max_new_tokens=4)),
             ("POST", "/v1/titles:batch", {"requests": [title_body(["Dune"], "Auth ad", None,
                                                                   max_new_tokens=4)]}),
             ("POST", "/v1/users:embed", {"user": {"history": ["Dune"]}})]


def run(*args):
    return subprocess.run([DAEMON, *args], capture_output=True, text=True)


def write(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def metrics_text(d):
    return d.req("GET", "/metrics")[1]


def hist(text, name):
    """(count, sum, [(le, cumulative)]) of a histogram in /metrics text."""
    b, s, c = [], 0.0, 0
    for line in text.splitlines():
        if line.startswith(name + "_bucket{le=\""):
            le = line[len(name) + 12:line.index("\"}")]
            b.append((float("inf") if le == "+Inf" else float(le), int(line.rsplit(" ", 1)[1])))
        elif line.startswith(name + "_sum "):
            s = float(line.rsplit(" ", 1)[1])
        elif line.startswith(name + "_count "):
            c = int(line.rsplit(" ", 1)[1])
    return c, s, b


def gauge(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_for(fn, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return True
        time.sleep(0.02)
    return fn()


# ---- config completeness -------------------------------------------------------------------

def help_options():
    r = run("--help")
    check(r.returncode == 0, "--help exits 0")
    opts = set(re.findall(r"^  --([a-z][a-z-]+)", r.stdout, re.M))
    return opts - {"config", "help", "version"}


def conf_keys():
    keys = set()
    for line in open(CONF):
        m = re.match(r"^#?\s?([a-z][a-z-]+) = \S", line)
        if m:
            keys.add(m.group(1))
    return keys


def test_config_completeness():
    opts, keys = help_options(), conf_keys()
    check(len(opts) >= 20, "--help lists the options (%d)" % len(opts))
    check(opts - keys == set(), "options of --help missing in deploy/hllm-creatord.conf: %s" %
          sorted(opts - keys))
    check(keys - opts == set(), "keys of deploy/hllm-creatord.conf missing in --help: %s" %
          sorted(keys - opts))
    r = run("-t", "--config", CONF, "--model", PKG)
    check(r.returncode == 0 and "OK" in r.stderr, "the shipped conf passes -t: %s" % r.stderr)
    # every option is exercised by a test: as "--name" in an argument list, or "name = " in a
    # config file a test writes
    src = "".join(open(os.path.join(TESTS, "server", f)).read()
                  for f in ("test_daemon.py", "test_daemon_ops.py"))
    untested = sorted(o for o in opts if '"--%s"' % o not in src and "%s = " % o not in src)
    check(not untested, "options no daemon test uses: %s" % untested)


def test_untested_options():
    """--threads, --backend, --compute, --max-batch, --access-log: the other options are used
    by test_daemon.py."""
    d = Daemon("--threads", "1", "--backend", "cpu", "--compute", "bf16", "--max-batch", "2",
               "--access-log", "1", "--log-level", "error", "--item-cache-bytes", "1000000")
    try:
        st, b, _ = d.req("GET", "/v1/model")
        check(st == 200 and b.get("compute") == "bf16" and b.get("cpu_gemm") in
              ("openblas", "onednn"), "--compute bf16: /v1/model says so: %s %r" % (st, b))
        item = title_body(["Dune", "Emma"], "Options ad", None, max_new_tokens=6)
        ref = td.cli_generate(["Dune", "Emma"], "Options ad", None, max_new=6,
                              sampling=("--greedy", "--compute", "bf16"))
        st, b, _ = d.req("POST", "/v1/titles:batch", {"requests": [item, item]})
        check(st == 200 and [x.get("ids") for x in b.get("results", [])] == [ref["ids"]] * 2,
              "--max-batch 2 --compute bf16: 2 items answered, equal to hllm generate "
              "--compute bf16: %s %r" % (st, b))
        st, b, _ = d.req("POST", "/v1/titles:batch", {"requests": [item] * 3})
        check(st == 400 and "3" in b.get("error", "") and "max-batch" in b["error"] and
              "2" in b["error"], "--max-batch 2: 3 items -> 400 naming the limit: %s %r" % (st, b))
        # the item cache: "Dune" and "Emma" were embedded by the batch, a new history hits them
        h0, m0 = d.metric("hllm:item_cache_hits_total"), d.metric("hllm:item_cache_misses_total")
        st, _, _ = d.req("POST", "/v1/users:embed", {"user": {"history": ["Dune", "Emma", "Ivanhoe"]}})
        h1, m1 = d.metric("hllm:item_cache_hits_total"), d.metric("hllm:item_cache_misses_total")
        check(st == 200 and h1 - h0 == 2 and m1 - m0 == 1,
              "item cache: 2 hits and 1 miss for a history of 2 seen titles and a new one: "
              "%s hits %s -> %s, misses %s -> %s" % (st, h0, h1, m0, m1))
        st, b, _ = d.req("GET", "/v1/model")
        ic = b.get("caches", {}).get("item", {})
        check(d.metric("hllm:item_cache_max_bytes") == 1000000 and ic.get("max_bytes") == 1000000
              and 3 <= ic.get("entries", 0) == d.metric("hllm:item_cache_entries") and
              0 < ic.get("bytes", 0) <= 1000000,
              "--item-cache-bytes 1000000: bound, entries and bytes in /metrics and /v1/model: %r"
              % ic)
        st, _, _ = d.req("GET", "/no/such%01path")
        check(st == 404, "unknown path: %s" % st)
    finally:
        rc, log = d.stop()
    access = [ln.split(" ", 1)[1] for ln in log.splitlines() if " access req=" in ln]
    check(rc == 0, "--threads 1 --backend cpu --access-log 1: exit %s" % rc)
    check(not any(" info " in ln for ln in log.splitlines()),
          "--log-level error: no info lines beside the access log")

    def seen(pattern):
        return any(re.fullmatch(pattern, a) for a in access)
    check(seen(r"access req=0 GET /v1/model 200 \d+B -"), "access line of GET /v1/model: %r" %
          access)
    check(seen(r"access req=\d+ POST /v1/titles:batch 200 \d+B \d+\.\d\dms") and
          seen(r"access req=\d+ POST /v1/titles:batch 400 \d+B \d+\.\d\dms"),
          "access lines of the batches (200, 400) with bytes and ms: %r" % access)
    check(seen(r"access req=0 GET /no/such\?path 404 \d+B -"),
          "access line of the 404, control character replaced: %r" % access)
    for flag, bad in (("--backend", "tpu"), ("--threads", "-1"), ("--max-batch", "0"),
                      ("--compute", "fp8"), ("--access-log", "2")):
        r = run("-t", "--model", PKG, flag, bad)
        check(r.returncode == 2 and flag[2:] in r.stderr, "%s %s refused: %d %s" %
              (flag, bad, r.returncode, r.stderr[-200:]))
    r = run("-t", "--config", write(os.path.join(TMP, "b.conf"),
                                    "model = %s\nmax-batch = 3\nthreads = 1\nbackend = cpu\n"
                                    "compute = bf16\n" %
                                    PKG))
    check(r.returncode == 0, "max-batch / threads / backend / compute in a config file: %s" %
          r.stderr)


# ---- API keys ------------------------------------------------------------------------------

K_OPT = "opt-key-0123456789abcdefXYZ"
K_FILE = ["file-key-one-0123456789", "file-key-two-abcdefghijkl"]
K_NEW = "reloaded-key-9876543210zz"


def expect_401(d, method, path, body, key, invalid):
    st, b, h = d.req(method, path, body, key=key, headers=None)
    www = h.get("www-authenticate", "")
    check(st == 401 and isinstance(b, dict) and b.get("error") and
          www.startswith("Bearer realm=\"hllm-creatord\"") and
          ("invalid_token" in www) == invalid,
          "%s %s with key %r: 401 + WWW-Authenticate: %s %r %r" % (method, path, key, st, b, www))


def test_api_keys():
    kf = write(os.path.join(TMP, "keys"), "# API keys\n\n  %s  \n%s\n# old: none\n" % tuple(K_FILE))
    d = Daemon("--api-key", K_OPT, "--api-key-file", kf, key=K_FILE[0])
    try:
        st, b, _ = d.req("GET", "/healthz", key=False)
        check(st == 200 and b == {"status": "ok"}, "/healthz needs no key: %s" % st)
        n401 = 0
        for method, path, body in ENDPOINTS:
            expect_401(d, method, path, body, False, False)
            expect_401(d, method, path, body, "wrong-key-0123456789abc", True)
            n401 += 2
            for k in (K_OPT, *K_FILE):
                st, b, _ = d.req(method, path, body, key=k)
                check(st == 200, "%s %s with a valid key: %s %r" % (method, path, st, b))
        for bad in (K_FILE[0][:-1], K_FILE[0] + "x", K_FILE[0].upper(), "x" * 300):
            expect_401(d, "GET", "/v1/model", None, bad, True)
            n401 += 1
        for hdr in ("Basic " + K_FILE[0], K_FILE[0], "Bearer"):
            st, _, h = d.req("GET", "/v1/model", key=False, headers={"Authorization": hdr})
            check(st == 401 and "www-authenticate" in h, "Authorization %r: 401: %s" % (hdr, st))
            n401 += 1
        st, _, h = d.req("GET", "/v1/model", key=False, headers={"Authorization": "bearer  %s " %
                                                                 K_FILE[1]})
        check(st == 200, "the scheme is case-insensitive, spaces around the key ignored: %s" % st)
        expect_401(d, "GET", "/nope", None, False, False)  # before the path is looked at
        n401 += 1
        st, _, _ = d.req("GET", "/nope")
        check(st == 404, "an unknown path with a key: 404")
        st, _, _ = d.req("DELETE", "/v1/titles", key=False)
        check(st == 401, "a wrong method without a key: 401")
        n401 += 1
        st, raw, _ = d.req("POST", "/v1/titles", dict(ENDPOINTS[3][2], stream=True), raw=True)
        ev = td.sse_parse(raw)
        check(st == 200 and ev and ev[-1][0] == "done", "a stream with a key: %s" % ev[-1:])
        check(d.metric('hllm:requests_total{status="401"}') == n401,
              "requests_total{401} = %s, want %d" % (d.metric('hllm:requests_total{status="401"}'),
                                                    n401))
        # SIGHUP: the file's new keys replace its old ones (--api-key stays)
        write(kf, "%s\n" % K_NEW)
        d.p.send_signal(signal.SIGHUP)
        check(wait_for(lambda: d.req("GET", "/v1/model", key=K_NEW)[0] == 200, 20),
              "SIGHUP: the new key is accepted")
        d.key = K_NEW
        check(d.metric("hllm:api_key_reloads_total") == 1, "api_key_reloads_total 1")
        expect_401(d, "GET", "/v1/model", None, K_FILE[0], True)
        check(d.req("GET", "/v1/model", key=K_OPT)[0] == 200, "--api-key survives a reload")
        # a broken file on SIGHUP: the previous keys stay
        for broken in ("# nothing\n\n", "short\n"):
            write(kf, broken)
            f0 = d.metric("hllm:api_key_reload_failures_total")
            d.p.send_signal(signal.SIGHUP)
            check(wait_for(lambda: d.metric("hllm:api_key_reload_failures_total") == f0 + 1, 20),
                  "SIGHUP with a broken key file (%r) counted as a failure" % broken)
            check(d.req("GET", "/v1/model")[0] == 200 and
                  d.req("GET", "/v1/model", key=K_OPT)[0] == 200,
                  "the previous keys still work after a failed reload (%r)" % broken)
        os.chmod(kf, 0o644)
        write(kf, "%s\n" % K_FILE[1], 0o644)
        d.p.send_signal(signal.SIGHUP)
        check(wait_for(lambda: d.metric("hllm:api_key_reload_failures_total") == 3, 20) and
              d.req("GET", "/v1/model", key=K_FILE[1])[0] == 401,
              "a world-readable key file is refused on SIGHUP too")
    finally:
        rc, log = d.stop()
        check(rc == 0, "API-key daemon exits 0: %s" % rc)
        leaked = [k for k in (K_OPT, K_NEW, "wrong-key-0123456789abc", *K_FILE) if k in log]
        check(not leaked, "no key in the log: %s" % leaked)
        check("keeping the previous" in log, "a failed reload is logged")
    cases = [
        (["--api-key-file", os.path.join(TMP, "no-such-file")], "cannot open"),
        (["--api-key-file", TMP], "directory"),
        (["--api-key-file", write(os.path.join(TMP, "empty"), "\n# only comments\n  \n")],
         "no key"),
        (["--api-key-file", write(os.path.join(TMP, "open"), K_NEW + "\n", 0o644)],
         "other users"),
        (["--api-key-file", write(os.path.join(TMP, "bad"), "ok-key-0123456789abc\nwith space "
                                  "in-the-key-xx\n")], "line 2"),
        (["--api-key", "too-short"], "shorter than 16"),
    ]
    for args, want in cases:
        for t in ([], ["-t"]):
            r = run(*t, "--model", PKG, "--port", "0", *args)
            check(r.returncode == 1 and want in r.stderr and K_NEW not in r.stderr and
                  "in-the-key" not in r.stderr,
                  "%s %s: exit 1 with %r: %d %s" % (t, args, want, r.returncode, r.stderr[-300:]))
    r = run("-t", "--config", write(os.path.join(TMP, "k.conf"), "model = %s\napi-key = %s\n"
                                    "api-key-file = %s\n" % (PKG, K_OPT, kf)))
    check(r.returncode == 1 and "other users" in r.stderr, "api-key-file in a config file: %s" %
          r.stderr)
    os.chmod(kf, 0o600)
    r = run("-t", "--config", os.path.join(TMP, "k.conf"))
    check(r.returncode == 0 and "API keys required" in r.stderr and K_OPT not in r.stderr,
          "api-key / api-key-file in a config file: %s" % r.stderr)


# ---- TLS -----------------------------------------------------------------------------------

def make_cert(name):
    cert, key = os.path.join(TMP, name + ".pem"), os.path.join(TMP, name + "-key.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=IP:127.0.0.1,DNS:localhost"], capture_output=True)
    check(r.returncode == 0, "openssl req: %s" % r.stderr[-300:])
    os.chmod(key, 0o600)
    return cert, key


def curl(*args):
    return subprocess.run(["curl", "-sS", "--max-time", "60", *args], capture_output=True)


def test_tls():
    if not shutil.which("openssl") or not shutil.which("curl"):
        check(False, "openssl and curl are needed (deploy/install-deps.sh)")
        return
    cert, key = make_cert("tls")
    other, other_key = make_cert("other")
    d = Daemon("--tls-cert", cert, "--tls-key", key, "--api-key", K_OPT, key=K_OPT, ca=cert)
    try:
        base = "https://127.0.0.1:%d" % d.port
        r = curl("--cacert", cert, base + "/healthz")
        check(r.returncode == 0 and json.loads(r.stdout) == {"status": "ok"},
              "curl --cacert https /healthz: %d %r %r" % (r.returncode, r.stdout, r.stderr))
        r = curl("--cacert", other, base + "/healthz")
        check(r.returncode != 0, "curl with another CA refuses the certificate: %d" % r.returncode)
        r = curl("--cacert", cert, "-o", "/dev/null", "-w", "%{http_code}", base + "/v1/model")
        check(r.stdout == b"401", "https without a key: 401 (%r)" % r.stdout)
        body = title_body(["The Hobbit", "Dune"], "TLS ad", None, max_new_tokens=12)
        st, j, _ = d.req("POST", "/v1/titles", body)
        check(st == 200 and j.get("title"), "a title over https: %s %r" % (st, j))
        r = curl("--cacert", cert, "-N", "-H", "Authorization: Bearer " + K_OPT, "-H",
                 "Content-Type: application/json", base + "/v1/titles", "-d",
                 json.dumps(dict(body, stream=True)))
        ev = td.sse_parse(r.stdout) if r.returncode == 0 else []
        text = "".join(e["text"] for n, e in ev if n == "token")
        check(ev and ev[0][0] == "meta" and ev[-1][0] == "done" and text == j.get("title") and
              ev[-1][1].get("title") == j.get("title"),
              "curl -N streams over https, the same title: %r" % (ev[-2:],))
        for p in openapi_check.validate("POST", "/v1/titles", 200,
                                        {"content-type": "text/event-stream"}, r.stdout):
            check(False, "openapi (https stream): " + p)
        plain = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
        try:
            plain.request("GET", "/healthz")
            got = plain.getresponse().status
        except (OSError, http.client.HTTPException) as e:
            got = type(e).__name__
        check(not isinstance(got, int), "plain HTTP on the HTTPS port fails: %r" % (got,))
        st, _, _ = d.req("GET", "/healthz")
        check(st == 200, "still serving https after a plain-HTTP attempt")
    finally:
        rc, log = d.stop()
        check(rc == 0 and "HTTPS" in log, "TLS daemon exits 0 and logs HTTPS: %s" % rc)
    garbage = write(os.path.join(TMP, "garbage.pem"), "not a certificate\n")
    trunc = write(os.path.join(TMP, "trunc.pem"), open(cert).read()[:120] +
                  "\n-----END CERTIFICATE-----\n")
    cases = [
        (["--tls-cert", cert], 2, "without tls-key"),
        (["--tls-key", key], 2, "without tls-cert"),
        (["--tls-cert", os.path.join(TMP, "none.pem"), "--tls-key", key], 1, "cannot open"),
        (["--tls-cert", garbage, "--tls-key", key], 1, "not a PEM file"),
        (["--tls-cert", trunc, "--tls-key", key], 1, "not a usable certificate"),
        (["--tls-cert", cert, "--tls-key", other_key], 1, "do not match"),
        (["--tls-cert", TMP, "--tls-key", key], 1, "not a regular file"),
    ]
    for args, code, want in cases:
        for t in ([], ["-t"]):
            r = run(*t, "--model", PKG, "--port", "0", *args)
            check(r.returncode == code and want in r.stderr,
                  "%s %s: exit %d with %r: %d %s" % (t, args, code, want, r.returncode,
                                                     r.stderr[-300:]))
    r = run("-t", "--model", PKG, "--tls-cert", cert, "--tls-key", key)
    check(r.returncode == 0 and "HTTPS" in r.stderr, "-t with a good pair: %s" % r.stderr)
    r = run("-t", "--config", write(os.path.join(TMP, "t.conf"), "model = %s\ntls-cert = %s\n"
                                    "tls-key = %s\n" % (PKG, cert, key)))
    check(r.returncode == 0 and "HTTPS" in r.stderr, "tls-cert / tls-key in a config: %s" %
          r.stderr)


# ---- scheduler metrics, KV blocks, a non-streaming client's disconnect ---------------------

STEP = ("hllm:iteration_tokens_total", "hllm:scheduler_batch_size", "hllm:scheduler_step_seconds")


def sched(d):
    t = metrics_text(d)
    return ({n: hist(t, n) for n in STEP}, gauge(t, "hllm:kv_blocks_in_use"),
            gauge(t, "hllm:kv_blocks_total"), t)


def test_sched_metrics(d):
    h0, used0, total, t0 = sched(d)
    check(total and total > 0 and used0 is not None and 0 <= used0 <= total,
          "kv_blocks_total %r, kv_blocks_in_use %r" % (total, used0))
    for n in STEP:
        check(("# TYPE %s histogram" % n) in t0, "%s is a histogram" % n)
    gen0, pre0 = d.metric("hllm:generated_tokens_total"), d.metric("hllm:prefill_tokens_total")
    items = [title_body(["metrics %d" % i, "Dune"], "Step ad", None, mode="per_user",
                        max_new_tokens=24) for i in range(4)]
    w0 = time.time()
    st, b, _ = d.req("POST", "/v1/titles:batch", {"requests": items})
    wall = time.time() - w0
    check(st == 200 and all(x.get("status") == 200 for x in b.get("results", [])),
          "a batch of 4 per-user titles: %s" % st)
    ntok = sum(len(x.get("ids", [])) for x in b.get("results", []))
    h1, used1, total1, _ = sched(d)
    gen = d.metric("hllm:generated_tokens_total") - gen0
    pre = d.metric("hllm:prefill_tokens_total") - pre0
    steps = h1[STEP[2]][0] - h0[STEP[2]][0]
    check(steps > 0 and all(h1[n][0] - h0[n][0] == steps for n in STEP),
          "one observation per step in each histogram (%d steps)" % steps)
    bsum = h1[STEP[1]][1] - h0[STEP[1]][1]
    check(gen == ntok and bsum == gen, "batch sizes sum to the tokens generated (%s, %s, %s)" %
          (bsum, gen, ntok))
    le1 = dict(h1[STEP[1]][2]).get(1.0, 0) - dict(h0[STEP[1]][2]).get(1.0, 0)
    check(steps - le1 > 0, "some step generated for more than one request (%d of %d steps)" %
          (steps - le1, steps))
    isum = h1[STEP[0]][1] - h0[STEP[0]][1]
    check(pre + gen - 4 <= isum <= pre + gen, "step tokens (%s) = prefill (%s) + decode (%s - 4 "
          "to %s)" % (isum, pre, gen, gen))
    tsum = h1[STEP[2]][1] - h0[STEP[2]][1]
    check(0 < tsum <= wall, "step seconds (%.4f) within the request's wall time (%.4f)" %
          (tsum, wall))
    for n in STEP:
        cum = [v for _, v in h1[n][2]]
        check(cum == sorted(cum) and cum[-1] == h1[n][0], "%s: cumulative, +Inf = count" % n)
    check(total1 == total and wait_for(lambda: sched(d)[1] <= used1, 10),
          "kv gauges after the batch: %s / %s" % (used1, total1))


def raw_post(port, body, path="/v1/titles"):
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(data) + data)
    return s


def test_disconnect_non_streaming(d):
    """A client that closes its socket while its non-streaming request generates: its own job
    (per-user) is cancelled, a shared generation (cluster) left and, with nobody left,
    cancelled; the KV blocks come back (to the level with the prompt prefix cached)."""
    for mode, hist_ in (("per_user", ["zz"]), ("cluster", ["sf-long", "a"])):
        body = title_body(hist_, "loop", None, mode=mode, max_new_tokens=2000)
        st, _, _ = d.req("POST", "/v1/titles", dict(body, max_new_tokens=2, request_id="warm"))
        check(st == 200, "%s: warm-up request" % mode)
        check(wait_for(lambda: d.metric("hllm:requests_running") == 0, 20), "idle")
        base = sched(d)[1]
        canc0 = d.metric("hllm:cancelled_total")
        tok0 = d.metric("hllm:generated_tokens_total")
        s = raw_post(d.port, body)
        check(wait_for(lambda: d.metric("hllm:generated_tokens_total") > tok0 + 20, 60) and
              sched(d)[1] > base, "%s: generating, KV blocks taken" % mode)
        s.close()
        check(wait_for(lambda: d.metric("hllm:cancelled_total") == canc0 + 1, 30),
              "%s: the disconnect cancelled the generation" % mode)
        check(wait_for(lambda: sched(d)[1] == base, 30),
              "%s: KV blocks back to %s (now %s)" % (mode, base, sched(d)[1]))
        check(d.metric("hllm:requests_running") == 0 and
              d.metric("hllm:title_generations_in_flight") == 0, "%s: nothing left running" % mode)
        tok = d.metric("hllm:generated_tokens_total") - tok0
        check(tok < 1500, "%s: the generation stopped early (%d of ~2000 tokens)" % (mode, tok))
    # a batch: its per-user item's job is cancelled, its cluster-mode item leaves its shared
    # generation (cancelled: nobody else waits), a third item already answered stays answered
    items = [title_body(["zz"], "loop", None, mode="per_user", max_new_tokens=2000),
             title_body(["sf-long", "a"], "loop", None, max_new_tokens=1998),
             title_body(["Dune"], "Batch short", None, max_new_tokens=2)]
    st, _, _ = d.req("POST", "/v1/titles:batch", {"requests": [dict(i, max_new_tokens=2)
                                                                for i in items]})
    check(st == 200 and wait_for(lambda: d.metric("hllm:requests_running") == 0, 20),
          "batch warm-up")
    base = sched(d)[1]
    canc0 = d.metric("hllm:cancelled_total")
    tok0 = d.metric("hllm:generated_tokens_total")
    s = raw_post(d.port, {"requests": items}, "/v1/titles:batch")
    check(wait_for(lambda: d.metric("hllm:generated_tokens_total") > tok0 + 40 and
                   d.metric("hllm:title_generations_in_flight") == 1, 60), "batch: generating")
    s.close()
    check(wait_for(lambda: d.metric("hllm:cancelled_total") == canc0 + 2, 30),
          "batch: both long items cancelled (%s)" % (d.metric("hllm:cancelled_total") - canc0))
    check(wait_for(lambda: sched(d)[1] == base, 30) and
          d.metric("hllm:title_generations_in_flight") == 0 and
          d.metric("hllm:requests_running") == 0, "batch: KV blocks back, nothing running")
    st, b, _ = d.req("POST", "/v1/titles:batch", {"requests": items[2:]})
    check(st == 200 and b["results"][0].get("status") == 200, "serving after a batch disconnect")
    # a client that waits still gets its answer, also twice on one keep-alive connection
    c = d.conn()
    for i in range(2):
        b = json.dumps(title_body(["keep", "alive"], "Keep-alive ad %d" % i, None,
                                  max_new_tokens=30, mode="per_user"))
        c.request("POST", "/v1/titles", body=b, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        check(r.status == 200 and len(json.loads(data)["ids"]) >= 1,
              "keep-alive request %d answered: %s" % (i, r.status))
    c.close()


def test_notify_not_read():
    """A $NOTIFY_SOCKET nobody reads (a stalled PID 1): its queue fills after 10 datagrams
    (net.unix.max_dgram_qlen), which used to block the loop thread inside sd_notify: no answer,
    no SIGTERM. The daemon must keep answering; READY=1 still comes first and STOPPING=1 last."""
    path = os.path.join(TMP, "notify.sock")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(path)
    d = Daemon("--title-cache-bytes", "0", env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"},
               wait=False)
    try:
        time.sleep(2.5)  # 50 ms pings: the socket's queue is full after half a second
        t0 = time.time()
        st, _, _ = d.req("GET", "/healthz")
        st2, b, _ = d.req("POST", "/v1/titles", title_body(["Dune"], "Unread notify ad", None,
                                                        max_new_tokens=4))
        check(st == 200 and st2 == 200 and time.time() - t0 < 30,
              "answers while $NOTIFY_SOCKET is not read: %s %s in %.1f s" %
              (st, st2, time.time() - t0))
    finally:
        # now a reader comes back (systemd catching up): the queued messages, then STOPPING=1
        msgs = []
        ns.settimeout(0.5)

        def drain():
            try:
                while True:
                    msgs.append(ns.recv(65536).decode())
            except OSError:
                pass
        reader = threading.Thread(target=drain)
        reader.start()
        rc, _ = d.stop()
        reader.join()
    check(rc == 0, "exit after SIGTERM with $NOTIFY_SOCKET not read: %s" % rc)
    ns.close()
    check(msgs and msgs[0].startswith("READY=1") and msgs[-1] == "STOPPING=1" and
          "WATCHDOG=1" in msgs, "READY=1 first, WATCHDOG=1, STOPPING=1 last: %r" %
          (msgs[:2] + msgs[-2:],))


def main():
    test_config_completeness()
    test_notify_not_read()
    test_untested_options()
    test_api_keys()
    test_tls()
    d = Daemon()
    try:
        test_sched_metrics(d)
        test_disconnect_non_streaming(d)
    finally:
        rc, log = d.stop()
        check(rc == 0 and "AddressSanitizer" not in log and "LeakSanitizer" not in log,
              "ops daemon exit %s:\n%s" % (rc, log[-2000:]))
    for want in (("/v1/titles", "post", 401), ("/v1/model", "get", 401), ("/metrics", "get", 401),
                 ("/v1/users:embed", "post", 401), ("/v1/titles:batch", "post", 401),
                 ("/readyz", "get", 401), ("/healthz", "get", 200), ("?", "get", 401)):
        check(want in openapi_check.SEEN, "the openapi check saw %r" % (want,))
    check(not openapi_check.SPEC_PROBLEMS, "proto/openapi.yaml is valid OpenAPI 3.0: %s" %
          openapi_check.SPEC_PROBLEMS)
    shutil.rmtree(TMP, ignore_errors=True)
    if td.FAILS:
        print("%d failure(s)" % len(td.FAILS))
        sys.exit(1)
    print("all daemon ops tests passed")


if __name__ == "__main__":
    main()
