"""The stage cache end to end (issue 5 acceptance, RELIABILITY B8): real `fastgw serve` processes in
front of a recording upstream that numbers its answers, so a test can tell a hit (an old number, no
new upstream request) from a miss."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from support.upstream import Action, Recorded, RecordingUpstream
from support.waiting import wait_for

TOKEN = "cache-admin-token-0123456789"


class Numbered:
    """Upstream behaviour: every answer carries its sequence number; `special` picks other answers."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, request: Recorded) -> Action:
        with self.lock:
            self.count += 1
            n = self.count
        path = request.target.split("?", 1)[0]
        body = f"{n}".encode()
        if path.startswith("/big/"):
            return Action(body=(b"%08d" % n) * (10 * 1024 // 8))  # 10 KiB
        if path.startswith("/huge"):
            return Action(body=b"x" * ((1 << 20) + 1))
        special = {
            "/cookie": [("set-cookie", "session=1")],
            "/private": [("cache-control", "private, max-age=60")],
            "/nostore": [("cache-control", "no-store")],
            "/nocache": [("cache-control", "no-cache")],
            "/varystar": [("vary", "*")],
            "/varylang": [("vary", "Accept-Language")],
            "/maxage1": [("cache-control", "public, max-age=1")],
        }
        for prefix, headers in special.items():
            if path.startswith(prefix):
                return Action(body=body, headers=headers)
        if path.startswith("/error"):
            return Action(status=500, body=body)
        if path.startswith("/notfound"):
            return Action(status=404, body=body)
        return Action(body=body, headers=[("content-type", "text/plain")])


@pytest.fixture
def numbered() -> RecordingUpstream:
    server = RecordingUpstream(Numbered()).start()
    yield server
    server.stop()


def config(upstream: str, stage_cache: str, route_cache: str = "", extra_routes: str = "") -> str:
    return f"""
apis:
  - name: shop
    type: REST
    stages:
      prod:
        cache: {stage_cache}
    routes:
      - route: GET /items/{{id}}
        {route_cache}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/items/{{id}}"}}
      - route: GET /live
        cache: {{enabled: false}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/live"}}
      - route: ANY /any/{{name+}}
        cache: {{keyParameters: [method.request.path.name]}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/{{name}}"}}
      - route: POST /search
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/search"}}
      - route: POST /lookup
        cache: {{enabled: true, keyParameters: [method.request.querystring.q]}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/lookup"}}
      - route: GET /me
        cache: {{keyParameters: [method.request.header.Authorization]}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/me"}}
{extra_routes}
"""


DEBUG = "{debugHeader: true, ttlInSeconds: 300}"
ITEM_KEYS = "cache: {keyParameters: [method.request.path.id, method.request.querystring.lang]}"


def get(gw, path: str, **kw) -> httpx.Response:
    return httpx.get(gw.url + path, timeout=10, **kw)


def metric(gw, name: str, **labels: str) -> float:
    total = 0.0
    for line in httpx.get(f"{gw.admin}/metrics", timeout=5).text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_metric(gw, name: str, expected: float, timeout: float = 5.0, **labels: str) -> float:
    deadline = time.monotonic() + timeout
    value = metric(gw, name, **labels)
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        value = metric(gw, name, **labels)
    return value


def test_repeated_gets_miss_then_hit_until_the_ttl_and_metrics_agree_with_the_upstream(start_gateway, numbered):
    gw = start_gateway(config(numbered.address, DEBUG, "cache: {ttlInSeconds: 4, keyParameters: "
                                                       "[method.request.path.id]}"), args=("--no-access-log",))
    client = httpx.Client(base_url=gw.url, timeout=10)
    stored_at = time.monotonic()
    first = client.get("/prod/items/1")
    assert (first.status_code, first.text, first.headers["x-cache"]) == (200, "1", "Miss")
    hits = [client.get("/prod/items/1") for _ in range(20)]
    assert time.monotonic() - stored_at < 3.5, "the machine is too slow for this test's TTL"
    assert {(r.status_code, r.text, r.headers["x-cache"]) for r in hits} == {(200, "1", "Hit")}
    assert len(numbered.requests) == 1
    # Each hit still has its own request id, and the stored headers come back.
    assert len({r.headers["x-amzn-requestid"] for r in [first, *hits]}) == 21
    assert hits[0].headers["content-type"] == "text/plain"
    time.sleep(max(0.0, stored_at + 4.1 - time.monotonic()))  # the route's TTL
    again = client.get("/prod/items/1")
    assert (again.text, again.headers["x-cache"]) == ("2", "Miss")
    assert client.get("/prod/items/1").headers["x-cache"] == "Hit"
    assert len(numbered.requests) == 2
    # AWS CacheHitCount / CacheMissCount: misses == what the upstream saw.
    labels = {"api": "shop", "stage": "prod", "route": "GET /items/{id}"}
    assert wait_metric(gw, "fastgw_cache_misses_total", 2, **labels) == len(numbered.requests) == 2
    assert wait_metric(gw, "fastgw_cache_hits_total", 21, **labels) == 21
    assert metric(gw, "fastgw_cache_entries", api="shop", stage="prod") == 1
    assert 0 < metric(gw, "fastgw_cache_bytes", api="shop", stage="prod") < 2048
    assert metric(gw, "fastgw_cache_capacity_bytes", api="shop", stage="prod") == 1 << 29  # AWS 0.5 GB
    # A route with `enabled: false` is never cached and sends no X-Cache.
    live = [get(gw, "/prod/live") for _ in range(3)]
    assert [r.text for r in live] == ["3", "4", "5"] and "x-cache" not in live[0].headers


def test_only_listed_parameters_split_entries(start_gateway, numbered):
    gw = start_gateway(config(numbered.address, DEBUG, ITEM_KEYS), args=("--no-access-log",))
    a = get(gw, "/prod/items/1?lang=en&type=admin&department=A")
    b = get(gw, "/prod/items/1?department=B&lang=en")  # unlisted parameters differ: the same entry
    assert (a.text, b.text, b.headers["x-cache"]) == ("1", "1", "Hit")
    c = get(gw, "/prod/items/1?lang=fr&department=A")  # a listed one differs: its own entry
    d = get(gw, "/prod/items/2?lang=en")  # the listed path parameter differs
    e = get(gw, "/prod/items/1")  # the listed query parameter is absent: its own entry too
    f = get(gw, "/prod/items/1?lang=")  # present but empty is not absent
    assert [r.headers["x-cache"] for r in (c, d, e, f)] == ["Miss"] * 4
    assert len(numbered.requests) == 5
    # Repeated listed parameters are all in the key, in order (an upstream reading the other
    # occurrence cannot be used to poison the entry of a single one).
    g = get(gw, "/prod/items/1?lang=en&lang=fr")
    assert g.headers["x-cache"] == "Miss"
    assert get(gw, "/prod/items/1?lang=en&lang=fr").headers["x-cache"] == "Hit"


def test_a_path_parameter_not_in_the_key_does_not_split_entries_as_in_aws(start_gateway, numbered):
    gw = start_gateway(config(numbered.address, DEBUG, "cache: {keyParameters: []}"), args=("--no-access-log",))
    assert get(gw, "/prod/items/1").text == "1"
    assert get(gw, "/prod/items/2").text == "1"  # AWS: unlisted parameters are ignored, path ones too
    assert len(numbered.requests) == 1


def test_methods_get_and_head_by_default_others_only_when_the_route_opts_in(start_gateway, numbered):
    gw = start_gateway(config(numbered.address, DEBUG, ITEM_KEYS), args=("--no-access-log",))
    assert get(gw, "/prod/any/x").headers["x-cache"] == "Miss"
    assert get(gw, "/prod/any/x").headers["x-cache"] == "Hit"
    head = httpx.head(gw.url + "/prod/any/x")
    assert (head.status_code, head.headers["x-cache"]) == (200, "Miss")  # HEAD: its own entry
    assert httpx.head(gw.url + "/prod/any/x").headers["x-cache"] == "Hit"
    put = [httpx.put(gw.url + "/prod/any/x", content=b"{}") for _ in range(2)]
    assert ["x-cache" in r.headers for r in put] == [False, False]  # ANY: other methods pass by
    posts = [httpx.post(gw.url + "/prod/search", content=b"{}") for _ in range(2)]
    assert ["x-cache" in r.headers for r in posts] == [False, False]  # POST: not cached by default
    looked = [httpx.post(gw.url + "/prod/lookup?q=1", content=b"{}") for _ in range(2)]
    assert [r.headers["x-cache"] for r in looked] == ["Miss", "Hit"]  # the route opted in
    assert len(numbered.requests) == 1 + 1 + 2 + 2 + 1


@pytest.mark.reliability("CA-03", "CA-07", "CA-08")
@pytest.mark.parametrize("path", ["/cookie", "/private", "/nostore", "/nocache", "/varystar", "/varylang",
                                  "/error", "/notfound", "/huge"])
def test_responses_that_must_not_be_stored(start_gateway, numbered, path):
    """CA-03 (Set-Cookie, private, no-store), CA-07 (Vary: *, Vary outside the key), CA-08 (> 1 MiB),
    and errors (only 200 is stored)."""
    gw = start_gateway(config(numbered.address, DEBUG, ITEM_KEYS),
                       args=("--no-access-log",))
    first = get(gw, f"/prod/any{path}")
    second = get(gw, f"/prod/any{path}")
    assert first.headers["x-cache"] == second.headers["x-cache"] == "Miss"
    assert len(numbered.requests) == 2
    if path == "/huge":
        assert len(second.content) == (1 << 20) + 1


def test_vary_on_a_header_in_the_key_and_max_age_from_the_upstream(start_gateway, numbered):
    routes = f"""      - route: GET /vary/{{name}}
        cache: {{keyParameters: [method.request.header.Accept-Language]}}
        integration: {{type: HTTP_PROXY, uri: "http://{numbered.address}/varylang"}}
      - route: GET /short
        integration: {{type: HTTP_PROXY, uri: "http://{numbered.address}/maxage1"}}
"""
    gw = start_gateway(config(numbered.address, DEBUG, ITEM_KEYS, routes), args=("--no-access-log",))
    en = [get(gw, "/prod/vary/a", headers={"accept-language": "en"}) for _ in range(2)]
    fr = get(gw, "/prod/vary/a", headers={"accept-language": "fr"})
    assert [r.headers["x-cache"] for r in (*en, fr)] == ["Miss", "Hit", "Miss"]
    # Cache-Control: max-age=1 from the upstream shortens the route's 300 s.
    stored = time.monotonic()
    assert [get(gw, "/prod/short").headers["x-cache"] for _ in range(2)] == ["Miss", "Hit"]
    # A hit until a second has passed, then a miss (not after the route's 300 s).
    wait_for(lambda: get(gw, "/prod/short").headers["x-cache"] == "Miss", timeout=10, what="max-age=1 to expire")
    assert time.monotonic() - stored >= 1.0


@pytest.mark.reliability("CA-02")
def test_authorization_is_not_cached_unless_the_key_names_the_caller(start_gateway, numbered):
    """CA-02 and RFC 9111 §3.5."""
    gw = start_gateway(config(numbered.address, DEBUG, ITEM_KEYS), args=("--no-access-log",))
    assert get(gw, "/prod/items/1").text == "1"
    authed = [get(gw, "/prod/items/1", headers={"authorization": "Bearer alice"}) for _ in range(2)]
    assert [(r.text, r.headers["x-cache"]) for r in authed] == [("2", "Miss"), ("3", "Miss")]
    assert get(gw, "/prod/items/1").text == "1"  # the shared entry was neither read nor replaced
    # GET /me has Authorization in its key: one entry per caller.
    alice = [get(gw, "/prod/me", headers={"authorization": "Bearer alice"}).text for _ in range(2)]
    bob = [get(gw, "/prod/me", headers={"authorization": "Bearer bob"}).text for _ in range(2)]
    anonymous = [get(gw, "/prod/me").text for _ in range(2)]
    assert alice == ["4", "4"] and bob == ["5", "5"] and anonymous == ["6", "6"]


@pytest.mark.reliability("CA-04")
def test_cpdos_errors_caused_by_odd_requests_are_never_cached(start_gateway):
    """CA-04: a request that makes the upstream fail (an override header here) must not poison the
    entry the next, normal, request gets."""
    def behaviour(request: Recorded) -> Action:
        if request.header("x-http-method-override") or request.header("x-meta") is not None:
            return Action(status=400, body=b"bad")
        return Action(body=b"good")

    upstream = RecordingUpstream(behaviour).start()
    try:
        gw = start_gateway(config(upstream.address, DEBUG, "cache: {keyParameters: [method.request.path.id]}"),
                           args=("--no-access-log",))
        assert get(gw, "/prod/items/1", headers={"x-http-method-override": "DELETE"}).status_code == 400
        assert get(gw, "/prod/items/1", headers={"x-meta": ""}).status_code == 400
        normal = get(gw, "/prod/items/1")
        assert (normal.status_code, normal.text, normal.headers["x-cache"]) == (200, "good", "Miss")
    finally:
        upstream.stop()


class SlowChunked:
    """An upstream that sends the head and the first chunk, waits, then the rest: the gateway relays
    the body as a stream (relay_response's streamed branch), and a cache miss keeps it on the way."""

    def __init__(self, chunks: int = 12, size: int = 16 * 1024):
        self.chunks, self.size = chunks, size
        self.requests = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        data = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                _, _, data = data.partition(b"\r\n\r\n")
                self.requests += 1
                chunk = (b"%08d" % self.requests) * (self.size // 8)
                framed = b"%x\r\n%b\r\n" % (len(chunk), chunk)
                conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + framed)
                time.sleep(0.05)
                conn.sendall(framed * (self.chunks - 1) + b"0\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("chunks", [12, 70])
def test_a_streamed_response_is_stored_whole_up_to_1mib(start_gateway, chunks):
    upstream = SlowChunked(chunks)
    try:
        routes = f"""      - route: GET /stream
        integration: {{type: HTTP_PROXY, uri: "http://{upstream.address}/stream"}}
"""
        gw = start_gateway(config("127.0.0.1:1", DEBUG, ITEM_KEYS, routes), args=("--no-access-log",))
        first = get(gw, "/prod/stream")
        second = get(gw, "/prod/stream")
        assert len(first.content) == len(second.content) == chunks * 16 * 1024
        if chunks == 12:  # 192 KiB: stored
            assert first.content == second.content
            assert (first.headers["x-cache"], second.headers["x-cache"], upstream.requests) == ("Miss", "Hit", 1)
        else:  # 1120 KiB: over AWS's 1 MiB, relayed but not stored
            assert (first.headers["x-cache"], second.headers["x-cache"], upstream.requests) == ("Miss", "Miss", 2)
    finally:
        upstream.close()


STRATEGY = "{{debugHeader: true, unauthorizedCacheControlHeaderStrategy: {0}, invalidationTokens: [{1}]}}"


@pytest.mark.reliability("CA-05")
def test_max_age_0_without_authorization_is_403_under_fail_with_403(start_gateway, numbered):
    """CA-05, AWS requireAuthorizationForCacheControl with FAIL_WITH_403."""
    gw = start_gateway(config(numbered.address, STRATEGY.format("FAIL_WITH_403", TOKEN), ITEM_KEYS),
                       args=("--no-access-log",))
    assert get(gw, "/prod/items/1").text == "1"
    refused = get(gw, "/prod/items/1", headers={"cache-control": "max-age=0"})
    assert refused.status_code == 403
    assert refused.headers["x-amzn-errortype"] == "AccessDeniedException"
    wrong = get(gw, "/prod/items/1", headers={"cache-control": "max-age=0", "x-fastgw-cache-token": "x" * 28})
    assert wrong.status_code == 403
    assert len(numbered.requests) == 1
    # With the stage's token: refetched, and the entry replaced.
    fresh = get(gw, "/prod/items/1", headers={"cache-control": "no-transform, max-age=0",
                                              "x-fastgw-cache-token": TOKEN})
    assert (fresh.status_code, fresh.text, fresh.headers["x-cache"]) == (200, "2", "Miss")
    assert numbered.requests[-1].header("x-fastgw-cache-token") is None  # never sent upstream
    assert get(gw, "/prod/items/1").text == "2"  # the replaced entry
    assert len(numbered.requests) == 2


def test_max_age_0_without_authorization_gets_a_warning_under_succeed_with_response_header(start_gateway,
                                                                                            numbered):
    gw = start_gateway(config(numbered.address, STRATEGY.format("SUCCEED_WITH_RESPONSE_HEADER", TOKEN),
                              ITEM_KEYS), args=("--no-access-log",))
    # Nothing cached yet: served from the upstream, with the warning, and stored.
    first = get(gw, "/prod/items/1", headers={"cache-control": "max-age=0"})
    assert (first.status_code, first.text, first.headers["x-cache"]) == (200, "1", "Miss")
    assert first.headers["warning"].startswith("199 ")
    # Cached: AWS ignores the header (and warns), so the entry answers; the upstream is not asked.
    second = get(gw, "/prod/items/1", headers={"cache-control": "max-age=0"})
    assert (second.text, second.headers["x-cache"]) == ("1", "Hit") and second.headers["warning"]
    assert "warning" not in get(gw, "/prod/items/1").headers  # the stored entry has no warning in it
    assert len(numbered.requests) == 1


def test_max_age_0_under_succeed_without_response_header_and_without_required_authorization(start_gateway,
                                                                                            numbered):
    gw = start_gateway(config(numbered.address, STRATEGY.format("SUCCEED_WITHOUT_RESPONSE_HEADER", TOKEN),
                              ITEM_KEYS), args=("--no-access-log",), name="silent")
    get(gw, "/prod/items/1")
    ignored = get(gw, "/prod/items/1", headers={"cache-control": "max-age=0"})
    assert (ignored.text, ignored.headers["x-cache"]) == ("1", "Hit") and "warning" not in ignored.headers
    open_gw = start_gateway(config(numbered.address, "{debugHeader: true, requireAuthorizationForCacheControl: "
                                   "false}", ITEM_KEYS), args=("--no-access-log",), name="open")
    assert get(open_gw, "/prod/items/1").text == "2"
    assert get(open_gw, "/prod/items/1", headers={"cache-control": "max-age=0"}).text == "3"
    assert get(open_gw, "/prod/items/1").text == "3"


def test_invalidation_reaches_the_other_workers_of_the_host(start_gateway, numbered):
    gw = start_gateway(config(numbered.address, "{requireAuthorizationForCacheControl: false}", ITEM_KEYS),
                       workers=2, args=("--no-access-log",))
    # Fill both workers (new connections spread over them), then invalidate through one of them.
    for _ in range(20):
        get(gw, "/prod/items/1")
    before = len(numbered.requests)
    assert 1 <= before <= 2
    replaced = get(gw, "/prod/items/1", headers={"cache-control": "max-age=0"}).text
    # Every later answer, whichever worker gives it, is the replacement or newer: never the old one.
    later = {int(get(gw, "/prod/items/1").text) for _ in range(20)}
    assert min(later) >= int(replaced)


def test_flush_empties_the_stage_in_every_worker(start_gateway, numbered):
    gw = start_gateway(config(numbered.address, DEBUG, ITEM_KEYS), workers=2, args=("--no-access-log",))
    for _ in range(20):
        get(gw, "/prod/items/1")
    old = len(numbered.requests)
    result = subprocess.run([sys.executable, "-m", "fastgw", "cache", "flush", "-c", str(gw.config_path),
                             "--api", "shop", "--stage", "prod", "--admin-port", str(gw.admin_port)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert '"shop/prod"' in result.stdout
    # As soon as the command returned, no worker answers with an entry from before the flush.
    answers = {int(get(gw, "/prod/items/1").text) for _ in range(20)}
    assert min(answers) > old
    # The admin API does the same; unknown stages are 404.
    assert httpx.post(f"{gw.admin}/cache/flush?api=shop&stage=prod").status_code == 200
    assert min(int(get(gw, "/prod/items/1").text) for _ in range(10)) > max(answers)
    assert httpx.post(f"{gw.admin}/cache/flush?api=shop&stage=nope").status_code == 404
    missing = subprocess.run([sys.executable, "-m", "fastgw", "cache", "flush", "-c", str(gw.config_path),
                              "--api", "shop", "--stage", "nope"], capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "no cached stage" in missing.stderr


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_1mib_budget_of_10kib_entries_evicts_the_least_recently_used_and_holds_no_more(start_gateway, numbered):
    """The byte budget: gauges never above it; LRU order; the worker's memory stays flat while
    20 MiB of distinct entries pass through it."""
    gw = start_gateway(config(numbered.address, "{capacity: 1MiB, debugHeader: true}", ITEM_KEYS),
                       args=("--no-access-log",))
    client = httpx.Client(base_url=gw.url, timeout=10)
    sizes = []
    for i in range(150):
        assert client.get(f"/prod/any/big/{i}").status_code == 200
        client.get("/prod/any/big/hot")  # touched after every put: always the most recently used
        if i % 50 == 49:  # once the worker has published this many misses, its gauges are as fresh
            wait_for(lambda n=i + 2: metric(gw, "fastgw_cache_misses_total", api="shop", stage="prod") >= n,
                     what="the misses published")
            sizes.append((metric(gw, "fastgw_cache_bytes", api="shop", stage="prod"),
                          metric(gw, "fastgw_cache_entries", api="shop", stage="prod")))
    assert all(0 < held <= 1 << 20 for held, _ in sizes), sizes
    held, entries = sizes[-1]
    assert 80 <= entries <= 100  # ~10.6 KiB counted per entry
    assert client.get("/prod/any/big/hot").headers["x-cache"] == "Hit"
    assert client.get("/prod/any/big/149").headers["x-cache"] == "Hit"  # recent
    assert client.get("/prod/any/big/0").headers["x-cache"] == "Miss"  # the least recently used went first
    # Memory: after the cache is full, another 2,000 distinct entries (20 MiB) leave RSS flat.
    (worker,) = gw.worker_pids()
    baseline = _rss_kib(worker)
    for i in range(2000):
        client.get(f"/prod/any/big/n{i}")
    grown = _rss_kib(worker) - baseline
    assert grown < 4096, f"worker RSS grew {grown} KiB"
    wait_for(lambda: metric(gw, "fastgw_cache_misses_total", api="shop", stage="prod") >= 2150,
             what="the misses published")  # the gauges below are published with them
    assert metric(gw, "fastgw_cache_bytes", api="shop", stage="prod") <= 1 << 20
    client.close()


def test_each_worker_holds_an_equal_share_of_the_budget(start_gateway, numbered):
    gw = start_gateway(config(numbered.address, "{capacity: 1MiB}", ITEM_KEYS),
                       workers=2, args=("--no-access-log",))
    for i in range(300):
        get(gw, f"/prod/any/big/{i}")
    wait_for(lambda: metric(gw, "fastgw_cache_misses_total", api="shop", stage="prod") >= 300,
             what="both workers' misses published")  # the gauges below are published with them
    # Summed over the two workers: never more than the host's 1 MiB.
    assert 0 < metric(gw, "fastgw_cache_bytes", api="shop", stage="prod") <= 1 << 20


def test_config_problems_are_located(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("""
apis:
  - name: shop
    stages:
      prod:
        cache: {capacity: 12 parsecs, ttlInSeconds: 4000, unauthorizedCacheControlHeaderStrategy: NOPE,
                backend: redis}
      test:
        cache: {size: "3", capacity: 1MiB}
    routes:
      - route: GET /items/{id}
        cache: {keyParameters: [method.request.path.nope, method.request.body.x]}
        integration: {type: HTTP_PROXY, uri: "http://127.0.0.1:1/items/{id}"}
""")
    result = subprocess.run([sys.executable, "-m", "fastgw", "validate", str(bad)], capture_output=True, text=True,
                            env={**os.environ}, timeout=60)
    assert result.returncode == 2
    err = result.stderr
    for expected in ("apis[0].stages.prod.cache.capacity", "apis[0].stages.prod.cache.ttlInSeconds",
                     "apis[0].stages.prod.cache.unauthorizedCacheControlHeaderStrategy",
                     "apis[0].stages.test.cache.size", "apis[0].routes[0].cache.keyParameters[1]"):
        assert expected in err, err
    assert "line 6" in err or "line 7" in err


def test_the_example_config_is_valid():
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "cache.yaml")
    result = subprocess.run([sys.executable, "-m", "fastgw", "validate", example], capture_output=True, text=True,
                            env={**os.environ, "CACHE_TOKEN": "cache-token-0123456789abcdef"}, timeout=60)
    assert result.returncode == 0, result.stderr


def test_flush_needs_the_admin_token_when_one_is_set(start_gateway, numbered):
    text = "server: {adminToken: admin-token-0123456789}\n" + config(numbered.address, DEBUG, ITEM_KEYS)
    gw = start_gateway(text, args=("--no-access-log",))
    get(gw, "/prod/items/1")
    assert httpx.post(f"{gw.admin}/cache/flush?api=shop").status_code == 401
    result = subprocess.run([sys.executable, "-m", "fastgw", "cache", "flush", "-c", str(gw.config_path),
                             "--api", "shop", "--admin-port", str(gw.admin_port)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr  # the token comes from the config
    assert get(gw, "/prod/items/1").headers["x-cache"] == "Miss"


def test_a_live_reload_starts_with_empty_caches_and_keeps_caching(start_gateway, numbered):
    gw = start_gateway(config(numbered.address, DEBUG, ITEM_KEYS), workers=1, args=("--no-access-log",))
    assert [get(gw, "/prod/items/1").headers["x-cache"] for _ in range(2)] == ["Miss", "Hit"]
    gw.config_path.write_text(config(numbered.address, "{debugHeader: true, ttlInSeconds: 120}", ITEM_KEYS))
    assert httpx.post(f"{gw.admin}/reload", timeout=30).status_code == 202
    answers = [get(gw, "/prod/items/1") for _ in range(2)]
    assert [(r.text, r.headers["x-cache"]) for r in answers] == [("2", "Miss"), ("2", "Hit")]


def test_every_integration_kind_is_cached_not_only_http_proxy(start_gateway, numbered):
    """AWS caches the method response whatever the integration: a MOCK rendered by a template and a
    Lambda function are answered from the cache after the first request, like HTTP_PROXY routes."""
    extra = """
      - route: GET /mocked
        integration:
          type: MOCK
          requestTemplates: {application/json: '{"statusCode": 200}'}
          responses:
            default:
              statusCode: "200"
              responseTemplates: {application/json: '{"rendered for": "$context.requestId"}'}
      - route: GET /counted
        integration: {type: FUNCTION, uri: counted}
functions: {counted: handlers.lambdas:counted}
"""
    tests_dir = str(Path(__file__).resolve().parent)
    gw = start_gateway(config(numbered.address, DEBUG, extra_routes=extra), workers=1,
                       env={"PYTHONPATH": tests_dir}, args=("--no-access-log",))
    first, again = get(gw, "/prod/mocked"), get(gw, "/prod/mocked")
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("Miss", "Hit")
    assert again.json() == first.json() == {"rendered for": first.headers["x-amzn-requestid"]}
    assert again.headers["x-amzn-requestid"] != first.headers["x-amzn-requestid"]
    answers = [get(gw, "/prod/counted") for _ in range(4)]
    assert [a.text for a in answers] == ["call 1"] * 4  # the function ran once
    assert [a.headers["x-cache"] for a in answers] == ["Miss", "Hit", "Hit", "Hit"]
