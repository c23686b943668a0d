#!/usr/bin/env python3
"""End-to-end tests of hllm-creatord over HTTP (stdlib only).

usage: test_daemon.py HLLM_CREATORD HLLM TESTS_DIR
Starts the real daemon on 127.0.0.1 with a free port on tests/data/creator/tiny."""
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

DAEMON, HLLM, TESTS = sys.argv[1], sys.argv[2], sys.argv[3]
PKG = os.path.join(TESTS, "data", "creator", "tiny")
FAILS = []
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import openapi_check  # noqa: E402  every response of Daemon.req is checked against the spec


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Daemon:
    def __init__(self, *extra, env=None, wait=True, key=None, ca=None):
        """key: the API key sent as Authorization: Bearer; ca: HTTPS with this CA file."""
        self.key, self.ca = key, ca
        self.port = free_port()
        self.log = open(os.path.join("/tmp", "hllm-creatord-test-%d.log" % self.port), "w+")
        full_env = dict(os.environ)
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            full_env.pop(k, None)
        full_env.update(env or {})
        self.p = subprocess.Popen([DAEMON, "--model", PKG, "--port", str(self.port),
                                   "--log-level", "debug", *extra],
                                  stderr=self.log, stdout=subprocess.DEVNULL, env=full_env)
        if wait:
            self.wait_ready()

    def wait_ready(self):
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                st, _, _ = self.req("GET", "/readyz")
                if st == 200:
                    return
            except OSError:
                pass
            if self.p.poll() is not None:
                raise RuntimeError("daemon exited with %s" % self.p.returncode)
            time.sleep(0.1)
        raise RuntimeError("daemon not ready")

    def conn(self):
        if self.ca:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=120,
                                               context=ssl.create_default_context(cafile=self.ca))
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def req(self, method, path, body=None, ctype="application/json", raw=False, headers=None,
            key=True):
        """key: send self.key (True), no Authorization (False), or this string as the key."""
        c = self.conn()
        headers = dict(headers or {})
        k = self.key if key is True else key or None
        if k:
            headers["Authorization"] = "Bearer " + k
        if body is not None:
            if not isinstance(body, (bytes, bytearray)):
                body = json.dumps(body).encode()
            if ctype:
                headers["Content-Type"] = ctype
        c.request(method, path, body=body, headers=headers)
        try:
            r = c.getresponse()
            data = r.read()
        except socket.timeout:
            self.dump("%s %s: no answer in %ss" % (method, path, c.timeout))
            raise
        c.close()
        hdrs = dict((k.lower(), v) for k, v in r.getheaders())
        for p in openapi_check.validate(method, path, r.status, hdrs, data):
            check(False, "openapi: " + p)
        if raw:
            return r.status, data, hdrs
        try:
            return r.status, json.loads(data) if data else None, hdrs
        except ValueError:
            return r.status, data.decode("utf-8", "replace"), hdrs

    def metric(self, name):
        st, text, _ = self.req("GET", "/metrics")
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def dump(self, why):
        """A hung daemon: its log's tail and every thread's stack (gdb, when installed) on
        stderr, so that a failure the test cannot reproduce still says where it stopped."""
        print("daemon %d: %s; its log ends with:" % (self.p.pid, why), file=sys.stderr)
        self.log.flush()
        with open(self.log.name, errors="replace") as f:
            sys.stderr.write("".join(f.readlines()[-40:]))
        if self.p.poll() is None and shutil.which("gdb"):
            try:
                bt = subprocess.run(["gdb", "-p", str(self.p.pid), "-batch", "-nx", "-ex",
                                     "thread apply all bt"], capture_output=True, text=True,
                                    timeout=120)
                sys.stderr.write(bt.stdout[-20000:])
            except (OSError, subprocess.SubprocessError) as e:
                print("gdb: %s" % e, file=sys.stderr)

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.dump("still running 120 s after SIGTERM")
            self.p.kill()
            self.p.wait()
            raise
        self.log.seek(0)
        return rc, self.log.read()


def sse_parse(data):
    """Parses text/event-stream as a client does: events separated by blank lines."""
    events = []
    name, datas = "message", []
    for line in data.decode("utf-8").split("\n"):
        if line == "":
            if datas:
                events.append((name, json.loads("\n".join(datas))))
            name, datas = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "event":
                name = value
            elif field == "data":
                datas.append(value)
    return events


CASES = [
    (["The Hobbit", "Dune", "Small Gods"], "Night Flight", "A pilot crosses the Andes."),
    (["Dune"], "Cooking at home", None),
    (["A", "B", "C", "D", "E"], "Kyoto in autumn", "Temples and maples."),
]


def title_body(hist, title, desc, **kw):
    ad = {"title": title}
    if desc is not None:
        ad["description"] = desc
    b = {"user": {"history": hist}, "ad": ad, "sampling": {"greedy": True}, "max_new_tokens": 16}
    b.update(kw)
    return b


def cli_generate(hist, title, desc, max_new=16, per_user=False, sampling=("--greedy",)):
    line = {"history": hist, "ad": {"title": title}}
    if desc is not None:
        line["ad"]["description"] = desc
    args = [HLLM, "generate", "--model", PKG, *sampling, "--max-new", str(max_new)]
    if per_user:
        args.append("--per-user")
    out = subprocess.run(args, input=(json.dumps(line) + "\n").encode(), capture_output=True,
                         check=True)
    return json.loads(out.stdout)


def test_endpoints(d):
    st, b, _ = d.req("GET", "/healthz")
    check(st == 200 and b["status"] == "ok", "healthz")
    st, b, _ = d.req("GET", "/readyz")
    check(st == 200, "readyz")
    st, b, _ = d.req("GET", "/v1/model")
    check(st == 200 and b["dims"]["creative"] > 0 and b["clusters"] > 0 and b["max_history"] == 50,
          "v1/model: %r" % (b,))
    st, b, _ = d.req("POST", "/v1/users:embed", {"user": {"history": ["The Hobbit", "Dune"]},
                                                 "full": True})
    check(st == 200 and isinstance(b["cluster"], int) and "score" in b and len(b["u"]) ==
          (d.req("GET", "/v1/model")[1]["dims"]["user"]), "users:embed: %r" % (b,))
    cli = subprocess.run([HLLM, "embed", "--model", PKG], capture_output=True, check=True,
                         input=b'{"history": ["The Hobbit", "Dune"]}\n')
    check(json.loads(cli.stdout)["cluster"] == b["cluster"], "embed cluster equals the CLI's")
    hs = [["The Hobbit", "Dune"], ["Small Gods"], ["A", "B", "C"]]
    st, bb, _ = d.req("POST", "/v1/users:embed", {"users": [{"history": h} for h in hs],
                                                  "request_id": "b1"})
    check(st == 200 and len(bb["results"]) == 3 and bb["request_id"] == "b1", "batch embed: %r" % (bb,))
    for h, res in zip(hs, bb.get("results", [])):
        st1, one, _ = d.req("POST", "/v1/users:embed", {"user": {"history": h}})
        check(res.get("cluster") == one["cluster"], "batch result equals single: %r %r" % (res, one))
    st, bb, _ = d.req("POST", "/v1/users:embed", {"users": [{"history": ["a"]}, {"history": []}]})
    check(st == 400 and "users[1].history" in bb["error"], "batch names the bad entry: %r" % (bb,))
    st, text, h = d.req("GET", "/metrics")
    check(st == 200 and "hllm:requests_total" in text and "hllm:generated_tokens_total" in text
          and "hllm:prefill_tokens_total" in text and "hllm:prefix_hits_total" in text
          and "hllm:cancelled_total" in text and "hllm:rejected_total" in text
          and "hllm:requests_running" in text and "hllm:requests_waiting" in text, "metrics")


def test_titles_match_cli(d):
    for hist, title, desc in CASES:
        ref = cli_generate(hist, title, desc)
        st, b, _ = d.req("POST", "/v1/titles", title_body(hist, title, desc, request_id="t1"))
        check(st == 200, "titles status %d %r" % (st, b))
        if st != 200:
            continue
        check(b["title"] == ref["title"] and b["cluster"] == ref["cluster"] and
              b["ids"] == ref["ids"] and b["finish"] == ref["finish"],
              "HTTP title equals hllm generate: %r vs %r" % (b, ref))
        check(set(b["timings"]) == {"queue", "embed", "generate", "total"}, "timings")
        check(b.get("request_id") == "t1", "request_id echoed")
        st, raw, h = d.req("POST", "/v1/titles", title_body(hist, title, desc, stream=True), raw=True)
        check(st == 200 and h.get("content-type", "").startswith("text/event-stream"), "stream ctype")
        ev = sse_parse(raw)
        names = [n for n, _ in ev]
        check(names[0] == "meta" and names[-1] == "done" and
              all(n == "token" for n in names[1:-1]), "stream event order %r" % names)
        text = "".join(e["text"] for n, e in ev if n == "token")
        check(text == b["title"] and ev[-1][1]["title"] == b["title"],
              "streamed text equals the title: %r vs %r" % (text, b["title"]))
        check(ev[0][1]["cluster"] == b["cluster"], "stream meta cluster")


def test_bad_inputs(d):
    T = "/v1/titles"
    good = title_body(["a", "b"], "x", None)
    table = [
        ("malformed JSON", "POST", T, b'{"user": ', "application/json", 400),
        ("not an object", "POST", T, b'[1,2]', "application/json", 400),
        ("history wrong type", "POST", T, {"user": {"history": "abc"}, "ad": {"title": "x"}}, "application/json", 400),
        ("title wrong type", "POST", T, {"user": {"history": [1]}, "ad": {"title": "x"}}, "application/json", 400),
        ("ad.title missing", "POST", T, {"user": {"history": ["a"]}, "ad": {}}, "application/json", 400),
        ("stream wrong type", "POST", T, dict(good, stream="yes"), "application/json", 400),
        ("mode bad", "POST", T, dict(good, mode="everyone"), "application/json", 400),
        ("invalid UTF-8", "POST", T, b'{"user": {"history": ["\xff\xfe"]}, "ad": {"title": "x"}}', "application/json", 400),
        ("NUL in a title", "POST", T, b'{"user": {"history": ["a\\u0000b"]}, "ad": {"title": "x"}}', "application/json", 400),
        ("10 MB body", "POST", T, b'{"x": "' + b"a" * (10 << 20) + b'"}', "application/json", 413),
        ("empty history", "POST", T, {"user": {"history": []}, "ad": {"title": "x"}}, "application/json", 400),
        ("10,000 titles", "POST", T, {"user": {"history": ["t"] * 10000}, "ad": {"title": "x"}}, "application/json", 400),
        ("1 MB title", "POST", "/v1/users:embed", {"user": {"history": ["a" * 900000]}}, "application/json", 400),
        ("unknown fields ignored", "POST", T, dict(good, colour="blue"), "application/json", 200),
        ("wrong content type", "POST", T, good, "text/plain", 415),
        ("no content type", "POST", T, good, None, 415),
        ("wrong method", "GET", T, None, None, 405),
        ("wrong method on GET path", "POST", "/healthz", good, "application/json", 405),
        ("unknown path", "GET", "/nope", None, None, 404),
    ]
    for what, method, path, body, ctype, want in table:
        st, b, _ = d.req(method, path, body, ctype)
        check(st == want, "%s: status %d, want %d (%r)" % (what, st, want, b if not isinstance(b, str) else b[:200]))
        if want >= 400 and want != 405 or want == 405:
            check(isinstance(b, dict) and isinstance(b.get("error"), str) and b["error"],
                  "%s: JSON error body" % what)
    st, b, _ = d.req("POST", T, {"user": {"history": ["t"] * 10000}, "ad": {"title": "x"}})
    check("user.history" in b["error"] and "1000" in b["error"], "history limit names field and limit: %r" % b)
    st, b, _ = d.req("POST", "/v1/users:embed", {"user": {"history": ["a" * 900000]}})
    check("user.history[0]" in b["error"] and "4096" in b["error"], "title limit names field: %r" % b)
    st, _, _ = d.req("GET", "/healthz")
    check(st == 200, "still serving after bad inputs")


def test_disconnect_cancels(d):
    before = d.metric("hllm:cancelled_total")
    body = json.dumps(title_body(["a", "b"], "long", None, stream=True, max_new_tokens=4000,
                                 sampling={"greedy": True})).encode()
    s = socket.create_connection(("127.0.0.1", d.port))
    s.sendall(b"POST /v1/titles HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    got = b""
    while b"event: token" not in got:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    s.close()
    check(b"event: token" in got, "stream started before disconnect")
    deadline = time.time() + 60
    while time.time() < deadline and d.metric("hllm:cancelled_total") <= before:
        time.sleep(0.05)
    check(d.metric("hllm:cancelled_total") > before, "disconnect cancelled the request")
    st, _, _ = d.req("POST", "/v1/titles", title_body(["a"], "x", None))
    check(st == 200, "serving after a cancel")


def test_queue_full():
    d = Daemon("--max-queued", "1")
    try:
        results = []
        lock = threading.Lock()

        def one(i):
            st, b, h = d.req("POST", "/v1/titles", title_body(["h%d" % i, "x"], "ad %d" % i, None))
            with lock:
                results.append((st, b, h))

        ts = [threading.Thread(target=one, args=(i,)) for i in range(40)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        codes = [r[0] for r in results]
        check(codes.count(429) > 0, "some 429 under a full queue: %r" % codes)
        check(all(c in (200, 429) for c in codes), "only 200/429: %r" % codes)
        check(all(r[2].get("retry-after") for r in results if r[0] == 429), "429 has Retry-After")
        check(all(r[1].get("title") is not None for r in results if r[0] == 200), "accepted ones complete")
        check(d.metric("hllm:rejected_total") == codes.count(429), "rejected metric")
    finally:
        rc, _ = d.stop()
        check(rc == 0, "exit 0 after queue test: %s" % rc)


def test_sigterm_drains():
    d = Daemon()
    body = json.dumps(title_body(["a", "b"], "drain", None, stream=True, max_new_tokens=200)).encode()
    c = d.conn()
    c.request("POST", "/v1/titles", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    first = r.read1(64) if hasattr(r, "read1") else b""
    d.p.send_signal(signal.SIGTERM)
    rest = r.read()
    ev = sse_parse(first + rest)
    check(ev and ev[-1][0] == "done", "in-flight stream completed after SIGTERM: %r" % ev[-1:])
    rc = d.p.wait(timeout=120)
    check(rc == 0, "SIGTERM exit code %s" % rc)
    d.log.seek(0)
    log = d.log.read()
    check("SIGTERM" in log and "drained" in log, "drain logged")
    check("ERROR: LeakSanitizer" not in log and "AddressSanitizer" not in log, "no sanitizer report")


def test_check_only():
    r = subprocess.run([DAEMON, "-t", "--model", PKG], capture_output=True, text=True)
    check(r.returncode == 0 and "OK" in r.stderr, "-t good package: %d %s" % (r.returncode, r.stderr))
    r = subprocess.run([DAEMON, "-t", "--model", os.path.join(TESTS, "data")], capture_output=True, text=True)
    check(r.returncode == 1 and "creator.json" in r.stderr, "-t bad package: %d %s" % (r.returncode, r.stderr))
    r = subprocess.run([DAEMON, "--version"], capture_output=True, text=True)
    check(r.returncode == 0 and "hllm-creatord" in r.stdout, "--version")
    r = subprocess.run([DAEMON, "--help"], capture_output=True, text=True)
    check(r.returncode == 0 and "--max-queued" in r.stdout, "--help")
    r = subprocess.run([DAEMON, "--model", PKG, "--port", "x"], capture_output=True, text=True)
    check(r.returncode == 2 and "port" in r.stderr, "bad option: exit 2")
    conf = os.path.join(os.path.dirname(TESTS.rstrip("/")), "deploy", "hllm-creatord.conf")
    r = subprocess.run([DAEMON, "-t", "--config", conf, "--model", PKG], capture_output=True, text=True)
    check(r.returncode == 0, "-t on deploy/hllm-creatord.conf: %s" % r.stderr)
    cfg = "/tmp/hllm-creatord-test.conf"
    with open(cfg, "w") as f:
        f.write("# test\nmodel = %s\nmax-queued = 7\n" % PKG)
    r = subprocess.run([DAEMON, "-t", "--config", cfg], capture_output=True, text=True)
    check(r.returncode == 0, "-t --config: %s" % r.stderr)
    with open(cfg, "w") as f:
        f.write("model = %s\nno-such = 1\n" % PKG)
    r = subprocess.run([DAEMON, "-t", "--config", cfg], capture_output=True, text=True)
    check(r.returncode == 2 and "no-such" in r.stderr, "unknown config key: %s" % r.stderr)


def test_limit_flags():
    """Every limit flag as a long option (the flags override the defaults the bad-input table
    uses): body, history titles, title bytes, connections, listen address, drain timeout."""
    d = Daemon("--listen", "127.0.0.1", "--max-body-bytes", "400", "--max-history-titles", "3",
               "--max-title-bytes", "10", "--max-connections", "2", "--drain-timeout", "5")
    try:
        ok = title_body(["a", "b"], "Dune", None)
        st, _, _ = d.req("POST", "/v1/titles", ok)
        check(st == 200, "small limits: a request within them -> %s" % st)
        big = title_body(["x" * 8] * 3, "Dune", "y" * 400)
        st, body, _ = d.req("POST", "/v1/titles", big)
        check(st == 413, "--max-body-bytes 400: a 500-byte body -> %s %s" % (st, body))
        st, body, _ = d.req("POST", "/v1/titles", title_body(["a", "b", "c", "d"], "Dune", None))
        check(st == 400 and "3" in json.dumps(body), "--max-history-titles 3: 4 titles -> %s %s" % (st, body))
        st, body, _ = d.req("POST", "/v1/titles", title_body(["abcdefghijk"], "Dune", None))
        check(st == 400 and "10" in json.dumps(body), "--max-title-bytes 10: 11 bytes -> %s %s" % (st, body))
        # two idle connections take the limit; a third is not served while they are held (it
        # waits in the listen backlog); after they close, it and later requests are served
        held = [socket.create_connection(("127.0.0.1", d.port)) for _ in range(2)]
        time.sleep(0.3)
        served = True
        try:
            c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=1.5)
            c.request("GET", "/healthz")
            c.getresponse().read()
            c.close()
        except OSError:
            served = False
        check(not served, "--max-connections 2: a third connection was served while two are held")
        for h in held:
            h.close()
        time.sleep(0.3)
        st, _, _ = d.req("GET", "/healthz")
        check(st == 200, "after the held connections close: /healthz -> %s" % st)
    finally:
        rc, log = d.stop()
        check(rc == 0, "limit flags: exit 0 on SIGTERM: %s" % rc)
    for flag, bad in (("--max-body-bytes", "0"), ("--max-connections", "x"), ("--drain-timeout", "-1"),
                      ("--listen", "not-an-address")):
        r = subprocess.run([DAEMON, "-t", "--model", PKG, flag, bad], capture_output=True, text=True)
        check(r.returncode != 0 and flag.lstrip("-").split("-")[0] in (r.stderr + r.stdout),
              "%s %s refused with a message: rc %d %s" % (flag, bad, r.returncode, r.stderr[-300:]))


# ---- caches (server/api.c: the user cache, the title cache, single flight) -----------------

def same_cluster_users(d, n=2):
    """n different histories that the model puts in the same cluster (found with users:embed)."""
    words = ["The Hobbit", "Dune", "Small Gods", "Emma", "Ulysses", "Kyoto", "war", "peace",
             "stars", "Night Flight", "a", "b", "c"]
    by = {}
    for i in range(len(words)):
        for j in range(i + 1, len(words)):
            h = ["cache-%d" % n, words[i], words[j]]
            st, b, _ = d.req("POST", "/v1/users:embed", {"user": {"history": h}})
            by.setdefault(b["cluster"], []).append(h)
            if len(by[b["cluster"]]) == n:
                return by[b["cluster"]], b["cluster"]
    raise RuntimeError("no %d users in one cluster" % n)


def test_title_cache(d):
    (u1, u2), k = same_cluster_users(d)
    # miss, then hit: the same title, "cached" accurate, no generated tokens for the hit
    tok0, hit0 = d.metric("hllm:generated_tokens_total"), d.metric("hllm:title_cache_hits_total")
    st, a, _ = d.req("POST", "/v1/titles", title_body(u1, "Cache ad one", "first"))
    ref = cli_generate(u1, "Cache ad one", "first")
    check(st == 200 and a["cached"] is False and a["title"] == ref["title"] and
          a["ids"] == ref["ids"] and a["cluster"] == k, "title cache miss: %r vs CLI %r" % (a, ref))
    tok1 = d.metric("hllm:generated_tokens_total")
    check(tok1 - tok0 == len(a["ids"]), "a miss generates its tokens: %s" % (tok1 - tok0))
    st, b, _ = d.req("POST", "/v1/titles", title_body(u1, "Cache ad one", "first"))
    check(st == 200 and b["cached"] is True and b["title"] == a["title"] and b["ids"] == a["ids"]
          and b["finish"] == a["finish"] and b["cluster"] == k, "title cache hit: %r" % (b,))
    check(d.metric("hllm:generated_tokens_total") == tok1, "a hit generates no token")
    check(d.metric("hllm:title_cache_hits_total") == hit0 + 1, "title cache hit metric")
    # a hit streamed: meta says so, the pieces replayed make the title
    st, raw, _ = d.req("POST", "/v1/titles", title_body(u1, "Cache ad one", "first", stream=True),
                       raw=True)
    ev = sse_parse(raw)
    check(ev[0][0] == "meta" and ev[0][1]["cached"] is True and ev[0][1]["cache"] == "hit" and
          ev[-1][0] == "done" and ev[-1][1]["cached"] is True and
          "".join(e["text"] for n, e in ev if n == "token") == a["title"],
          "streamed hit replays the title: %r" % (ev[:2],))
    # another user of the same cluster: the same (cached) title, which is also what the CLI
    # generates for that user
    st, c, _ = d.req("POST", "/v1/titles", title_body(u2, "Cache ad one", "first"))
    ref2 = cli_generate(u2, "Cache ad one", "first")
    check(st == 200 and c["cached"] is True and c["title"] == a["title"] and
          c["title"] == ref2["title"] and c["cluster"] == k,
          "same cluster, another user: cached %r, CLI %r" % (c, ref2))
    check(d.metric("hllm:generated_tokens_total") == tok1, "the other user generates nothing")
    # another ad (or description, or max_new_tokens) misses
    for what, body in (("another ad", title_body(u1, "Cache ad two", "first")),
                       ("another description", title_body(u1, "Cache ad one", "second")),
                       ("another max_new_tokens", title_body(u1, "Cache ad one", "first",
                                                             max_new_tokens=12))):
        st, e, _ = d.req("POST", "/v1/titles", body)
        ad = body["ad"]
        ref3 = cli_generate(u1, ad["title"], ad.get("description"), body["max_new_tokens"])
        check(st == 200 and e["cached"] is False and e["ids"] == ref3["ids"],
              "%s misses: %r vs CLI %r" % (what, e, ref3))
    # per-user mode is never cached: each request generates, and equals the CLI's --per-user
    ref4 = cli_generate(u1, "Cache ad one", "first", per_user=True)
    for i in range(2):
        t0 = d.metric("hllm:generated_tokens_total")
        st, f, _ = d.req("POST", "/v1/titles", title_body(u1, "Cache ad one", "first",
                                                          mode="per_user"))
        check(st == 200 and f["cached"] is False and f["ids"] == ref4["ids"] and
              d.metric("hllm:generated_tokens_total") - t0 == len(f["ids"]),
              "per-user request %d not cached: %r vs CLI %r" % (i, f, ref4))
    # sampled cluster-mode titles: seeded by (cluster, ad), the same for both users
    smp = {"temperature": 1.0, "top_k": 0, "seed": 11}
    st, g1, _ = d.req("POST", "/v1/titles", title_body(u1, "Sampled ad", None, sampling=smp,
                                                       max_new_tokens=24))
    st, g2, _ = d.req("POST", "/v1/titles", title_body(u2, "Sampled ad", None, sampling=smp,
                                                       max_new_tokens=24))
    check(g1["cached"] is False and g2["cached"] is True and g1["ids"] == g2["ids"],
          "sampled title shared in the cluster: %r %r" % (g1, g2))
    # the seed is derived from (seed, cluster, ad): the cluster-mode title is not the one the
    # seed itself gives (the CLI, and the daemon's per-user mode, sample with the seed as given)
    cli_smp = ("--temperature", "1.0", "--top-k", "0", "--seed", "11")
    plain = cli_generate(u1, "Sampled ad", None, 24, sampling=cli_smp)
    plain_pu = cli_generate(u1, "Sampled ad", None, 24, per_user=True, sampling=cli_smp)
    st, pu, _ = d.req("POST", "/v1/titles", title_body(u1, "Sampled ad", None, sampling=smp,
                                                       max_new_tokens=24, mode="per_user"))
    check(pu["ids"] == plain_pu["ids"] and g1["ids"] != plain["ids"],
          "per-user sampled = CLI (%r); cluster-mode sampled uses the (cluster, ad) seed: %r vs "
          "the plain seed's %r" % (pu["ids"] == plain_pu["ids"], g1["ids"], plain["ids"]))
    st, g3, _ = d.req("POST", "/v1/titles", title_body(u1, "Sampled ad", None,
                                                       sampling=dict(smp, seed=12),
                                                       max_new_tokens=24))
    check(g3["cached"] is False, "another seed misses: %r" % (g3,))
    st, m, _ = d.req("GET", "/v1/model")
    tc = m["caches"]["title"]
    check(tc["entries"] == d.metric("hllm:title_cache_entries") and tc["entries"] >= 5 and
          0 < tc["bytes"] <= tc["max_bytes"] and tc["bytes"] == d.metric("hllm:title_cache_bytes"),
          "v1/model title cache sizes: %r" % (tc,))
    return g1


def test_user_cache(d):
    h = ["user-cache", "Kyoto", "war", "peace"]
    hit0, miss0 = d.metric("hllm:user_cache_hits_total"), d.metric("hllm:user_cache_misses_total")
    st, a, _ = d.req("POST", "/v1/users:embed", {"user": {"history": h}, "full": True})
    st, b, _ = d.req("POST", "/v1/users:embed", {"user": {"history": h}, "full": True})
    cli = subprocess.run([HLLM, "embed", "--model", PKG], capture_output=True, check=True,
                         input=(json.dumps({"history": h}) + "\n").encode())
    check(a["cached"] is False and b["cached"] is True and b["cluster"] == a["cluster"] ==
          json.loads(cli.stdout)["cluster"] and b["score"] == a["score"] and b["u"] == a["u"] and
          b["U"] == a["U"], "users:embed from the user cache: %r / %r" % (a.get("cluster"), b))
    check(d.metric("hllm:user_cache_hits_total") == hit0 + 1 and
          d.metric("hllm:user_cache_misses_total") == miss0 + 1, "user cache hit/miss metrics")
    # a batch: the cached entry answered from the cache, the new one embedded, in order
    h2 = ["user-cache", "stars"]
    st, bb, _ = d.req("POST", "/v1/users:embed", {"users": [{"history": h2}, {"history": h}]})
    r = bb["results"]
    check(st == 200 and r[0]["cached"] is False and r[1]["cached"] is True and
          r[1]["cluster"] == a["cluster"], "batch with a cached user: %r" % (bb,))
    st, bb, _ = d.req("POST", "/v1/users:embed", {"users": [{"history": h2}, {"history": h}]})
    check(st == 200 and all(x["cached"] for x in bb["results"]), "a batch all from the cache")
    # a titles request of a cached user takes its cluster from the cache (no embed stage)
    hit1 = d.metric("hllm:user_cache_hits_total")
    st, t, _ = d.req("POST", "/v1/titles", title_body(h, "User cache ad", None))
    ref = cli_generate(h, "User cache ad", None)
    check(st == 200 and t["ids"] == ref["ids"] and t["cluster"] == a["cluster"] and
          t["timings"]["embed"] == 0 and d.metric("hllm:user_cache_hits_total") == hit1 + 1,
          "title of a cached user: %r vs CLI %r" % (t, ref))
    # a per-user title of a cached user: generated from the cached U, the history not embedded
    # again (the engine's users-embedded counter stays), the same ids as the CLI
    emb0 = d.metric("hllm:users_embedded_total")
    st, t, _ = d.req("POST", "/v1/titles", title_body(h, "User cache ad", None, mode="per_user"))
    ref = cli_generate(h, "User cache ad", None, per_user=True)
    check(st == 200 and t["ids"] == ref["ids"] and d.metric("hllm:users_embedded_total") == emb0,
          "per-user title of a cached user: %r vs CLI %r (users embedded %r -> %r)" %
          (t.get("ids"), ref["ids"], emb0, d.metric("hllm:users_embedded_total")))
    # ... and a user the cache does not hold is embedded
    st, t, _ = d.req("POST", "/v1/titles", title_body(h + ["one more"], "User cache ad", None,
                                                        mode="per_user"))
    check(st == 200 and d.metric("hllm:users_embedded_total") == emb0 + 1,
          "an uncached user is embedded once")
    # a cluster-mode title miss of an uncached user: embedded once (its embed job finds the
    # cluster; the generation brings that U), the title equal to the CLI's
    h3 = h + ["and another"]
    st, t, _ = d.req("POST", "/v1/titles", title_body(h3, "Embedded once ad", None))
    ref = cli_generate(h3, "Embedded once ad", None)
    check(st == 200 and t["ids"] == ref["ids"] and t["cluster"] == ref["cluster"] and
          d.metric("hllm:users_embedded_total") == emb0 + 2,
          "cluster-mode miss: embedded %r times, ids %r vs CLI %r" %
          (d.metric("hllm:users_embedded_total") - emb0 - 1, t.get("ids"), ref["ids"]))
    # the window the model sees is the key: a history longer than max_history shares the entry
    # of its last max_history titles
    st, mdl, _ = d.req("GET", "/v1/model")
    long_h = ["old %d" % i for i in range(5)] + ["w %d" % i for i in range(mdl["max_history"])]
    st, l1, _ = d.req("POST", "/v1/users:embed", {"user": {"history": long_h}})
    st, l2, _ = d.req("POST", "/v1/users:embed", {"user": {"history": long_h[5:]}})
    check(l1["cached"] is False and l2["cached"] is True and l1["cluster"] == l2["cluster"],
          "the key is the window the model sees: %r %r" % (l1, l2))


def raw_stream(port, body):
    """Starts a streaming request on a raw socket; returns it once a token event arrived."""
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/titles HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(data) + data)
    got = b""
    while b"event: token" not in got:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    return s, got


def wait_metric(d, name, value, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline and d.metric(name) < value:
        time.sleep(0.02)
    return d.metric(name) >= value


def run_parallel(fns):
    out = [None] * len(fns)
    barrier = threading.Barrier(len(fns))

    def one(i):
        barrier.wait()
        out[i] = fns[i]()

    ts = [threading.Thread(target=one, args=(i,)) for i in range(len(fns))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def test_single_flight(d):
    # N concurrent identical misses: one generation, N complete identical streams
    N = 6
    h = ["single-flight", "Emma", "Ulysses"]
    body = title_body(h, "Single flight ad", "burst", stream=True, max_new_tokens=48)
    tok0 = d.metric("hllm:generated_tokens_total")
    att0 = d.metric("hllm:title_single_flight_attaches_total")
    hit0 = d.metric("hllm:title_cache_hits_total")
    res = run_parallel([lambda: d.req("POST", "/v1/titles", body, raw=True)] * N)
    ref = cli_generate(h, "Single flight ad", "burst", 48)
    streams = [sse_parse(raw) for st, raw, _ in res]
    texts = ["".join(e["text"] for n, e in ev if n == "token") for ev in streams]
    check(all(st == 200 for st, _, _ in res) and all(ev[-1][0] == "done" for ev in streams) and
          all(t == ref["title"] for t in texts) and
          all(ev[-1][1]["title"] == ref["title"] for ev in streams),
          "single flight: %d complete identical streams equal to the CLI: %r" % (N, texts))
    states = sorted(ev[0][1]["cache"] for ev in streams)
    att = d.metric("hllm:title_single_flight_attaches_total") - att0
    hits = d.metric("hllm:title_cache_hits_total") - hit0
    check(d.metric("hllm:generated_tokens_total") - tok0 == len(ref["ids"]),
          "single flight: one title's tokens generated (%s, title %d)" %
          (d.metric("hllm:generated_tokens_total") - tok0, len(ref["ids"])))
    check(states.count("miss") == 1 and att + hits == N - 1 and states.count("attached") == att,
          "single flight: one miss, the others attached or hit: %r" % states)

    # attach to a long generation, then the first client leaves: it goes on for the others
    ad = "loop"
    ref = cli_generate(["sf-long", "a"], ad, None, 2000)
    check(ref["finish"] == "length" and len(ref["ids"]) == 2000,
          "fixture: %r runs to 2000 tokens for this user (%s)" % (ad, ref["finish"]))
    lbody = title_body(["sf-long", "a"], ad, None, stream=True, max_new_tokens=2000)
    canc0 = d.metric("hllm:cancelled_total")
    att0 = d.metric("hllm:title_single_flight_attaches_total")
    tok0 = d.metric("hllm:generated_tokens_total")
    leader, _ = raw_stream(d.port, lbody)
    out = [None] * 3
    jbody = dict(lbody, stream=False)

    def follower(i, b):
        out[i] = d.req("POST", "/v1/titles", b, raw=True)

    # followers: the same user (its cluster from the user cache), another user of its cluster
    # (embedded first, attached when its cluster is known), and a JSON request
    kl = d.req("POST", "/v1/users:embed", {"user": {"history": ["sf-long", "a"]}})[1]["cluster"]
    other = None
    for w in ["b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p"]:
        st, e, _ = d.req("POST", "/v1/users:embed", {"user": {"history": ["sf-other", w]}})
        if e["cluster"] == kl:
            other = ["sf-other", w]
            break
    check(other is not None, "another user in cluster %s" % kl)
    obody = dict(lbody, user={"history": other or ["sf-long", "a"]})
    ts = [threading.Thread(target=follower, args=(0, lbody)),
          threading.Thread(target=follower, args=(1, obody)),
          threading.Thread(target=follower, args=(2, jbody))]
    for t in ts:
        t.start()
    ok = wait_metric(d, "hllm:title_single_flight_attaches_total", att0 + 3)
    check(ok, "3 requests attached to the running generation")
    leader.close()
    for t in ts:
        t.join()
    evs = [sse_parse(out[i][1]) for i in (0, 1)]
    for ev in evs:
        check(ev[0][0] == "meta" and ev[0][1]["cache"] == "attached" and ev[-1][0] == "done" and
              "".join(e["text"] for n, e in ev if n == "token") == ref["title"] and
              ev[-1][1]["finish"] == "length",
              "an attached stream replays what it missed and completes: %r" % (ev[:1] + ev[-1:],))
    j = json.loads(out[2][1])
    check(out[2][0] == 200 and j["ids"] == ref["ids"] and j["cached"] is False,
          "an attached JSON request gets the whole title: %r" % (j.get("finish"),))
    check(d.metric("hllm:cancelled_total") == canc0, "the leader leaving cancelled nothing")
    check(d.metric("hllm:generated_tokens_total") - tok0 == 2000, "one generation for all")

    # every client leaves: the generation is cancelled, and nothing is cached
    ad2 = "zzzz"
    b2 = title_body(["sf-long", "a"], ad2, None, stream=True, max_new_tokens=2000)
    att0 = d.metric("hllm:title_single_flight_attaches_total")
    s1, _ = raw_stream(d.port, b2)
    s2, _ = raw_stream(d.port, b2)
    check(d.metric("hllm:title_single_flight_attaches_total") == att0 + 1, "second one attached")
    s1.close()
    s2.close()
    check(wait_metric(d, "hllm:cancelled_total", canc0 + 1), "all clients gone: cancelled")
    deadline = time.time() + 30
    while time.time() < deadline and d.metric("hllm:title_generations_in_flight") > 0:
        time.sleep(0.02)
    check(d.metric("hllm:title_generations_in_flight") == 0, "no generation left in flight")
    st, e, _ = d.req("POST", "/v1/titles", dict(b2, stream=False, max_new_tokens=40))
    ref2 = cli_generate(["sf-long", "a"], ad2, None, 40)
    check(st == 200 and e["ids"] == ref2["ids"], "after the cancel: %r vs %r" % (e, ref2))
    st, e, _ = d.req("POST", "/v1/titles", dict(b2, stream=False))
    check(st == 200 and e["cached"] is False and len(e["ids"]) == 2000,
          "a cancelled generation is not cached: %r" % (e.get("cached"),))


def test_cache_eviction():
    """Tiny byte limits: entries are evicted (metrics), answers stay right, bytes stay bounded."""
    d = Daemon("--title-cache-bytes", "1500", "--user-cache-bytes", "1600")
    try:
        h = ["evict", "Dune"]
        ads = ["Evict ad %d" % i for i in range(6)]
        for ad in ads + ads[:1]:
            st, b, _ = d.req("POST", "/v1/titles", title_body(h, ad, None))
            ref = cli_generate(h, ad, None)
            check(st == 200 and b["ids"] == ref["ids"], "under eviction: %r vs %r" % (b, ref))
        check(b["cached"] is False, "the first ad was evicted: %r" % (b,))
        ev = d.metric("hllm:title_cache_evictions_total")
        check(ev >= 3 and 0 < d.metric("hllm:title_cache_bytes") <= 1500 and
              d.metric("hllm:title_cache_entries") >= 1, "title evictions %s, bytes %s" %
              (ev, d.metric("hllm:title_cache_bytes")))
        st, b2, _ = d.req("POST", "/v1/titles", title_body(h, ads[0], None))
        check(b2["cached"] is True and b2["ids"] == b["ids"], "the re-added entry is served")
        users = [["evict-user", str(i)] for i in range(4)]
        clusters = [d.req("POST", "/v1/users:embed", {"user": {"history": u}})[1]["cluster"]
                    for u in users]
        check(d.metric("hllm:user_cache_evictions_total") >= 2 and
              0 < d.metric("hllm:user_cache_bytes") <= 1600, "user cache evictions")
        st, last, _ = d.req("POST", "/v1/users:embed", {"user": {"history": users[-1]}})
        st, first, _ = d.req("POST", "/v1/users:embed", {"user": {"history": users[0]}})
        check(last["cached"] is True and first["cached"] is False and
              first["cluster"] == clusters[0], "LRU: the last user kept, the first evicted")
    finally:
        rc, log = d.stop()
        check(rc == 0 and "Sanitizer" not in log, "eviction daemon exit: %s" % rc)


def test_caches_disabled(sampled):
    d = Daemon("--title-cache-bytes", "0", "--user-cache-bytes", "0")
    try:
        st, m, _ = d.req("GET", "/v1/model")
        check(m["caches"]["user"]["max_bytes"] == 0 and m["caches"]["title"]["max_bytes"] == 0,
              "v1/model: caches off %r" % (m["caches"],))
        h = ["disabled", "Dune"]
        for i in range(2):
            t0 = d.metric("hllm:generated_tokens_total")
            st, b, _ = d.req("POST", "/v1/titles", title_body(h, "Off ad", None))
            ref = cli_generate(h, "Off ad", None)
            check(st == 200 and b["cached"] is False and b["ids"] == ref["ids"] and
                  d.metric("hllm:generated_tokens_total") - t0 == len(b["ids"]),
                  "caches off, request %d: generated again %r" % (i, b))
            st, e, _ = d.req("POST", "/v1/users:embed", {"user": {"history": h}})
            check(e["cached"] is False, "caches off: embed not cached")
        check(d.metric("hllm:title_cache_hits_total") == 0 and
              d.metric("hllm:title_cache_misses_total") == 0 and
              d.metric("hllm:user_cache_hits_total") == 0 and
              d.metric("hllm:user_cache_entries") == 0, "caches off: no lookups, no entries")
        # sampled cluster-mode titles through the engine each time: the same for two users of
        # one cluster, and the same as the caching daemon's
        (u1, u2), k = same_cluster_users(d)
        smp = {"temperature": 1.0, "top_k": 0, "seed": 11}
        st, g1, _ = d.req("POST", "/v1/titles", title_body(u1, "Sampled ad", None, sampling=smp,
                                                           max_new_tokens=24))
        st, g2, _ = d.req("POST", "/v1/titles", title_body(u2, "Sampled ad", None, sampling=smp,
                                                           max_new_tokens=24))
        check(g1["cached"] is False and g2["cached"] is False and g1["ids"] == g2["ids"] and
              g1["ids"] == sampled["ids"], "sampled, engine each time: %r %r %r" %
              (g1["ids"], g2["ids"], sampled["ids"]))
    finally:
        rc, log = d.stop()
        check(rc == 0 and "Sanitizer" not in log, "caches-off daemon exit: %s" % rc)


# ---- title tables (hllm titles -> --title-table, SIGHUP) and sd_notify ---------------------

class Notify:
    """The NOTIFY_SOCKET of a daemon: a Unix datagram socket this test binds; collects messages."""

    def __init__(self):
        self.path = "/tmp/hllm-creatord-notify-%d.sock" % os.getpid()
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.s.bind(self.path)
        self.s.settimeout(0.05)
        self.msgs = []  # (time, {field: value})

    def poll(self, until=None, timeout=30):
        """Reads messages until one has until=(field, value), or the timeout; returns it."""
        deadline = time.time() + timeout
        while True:
            for t, m in self.msgs:
                if until and m.get(until[0]) == until[1] and t >= getattr(self, "mark", 0):
                    return m
            if time.time() > deadline:
                return None
            try:
                data = self.s.recv(65536)
            except socket.timeout:
                continue
            fields = dict(l.split("=", 1) for l in data.decode().split("\n") if "=" in l)
            self.msgs.append((time.time(), fields))

    def since_mark(self):
        return [m for t, m in self.msgs if t >= self.mark]

    def set_mark(self):
        self.poll(timeout=0.1)
        self.mark = time.time()

    def close(self):
        self.s.close()
        os.unlink(self.path)


def titles_table(path, ads, *args):
    """Runs hllm titles over ads (dicts) into path; returns (header, {(cluster, ad_id): entry})."""
    src = path + ".ads"
    with open(src, "w") as f:
        for a in ads:
            f.write(json.dumps(a) + "\n")
    r = subprocess.run([HLLM, "titles", "--model", PKG, "--ads", src, "--out", path, *args],
                       capture_output=True, text=True)
    check(r.returncode == 0, "hllm titles: %s" % r.stderr)
    lines = open(path).read().splitlines()
    return json.loads(lines[0]), {(e["cluster"], e["ad_id"]): e for e in map(json.loads, lines[1:])}


def users_by_cluster(d):
    """One history per cluster found among the fixture's users and a few more (the tiny model
    puts most short histories in one cluster)."""
    cases = os.path.join(TESTS, "data", "creator", "cases.jsonl")
    hists = [json.loads(l)["history"] for l in open(cases) if l.strip()]
    words = ["The Hobbit", "Dune", "Small Gods", "Emma", "Ulysses", "Kyoto", "war", "peace"]
    hists += [["table", a, b] for i, a in enumerate(words) for b in words[i + 1:]]
    by = {}
    for h in hists:
        st, b, _ = d.req("POST", "/v1/users:embed", {"user": {"history": h}})
        if st == 200:  # (some fixture users are over the daemon's default limits)
            by.setdefault(b["cluster"], h)
    return by


TABLE_ADS = [{"id": "t1", "title": "Night Flight", "description": "A pilot crosses the Andes."},
             {"id": "t2", "title": "Cooking at home"}]
NEW_ADS = [{"id": "t3", "title": "Kyoto in autumn", "description": "Temples and maples."}]


def table_body(hist, ad, **kw):
    """A titles request with the daemon's default settings (those of a default table)."""
    b = {"user": {"history": hist}, "ad": {k: v for k, v in ad.items() if k != "id"}}
    b.update(kw)
    return b


def test_tables():
    tdir = "/tmp/hllm-creatord-tables-%d" % os.getpid()
    os.makedirs(tdir, exist_ok=True)
    table = os.path.join(tdir, "t.jsonl")
    head, entries = titles_table(table, TABLE_ADS)  # the package's default (sampled) settings
    check(head["sampling"]["temperature"] > 0, "the default table is sampled: %r" % head)

    # live titles of users of several clusters, from a daemon without tables (nothing cached):
    # each equals the table's entry for its (cluster, ad): the (cluster, ad) seed at work
    live = Daemon("--title-cache-bytes", "0", "--user-cache-bytes", "0")
    try:
        users = users_by_cluster(live)
        check(len(users) >= 2, "users in %d clusters" % len(users))
        for k, h in sorted(users.items()):
            for ad in TABLE_ADS:
                st, b, _ = live.req("POST", "/v1/titles", table_body(h, ad))
                e = entries[(k, ad["id"])]
                check(st == 200 and b["cached"] is False and b["cluster"] == k and
                      (b["title"], b["ids"], b["finish"]) == (e["title"], e["ids"], e["finish"]),
                      "live title of cluster %d equals the table's: %r vs %r" % (k, b, e))
    finally:
        live.stop()

    nt = Notify()
    d = Daemon("--title-table", table, env={"NOTIFY_SOCKET": nt.path, "WATCHDOG_USEC": "300000"},
               wait=False)
    try:
        ready = nt.poll(("READY", "1"), timeout=120)
        st, _, _ = d.req("GET", "/readyz")
        check(ready is not None and st == 200, "READY=1 only once /readyz is ready: %r %s" %
              (ready, st))
        d.wait_ready()
        check(nt.poll(("WATCHDOG", "1"), timeout=5) is not None, "WATCHDOG=1 with WATCHDOG_USEC")
        st, m, _ = d.req("GET", "/v1/model")
        check(m["title_tables"] == {"files": [table], "entries": len(entries)},
              "v1/model title_tables: %r" % (m.get("title_tables"),))
        check(d.metric("hllm:title_table_entries") == len(entries), "title_table_entries metric")
        tok0, hits0 = d.metric("hllm:generated_tokens_total"), d.metric("hllm:title_table_hits_total")
        for k, h in sorted(users.items()):
            for ad in TABLE_ADS:
                e = entries[(k, ad["id"])]
                st, b, _ = d.req("POST", "/v1/titles", table_body(h, ad))
                check(st == 200 and b["cached"] is True and b["cluster"] == k and
                      b["pruned"] is False and
                      (b["title"], b["ids"], b["finish"]) == (e["title"], e["ids"], e["finish"]),
                      "table hit: %r vs %r" % (b, e))
                st, raw, _ = d.req("POST", "/v1/titles", table_body(h, ad, stream=True), raw=True)
                ev = sse_parse(raw)
                check(ev[0][0] == "meta" and ev[0][1]["cache"] == "table" and
                      ev[0][1]["cached"] is True and ev[-1][0] == "done" and
                      "".join(x["text"] for n, x in ev if n == "token") == e["title"] and
                      ev[-1][1]["title"] == e["title"], "streamed table hit: %r" % (ev,))
        n_hits = 2 * len(users) * len(TABLE_ADS)
        check(d.metric("hllm:generated_tokens_total") == tok0, "table hits generate no token")
        check(d.metric("hllm:title_table_hits_total") == hits0 + n_hits, "title_table_hits metric")
        # other settings than the table's: not from the table
        h = users[min(users)]
        st, b, _ = d.req("POST", "/v1/titles", table_body(h, TABLE_ADS[0], sampling={"greedy": True}))
        check(st == 200 and b["cached"] is False, "greedy request not from the sampled table: %r" % b)
        # "description": "" has the key of the missing description of t2's entry, not its prompt
        st, b, _ = d.req("POST", "/v1/titles", table_body(h, dict(TABLE_ADS[1], description="")))
        check(st == 200 and b["cached"] is False, "an empty description is not a table hit: %r" % b)

        # SIGHUP with new content (written aside, renamed into place): other answers
        _, new_entries = titles_table(table + ".new", NEW_ADS)
        os.replace(table + ".new", table)
        nt.set_mark()
        ok0 = d.metric("hllm:title_table_reloads_total")
        d.p.send_signal(signal.SIGHUP)
        check(wait_metric(d, "hllm:title_table_reloads_total", ok0 + 1), "SIGHUP reloaded")
        check(nt.poll(("READY", "1"), timeout=10) is not None, "READY=1 after the reload")
        seq = [x for m in nt.since_mark() for x in m if x in ("RELOADING", "READY")]
        rel = [m for m in nt.since_mark() if "RELOADING" in m]
        check(seq[:2] == ["RELOADING", "READY"] and rel and rel[0].get("MONOTONIC_USEC", "").isdigit(),
              "RELOADING=1 (with MONOTONIC_USEC) then READY=1 around SIGHUP: %r" % nt.since_mark())
        check(d.metric("hllm:title_table_entries") == len(new_entries), "entries after reload")
        st, b, _ = d.req("POST", "/v1/titles", table_body(h, NEW_ADS[0]))
        e = new_entries[(b["cluster"], "t3")]
        check(b["cached"] is True and b["ids"] == e["ids"], "after SIGHUP the new ad is a table hit")
        tok1 = d.metric("hllm:generated_tokens_total")
        st, b, _ = d.req("POST", "/v1/titles", table_body(h, TABLE_ADS[1]))
        check(b["cached"] is False and d.metric("hllm:generated_tokens_total") > tok1,
              "after SIGHUP the removed ad is generated: %r" % b)

        # SIGHUP with a broken file: the old tables stay, a metric and the log say why
        with open(table, "a") as f:
            f.write('{"cluster": 0, "ad_hash": "nothex"}\n')
        bad0 = d.metric("hllm:title_table_reload_failures_total")
        d.p.send_signal(signal.SIGHUP)
        check(wait_metric(d, "hllm:title_table_reload_failures_total", bad0 + 1),
              "a broken table counts a reload failure")
        st, b, _ = d.req("POST", "/v1/titles", table_body(h, NEW_ADS[0]))
        check(b["cached"] is True and b["ids"] == e["ids"] and
              d.metric("hllm:title_table_entries") == len(new_entries),
              "the previous tables still answer after a failed reload: %r" % b)
        nt.set_mark()
    finally:
        rc, log = d.stop()
        check(rc == 0 and "Sanitizer" not in log, "table daemon exit %s" % rc)
    check("reload failed, keeping the previous title tables" in log and
          "t.jsonl:%d: ad_hash" % (len(new_entries) + 2) in log,
          "the failed reload is logged with file, line and field")
    check(nt.poll(("STOPPING", "1"), timeout=5) is not None, "STOPPING=1 on SIGTERM")
    nt.close()

    # refused at start: another package's digest, other settings; -t checks tables too
    lines = open(table).read().splitlines()[:-1]  # the valid table again
    hd = json.loads(lines[0])
    for what, change, want in (("digest", {"package_digest": "0123456789abcdef"}, "package_digest"),
                               ("sampling", {"sampling": dict(hd["sampling"], seed=9)}, "sampling"),
                               ("max_new_tokens", {"max_new_tokens": 5}, "sampling")):
        badp = os.path.join(tdir, "bad-%s.jsonl" % what)
        with open(badp, "w") as f:
            f.write("\n".join([json.dumps(dict(hd, **change))] + lines[1:]) + "\n")
        r = subprocess.run([DAEMON, "--model", PKG, "--port", str(free_port()), "--title-table",
                            badp], capture_output=True, text=True, timeout=120)
        check(r.returncode == 1 and badp + ":1: " + want in r.stderr,
              "a table with another %s is refused at start: %d %s" % (what, r.returncode,
                                                                     r.stderr[-500:]))
        r = subprocess.run([DAEMON, "-t", "--model", PKG, "--title-table", badp],
                           capture_output=True, text=True)
        check(r.returncode == 1 and badp in r.stderr, "-t refuses it: %s" % r.stderr[-300:])
    with open(table, "w") as f:
        f.write("\n".join(lines) + "\n")
    cfg = os.path.join(tdir, "tables.conf")
    with open(cfg, "w") as f:
        f.write("model = %s\ntitle-tables = %s, %s\n" % (PKG, table, table))
    r = subprocess.run([DAEMON, "-t", "--config", cfg], capture_output=True, text=True)
    check(r.returncode == 0 and "2 title tables" in r.stderr, "-t with title-tables: %s" % r.stderr)
    r = subprocess.run([DAEMON, "-t", "--config", cfg, "--title-table", badp], capture_output=True,
                       text=True)
    check(r.returncode == 1 and "bad-max_new_tokens" in r.stderr,
          "--title-table replaces the config's list: %s" % r.stderr[-300:])


# ---- issue 9 items 2, 5, 7: latency histograms, deadlines, /v1/titles:batch ----------------

HISTS = ("hllm:time_to_first_token_seconds", "hllm:inter_token_latency_seconds",
         "hllm:e2e_request_latency_seconds", "hllm:request_queue_time_seconds")


def histograms(d):
    """{name: (buckets [(le, cumulative)], sum, count)} parsed from /metrics."""
    st, text, _ = d.req("GET", "/metrics")
    out = {}
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, n, t = line.split(" ")
            types[n] = t
            continue
        for n in HISTS:
            if line.startswith(n + "_bucket{le=\""):
                le = line[len(n) + 12:line.index("\"}")]
                out.setdefault(n, [[], 0.0, 0])[0].append(
                    (float("inf") if le == "+Inf" else float(le), int(line.rsplit(" ", 1)[1])))
            elif line.startswith(n + "_sum "):
                out.setdefault(n, [[], 0.0, 0])[1] = float(line.rsplit(" ", 1)[1])
            elif line.startswith(n + "_count "):
                out.setdefault(n, [[], 0.0, 0])[2] = int(line.rsplit(" ", 1)[1])
    for n in HISTS:
        check(types.get(n) == "histogram" and n in out, "%s is a histogram" % n)
    return out


def check_hist_shape(h, what):
    for n, (b, s, c) in h.items():
        les = [le for le, _ in b]
        cums = [v for _, v in b]
        check(les == sorted(les) and len(set(les)) == len(les) and les[-1] == float("inf"),
              "%s %s: bounds increasing, +Inf last: %r" % (what, n, les))
        check(all(x <= y for x, y in zip(cums, cums[1:])), "%s %s: buckets cumulative: %r" %
              (what, n, cums))
        check(cums[-1] == c and s >= 0, "%s %s: +Inf bucket == _count (%s, %s)" % (what, n, cums[-1], c))


def test_metrics_histograms(d):
    h0 = histograms(d)
    check_hist_shape(h0, "before")
    N = 5
    tokens, wall = 0, 0.0
    for i in range(N):  # per-user: its own generation each time (never title-cached)
        t0 = time.time()
        st, b, _ = d.req("POST", "/v1/titles", title_body(["hist %d" % i, "Dune"], "Hist ad", None,
                                                          mode="per_user", max_new_tokens=8))
        wall += time.time() - t0
        check(st == 200 and len(b["ids"]) >= 1, "histogram request %d: %r" % (i, b))
        tokens += len(b.get("ids", []))
    st, _, _ = d.req("POST", "/v1/titles", {"user": {"history": []}, "ad": {"title": "x"}})
    check(st == 400, "a bad request")
    h1 = histograms(d)
    check_hist_shape(h1, "after")
    for n in ("hllm:time_to_first_token_seconds", "hllm:e2e_request_latency_seconds",
              "hllm:request_queue_time_seconds"):
        check(h1[n][2] - h0[n][2] == N, "%s: _count +%d after %d requests (a 400 not counted)" %
              (n, h1[n][2] - h0[n][2], N))
    itl = h1["hllm:inter_token_latency_seconds"][2] - h0["hllm:inter_token_latency_seconds"][2]
    check(itl == tokens - N, "inter-token latency: one per gap (%d, want %d)" % (itl, tokens - N))
    e2e = h1["hllm:e2e_request_latency_seconds"][1] - h0["hllm:e2e_request_latency_seconds"][1]
    check(0 < e2e <= wall, "e2e sum (%.4f s) within the clients' wall time (%.4f s)" % (e2e, wall))
    ttft = h1["hllm:time_to_first_token_seconds"][1] - h0["hllm:time_to_first_token_seconds"][1]
    check(0 < ttft <= e2e, "ttft sum (%.4f) <= e2e sum (%.4f)" % (ttft, e2e))


def test_deadline(d):
    refs = {"per_user": (["zz"], cli_generate(["zz"], "loop", None, 2000, per_user=True)),
            "cluster": (["sf-long", "a"], cli_generate(["sf-long", "a"], "loop", None, 2000))}
    check(all(len(r["ids"]) >= 1500 for _, r in refs.values()), "fixture: long titles (%r)" %
          ([len(r["ids"]) for _, r in refs.values()],))
    for mode, mx in (("per_user", 2000), ("cluster", 1999)):  # own job / a shared generation
        h, ref = refs[mode]
        canc0 = d.metric("hllm:cancelled_total")
        to0 = d.metric("hllm:timed_out_total")
        body = title_body(h, "loop", None, mode=mode, max_new_tokens=mx, deadline_ms=30)
        t0 = time.time()
        st, b, _ = d.req("POST", "/v1/titles", body)
        check(st == 504 and "deadline" in b["error"], "%s: deadline 504: %s %r" % (mode, st, b))
        check(d.metric("hllm:timed_out_total") == to0 + 1, "%s: timed_out_total +1" % mode)
        check(wait_metric(d, "hllm:cancelled_total", canc0 + 1), "%s: its work was cancelled" % mode)
        check(d.metric("hllm:requests_running") == 0 or wait_metric(d, "hllm:requests_running", 0),
              "%s: nothing left running" % mode)
        st, raw, _ = d.req("POST", "/v1/titles", dict(body, stream=True, max_new_tokens=mx - 2),
                           raw=True)
        ev = sse_parse(raw)
        check(st == 200 and ev and ev[-1][0] == "error" and ev[-1][1].get("status") == 504 and
              ev[-1][1].get("partial") is True, "%s: stream ends with event: error 504: %r" %
              (mode, ev[-1:]))
        if ev and ev[-1][0] == "error":
            part = ev[-1][1].get("title", "")
            streamed = "".join(e["text"] for n, e in ev if n == "token")
            check(part == streamed and ref["title"].startswith(part) and
                  len(part) < len(ref["title"]), "%s: the partial title is a prefix of the CLI's "
                  "(%d of %d chars)" % (mode, len(part), len(ref["title"])))
    h, ref = refs["per_user"]
    st, b, _ = d.req("POST", "/v1/titles", title_body(h, "loop", None, mode="per_user",
                                                      max_new_tokens=2000, deadline_ms=600000))
    check(st == 200 and b["ids"] == ref["ids"], "a long deadline: the whole title: %s" % st)
    ref2 = cli_generate(["The Hobbit"], "After a deadline", None)
    st, b, _ = d.req("POST", "/v1/titles", title_body(["The Hobbit"], "After a deadline", None))
    check(st == 200 and b["ids"] == ref2["ids"], "a following request works: %r" % (b,))
    for bad in (0, -5, 1.5, "10", 86400001):
        st, b, _ = d.req("POST", "/v1/titles", title_body(h, "x", None, deadline_ms=bad))
        check(st == 400 and "deadline_ms" in b["error"], "deadline_ms %r: 400: %r" % (bad, b))


def test_parse_error_quoting_bad_utf8(d):
    # found by fuzz_request: jansson's parse error quotes the body ("near '...'"); with a broken
    # UTF-8 sequence there the error body could not be made and the daemon crashed
    body = open(os.path.join(TESTS, "fuzz", "request",
                             "regress_invalid_utf8_in_parse_error.json"), "rb").read()
    for path in ("/v1/titles", "/v1/users:embed", "/v1/titles:batch"):
        st, b, _ = d.req("POST", path, body)
        check(st == 400 and isinstance(b, dict) and "invalid JSON body" in b.get("error", ""),
              "%s: a parse error quoting invalid UTF-8: 400 with a JSON body: %s %r" % (path, st, b))
    st, _, _ = d.req("GET", "/healthz")
    check(st == 200, "alive after parse errors quoting invalid UTF-8")


def test_request_timeout_config():
    d = Daemon("--request-timeout-ms", "30")
    try:
        h = ["zz"]
        ref = cli_generate(h, "loop", None, 2000, per_user=True)
        st, b, _ = d.req("POST", "/v1/titles", title_body(h, "loop", None, mode="per_user",
                                                          max_new_tokens=2000))
        check(st == 504 and d.metric("hllm:timed_out_total") == 1,
              "request-timeout-ms: 504 by default: %s %r" % (st, b))
        st, b, _ = d.req("POST", "/v1/titles", title_body(h, "loop", None, mode="per_user",
                                                          max_new_tokens=2000, deadline_ms=600000))
        check(st == 200 and b["ids"] == ref["ids"], "deadline_ms overrides request-timeout-ms")
        st, b, _ = d.req("POST", "/v1/titles:batch", {"requests": [
            title_body(h, "loop", None, mode="per_user", max_new_tokens=2000),
            title_body(["Dune"], "short", None, max_new_tokens=4, deadline_ms=600000)],
            "deadline_ms": 600000})
        check(st == 200 and [x["status"] for x in b["results"]] == [200, 200],
              "a batch's deadline_ms covers its items: %r" % ([x.get("status") for x in b["results"]],))
    finally:
        rc, log = d.stop()
        check(rc == 0 and "AddressSanitizer" not in log, "request-timeout daemon exit: %s" % rc)


def test_titles_batch(d):
    B = "/v1/titles:batch"
    items = [title_body(h, t, ds, request_id="i%d" % k) for k, (h, t, ds) in enumerate(CASES)]
    items.insert(1, {"user": {"history": []}, "ad": {"title": "bad"}})
    items.append(title_body(["Dune", "Emma"], "Per-user batch ad", None, mode="per_user",
                            request_id="pu"))
    items.append(dict(items[0], stream=True))
    items.append("not an object")
    st, b, _ = d.req("POST", B, {"requests": items, "request_id": "batch-1"})
    check(st == 200 and len(b["results"]) == len(items) and b.get("request_id") == "batch-1" and
          set(b.get("timings", {})) == {"queue", "embed", "generate", "total"},
          "titles:batch: %s %r" % (st, b))
    res = b.get("results", [])
    for k, (item, r) in enumerate(zip(items, res)):
        if k == 1:
            check(r == {"status": 400, "error": r.get("error")} and "requests[1]" in r["error"] and
                  "user.history" in r["error"], "the bad item fails alone: %r" % (r,))
            st1, one, _ = d.req("POST", "/v1/titles", item)
            check(st1 == 400 and one["error"] in r["error"], "same error as /v1/titles: %r" % one)
            continue
        if k == len(items) - 2:
            check(r.get("status") == 400 and "stream" in r.get("error", ""), "stream item: %r" % r)
            continue
        if k == len(items) - 1:
            check(r.get("status") == 400 and "object" in r.get("error", ""), "non-object: %r" % r)
            continue
        st1, one, _ = d.req("POST", "/v1/titles", item)
        check(st1 == 200 and r.get("status") == 200 and all(
            r.get(f) == one.get(f) for f in ("title", "ids", "cluster", "finish", "pruned",
                                             "request_id")),
              "batch item %d equals /v1/titles: %r vs %r" % (k, r, one))
        check(set(r) == set(one) | {"status"}, "item %d has /v1/titles' fields: %r" % (k, sorted(r)))
    ref = cli_generate(*CASES[0])
    check(res and res[0].get("ids") == ref["ids"], "batch item 0 equals hllm generate")
    st, b, _ = d.req("POST", B, {"requests": []})
    check(st == 200 and b["results"] == [], "empty batch: %s %r" % (st, b))
    st, b, _ = d.req("POST", B, {"requests": [items[0]] * 65})
    check(st == 400 and "65" in b["error"] and "max-batch" in b["error"] and "64" in b["error"],
          "too many items: %s %r" % (st, b))
    st, b, _ = d.req("POST", B, {"requests": {"a": 1}})
    check(st == 400 and "requests" in b["error"], "requests not an array: %r" % b)
    st, b, _ = d.req("POST", B, [1])
    check(st == 400, "batch body not an object")
    st, b, _ = d.req("GET", B)
    check(st == 405, "GET on titles:batch: 405")
    # a batch of 64 fresh items, all bad but one: nothing lost, in order
    many = [{"user": {"history": ["h"]}, "ad": {"title": 5}, "request_id": str(k)} for k in range(63)]
    many.insert(40, title_body(["Dune"], "Batch of 64", None, request_id="good"))
    st, b, _ = d.req("POST", B, {"requests": many})
    sts = [x["status"] for x in b.get("results", [])]
    check(st == 200 and sts == [400] * 40 + [200] + [400] * 23 and
          b["results"][40].get("request_id") == "good", "64 items in order: %r" % sts)


def test_pruning():
    """--prune-threshold with the tiny package's match head: above every score (1) every title
    is the original one, pruned, without generating (cluster and per-user mode, streamed, in a
    batch, from the title cache); below every score (0) nothing is pruned and titles equal
    hllm generate; the cluster-mode score equals hllm titles' table score of (cluster, ad)."""
    hist, ad = ["The Hobbit", "Dune", "Small Gods"], "Night Flight"
    tpath = "/tmp/hllm-creatord-prune-%d.jsonl" % os.getpid()
    _, table = titles_table(tpath, [{"id": "a", "title": ad}], "--greedy", "--max-new", "16")
    d = Daemon("--prune-threshold", "1")
    try:
        st, m, _ = d.req("GET", "/v1/model")
        check(st == 200 and m.get("match_head") is True and m.get("prune_threshold") == 1,
              "v1/model with pruning: %r" % (m,))
        tok0 = d.metric("hllm:generated_tokens_total")
        st, b, _ = d.req("POST", "/v1/titles", title_body(hist, ad, None))
        check(st == 200 and b.get("pruned") is True and b.get("title") == ad and b.get("ids") == []
              and b.get("finish") == "pruned" and b.get("cached") is False and
              0 < b.get("score", -1) < 1, "pruned cluster-mode title: %s %r" % (st, b))
        e = table.get((b.get("cluster"), "a"))
        check(e is not None and abs(e["score"] - b.get("score", -1)) < 1e-5,
              "daemon score %r equals hllm titles' %r" % (b.get("score"), e and e["score"]))
        st, b2, _ = d.req("POST", "/v1/titles", title_body(hist, ad, None))
        check(st == 200 and b2.get("cached") is True and b2.get("pruned") is True and
              b2.get("title") == ad and b2.get("score") == b.get("score"),
              "a pruned answer is title-cached: %r" % (b2,))
        st, p, _ = d.req("POST", "/v1/titles", title_body(["Emma", "Ulysses"], "Per-user ad", None,
                                                          mode="per_user"))
        check(st == 200 and p.get("pruned") is True and p.get("title") == "Per-user ad" and
              p.get("ids") == [] and isinstance(p.get("cluster"), int) and 0 < p.get("score", -1) < 1,
              "pruned per-user title: %s %r" % (st, p))
        st, raw, _ = d.req("POST", "/v1/titles", title_body(["war", "peace"], "Streamed ad", None,
                                                            mode="per_user", stream=True), raw=True)
        ev = sse_parse(raw) if st == 200 else []
        names = [n for n, _ in ev]
        toks = "".join(x["text"] for n, x in ev if n == "token")
        done = [x for n, x in ev if n == "done"]
        check(names and names[-1] == "done" and toks == "Streamed ad" and done and
              done[0].get("pruned") is True and done[0].get("title") == "Streamed ad",
              "pruned stream: %r" % (ev,))
        st, bb, _ = d.req("POST", "/v1/titles:batch", {"requests": [
            title_body(["Kyoto"], "Batch ad", None), title_body(["Kyoto"], "Batch ad 2", None,
                                                                mode="per_user")]})
        check(st == 200 and [(x.get("status"), x.get("pruned"), x.get("title")) for x in
                             bb.get("results", [])] == [(200, True, "Batch ad"),
                                                        (200, True, "Batch ad 2")],
              "pruned batch: %r" % (bb,))
        check(d.metric("hllm:generated_tokens_total") == tok0,
              "pruned titles generated no token")
        check(d.metric("hllm:pruned_total") == 5, "hllm:pruned_total %r, want 5 (the cache hit "
              "is not scored again)" % d.metric("hllm:pruned_total"))
    finally:
        rc, log = d.stop()
        check(rc == 0 and "AddressSanitizer" not in log and "LeakSanitizer" not in log,
              "pruning daemon exit %s:\n%s" % (rc, log[-2000:]))
    d = Daemon("--prune-threshold", "0")
    try:
        for mode in ("cluster", "per_user"):
            ref = cli_generate(hist, ad, None, per_user=mode == "per_user")
            st, b, _ = d.req("POST", "/v1/titles", title_body(hist, ad, None, mode=mode))
            check(st == 200 and b.get("pruned") is False and b.get("ids") == ref["ids"] and
                  b.get("title") == ref["title"] and 0 < b.get("score", -1) < 1,
                  "threshold 0, %s: %r vs hllm generate %r" % (mode, b, ref))
        st, b, _ = d.req("POST", "/v1/titles", title_body(hist, ad, None))
        check(st == 200 and b.get("cached") is True and b.get("pruned") is False and
              0 < b.get("score", -1) < 1, "threshold 0, cached: %r" % (b,))
        check(d.metric("hllm:pruned_total") == 0 and d.metric("hllm:generated_tokens_total") > 0,
              "threshold 0 prunes nothing")
    finally:
        rc, log = d.stop()
        check(rc == 0 and "AddressSanitizer" not in log, "threshold-0 daemon exit %s" % rc)
    for thr in ("1", "0"):  # no title cache: a cluster-mode title is one job, embedded for the score
        d = Daemon("--prune-threshold", thr, "--title-cache-bytes", "0")
        try:
            ref = cli_generate(hist, ad, None)
            st, b, _ = d.req("POST", "/v1/titles", title_body(hist, ad, None))
            want = (True, ad, []) if thr == "1" else (False, ref["title"], ref["ids"])
            check(st == 200 and (b.get("pruned"), b.get("title"), b.get("ids")) == want and
                  b.get("cluster") == ref["cluster"] and 0 < b.get("score", -1) < 1,
                  "no title cache, threshold %s: %r (hllm generate %r)" % (thr, b, ref))
        finally:
            rc, log = d.stop()
            check(rc == 0 and "AddressSanitizer" not in log, "no-cache pruning daemon exit %s" % rc)
    d = Daemon()
    try:
        st, m, _ = d.req("GET", "/v1/model")
        check(m.get("match_head") is True and m.get("prune_threshold") is None,
              "v1/model without pruning: %r" % (m,))
        st, b, _ = d.req("POST", "/v1/titles", title_body(hist, ad, None))
        check(st == 200 and b.get("pruned") is False and "score" not in b,
              "pruning off: no score: %r" % (b,))
    finally:
        d.stop()
    r = subprocess.run([DAEMON, "--model", PKG, "--prune-threshold", "2"], capture_output=True,
                       text=True)
    check(r.returncode == 2 and "prune-threshold" in r.stderr, "prune-threshold 2: %r" % r.stderr)


def main():
    test_check_only()
    test_tables()
    test_limit_flags()
    d = Daemon()
    try:
        test_endpoints(d)
        test_titles_match_cli(d)
        test_bad_inputs(d)
        test_disconnect_cancels(d)
        sampled = test_title_cache(d)
        test_user_cache(d)
        test_single_flight(d)
        test_parse_error_quoting_bad_utf8(d)
        test_metrics_histograms(d)
        test_titles_batch(d)
        test_deadline(d)
    finally:
        rc, log = d.stop()
        check(rc == 0, "exit code 0 on SIGTERM: %s" % rc)
        check("AddressSanitizer" not in log and "LeakSanitizer" not in log,
              "no sanitizer report:\n" + log[-3000:])
    test_cache_eviction()
    test_caches_disabled(sampled)
    test_queue_full()
    test_sigterm_drains()
    test_request_timeout_config()
    test_pruning()
    if FAILS:
        print("%d failure(s)" % len(FAILS))
        sys.exit(1)
    print("all daemon tests passed")


if __name__ == "__main__":
    main()
