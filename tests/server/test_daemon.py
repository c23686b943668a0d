#!/usr/bin/env python3
"""End-to-end tests of hllm-creatord over HTTP (stdlib only).

usage: test_daemon.py HLLM_CREATORD HLLM TESTS_DIR
Starts the real daemon on 127.0.0.1 with a free port on tests/data/creator/tiny."""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

DAEMON, HLLM, TESTS = sys.argv[1], sys.argv[2], sys.argv[3]
PKG = os.path.join(TESTS, "data", "creator", "tiny")
FAILS = []


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
    def __init__(self, *extra):
        self.port = free_port()
        self.log = open(os.path.join("/tmp", "hllm-creatord-test-%d.log" % self.port), "w+")
        self.p = subprocess.Popen([DAEMON, "--model", PKG, "--port", str(self.port),
                                   "--log-level", "debug", *extra],
                                  stderr=self.log, stdout=subprocess.DEVNULL)
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
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def req(self, method, path, body=None, ctype="application/json", raw=False):
        c = self.conn()
        headers = {}
        if body is not None:
            if not isinstance(body, (bytes, bytearray)):
                body = json.dumps(body).encode()
            if ctype:
                headers["Content-Type"] = ctype
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        c.close()
        hdrs = dict((k.lower(), v) for k, v in r.getheaders())
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

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(timeout=120)
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


def cli_generate(hist, title, desc):
    line = {"history": hist, "ad": {"title": title}}
    if desc is not None:
        line["ad"]["description"] = desc
    out = subprocess.run([HLLM, "generate", "--model", PKG, "--greedy", "--max-new", "16"],
                         input=(json.dumps(line) + "\n").encode(), capture_output=True, check=True)
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


def main():
    test_check_only()
    test_limit_flags()
    d = Daemon()
    try:
        test_endpoints(d)
        test_titles_match_cli(d)
        test_bad_inputs(d)
        test_disconnect_cancels(d)
    finally:
        rc, log = d.stop()
        check(rc == 0, "exit code 0 on SIGTERM: %s" % rc)
        check("AddressSanitizer" not in log and "LeakSanitizer" not in log,
              "no sanitizer report:\n" + log[-3000:])
    test_queue_full()
    test_sigterm_drains()
    if FAILS:
        print("%d failure(s)" % len(FAILS))
        sys.exit(1)
    print("all daemon tests passed")


if __name__ == "__main__":
    main()
