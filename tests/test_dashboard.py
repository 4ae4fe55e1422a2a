"""The dashboard on the admin port (issue 21): its JSON snapshot, its page in a real headless
Chromium against a gateway with traffic, its actions and what it refuses."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from support.waiting import wait_until

from fastgw.admin.dashboard import quantile

TOKEN = "dash-admin-token-0123456789"
ALICE = "alice-dashboard-key-0123456789abcdef"
REPO = Path(__file__).resolve().parent.parent


def config(upstream: str) -> str:
    return f"""
server: {{adminToken: {TOKEN}}}
state: {{backend: local, path: state}}
apis:
  - name: shop
    type: REST
    apiKeySource: HEADER
    deployments:
      v1:
        routes:
          - route: GET /items/{{id}}
            apiKeyRequired: true
            integration: {{type: HTTP_PROXY, uri: "http://{upstream}/v1/{{id}}"}}
          - route: GET /open
            integration: {{type: HTTP_PROXY, uri: "http://{upstream}/open"}}
      v2:
        routes:
          - route: GET /items/{{id}}
            apiKeyRequired: true
            integration: {{type: HTTP_PROXY, uri: "http://{upstream}/v2/{{id}}"}}
          - route: GET /open
            integration: {{type: HTTP_PROXY, uri: "http://{upstream}/open"}}
    stages:
      prod:
        deployment: v1
        cache: {{ttlInSeconds: 300}}
        canary: {{deployment: v2, percentTraffic: 12.5}}
usagePlans:
  - name: basic
    apiStages: [{{api: shop, stage: prod}}]
    quota: {{limit: 100000, period: DAY}}
apiKeys:
  - {{name: alice, value: "{ALICE}", usagePlans: [basic]}}
"""


@contextmanager
def traffic(url: str, key: str) -> Iterator[list[int]]:
    """Requests in a loop on a thread (about 50 per second) until the block ends; yields the count."""
    sent = [0]
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                client.get(f"{url}/prod/items/{sent[0] % 5}", headers={"x-api-key": key})
                client.get(f"{url}/prod/open")
                sent[0] += 2
                stop.wait(0.04)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        stop.set()
        thread.join(10)


def data(gateway) -> dict:
    response = httpx.get(f"{gateway.admin}/dashboard/data", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def live_rate(gateway, route: str) -> float | None:
    rows = [r for r in data(gateway)["traffic"] if r["route"] == route and r["stage"] == "prod"]
    return rows[0]["rate"] if rows and rows[0]["rate"] else None


def test_the_snapshot_has_routes_canaries_live_rates_usage_and_cache(start_gateway, upstream):
    gateway = start_gateway(config(upstream.address))
    with traffic(gateway.url, ALICE) as sent:
        wait_until(lambda: live_rate(gateway, "GET /items/{id}"), "a live rate on GET /items/{id}")
        snap = data(gateway)
    assert snap["ready"] is True and snap["tokenRequired"] is True
    routes = {(r["stage"], r["route"], r["integration"]) for r in snap["routes"]}
    assert ("prod", "GET /items/{id}", f"HTTP_PROXY http://{upstream.address}/v1/{{id}}") in routes
    assert ("prod (canary v2)", "GET /items/{id}", f"HTTP_PROXY http://{upstream.address}/v2/{{id}}") in routes
    [stage] = snap["stages"]
    assert (stage["deployment"], stage["canary"]["deployment"], stage["canary"]["percentTraffic"]) == ("v1", "v2", 12.5)
    item = next(r for r in snap["traffic"] if r["route"] == "GET /items/{id}" and r["stage"] == "prod")
    # About 25 per second of each route; a loaded 2-core machine may deliver far fewer.
    assert 0 < item["rate"] < 200 and item["p50"] is not None and item["p99"] >= item["p50"]
    assert item["rate5xx"] == 0 and len(item["history"]) >= 1
    # Usage today: what alice sent, as the usage plan counted it (the canary's share included).
    [row] = [u for u in snap["usage"] if u["name"] == "alice"]
    assert row["plan"] == "basic" and row["limit"] == 100000 and row["period"] == "DAY"
    done = sent[0] // 2
    final = wait_until(lambda: next(u for u in data(gateway)["usage"] if u["name"] == "alice")["today"] >= done,
                     "usage to count every request")
    assert final
    alice = next(u for u in data(gateway)["usage"] if u["name"] == "alice")
    assert alice["today"] == done and alice["remaining"] == 100000 - done
    # The cache: five distinct ids on a cached stage, so most lookups hit.
    cache = wait_until(lambda: [c for c in data(gateway)["cache"] if c["stage"] == "prod" and c["hits"]], "cache hits")
    assert cache[0]["hitRatio"] > 0.5 and cache[0]["entries"] >= 1 and cache[0]["capacity"] > 0


def test_no_key_value_is_ever_in_the_snapshot_or_the_page(start_gateway, upstream):
    gateway = start_gateway(config(upstream.address))
    httpx.get(f"{gateway.url}/prod/items/1", headers={"x-api-key": ALICE}, timeout=10)
    created = httpx.post(f"{gateway.admin}/keys", json={"name": "bob", "usagePlans": ["basic"]},
                         headers={"authorization": f"Bearer {TOKEN}"}, timeout=10).json()
    body = httpx.get(f"{gateway.admin}/dashboard/data", timeout=10).text
    assert "alice" in body and "bob" in body
    assert ALICE not in body and created["value"] not in body


def test_the_page_is_same_origin_only_and_actions_need_the_token(start_gateway, upstream):
    gateway = start_gateway(config(upstream.address))
    page = httpx.get(f"{gateway.admin}/dashboard", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    for asset in ("dashboard.js", "dashboard.css"):
        assert httpx.get(f"{gateway.admin}/dashboard/{asset}", timeout=10).status_code == 200
    assert httpx.get(f"{gateway.admin}/dashboard/secret.txt", timeout=10).status_code == 404
    # Nothing on the page comes from elsewhere (the admin port may have no internet).
    for name in ("dashboard.html", "dashboard.js", "dashboard.css"):
        text = (REPO / "fastgw" / "admin" / "static" / name).read_text()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name

    promote = f"{gateway.admin}/canary/shop/prod/promote"
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert httpx.post(promote, json={}, timeout=10).status_code == 401
    # A page elsewhere cannot act through an operator's browser, even with the token.
    evil = httpx.post(promote, json={}, headers={**auth, "origin": "http://evil.example"}, timeout=10)
    assert evil.status_code == 403
    cross = httpx.post(promote, json={}, headers={**auth, "sec-fetch-site": "cross-site"}, timeout=10)
    assert cross.status_code == 403
    # What the page itself sends: same Origin as the admin address, the token it was given.
    origin = {"origin": gateway.admin}
    done = httpx.post(f"{gateway.admin}/canary/shop/prod/set", json={"percentTraffic": 40},
                      headers={**auth, **origin}, timeout=20)
    assert done.status_code == 200, done.text
    assert data(gateway)["stages"][0]["canary"]["percentTraffic"] == 40


def test_quantiles_are_prometheus_histogram_quantile():
    # Cumulative buckets (upper bound -> count), as Prometheus's histogram_quantile reads them.
    buckets = {0.1: 10.0, 0.2: 20.0, 0.4: 20.0, float("inf"): 20.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.75, buckets) == pytest.approx(0.15)
    assert quantile(0.25, buckets) == pytest.approx(0.05)
    assert quantile(0.99, {0.1: 0.0, 1.0: 0.0, float("inf"): 5.0}) == 1.0  # above the last bound
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    assert quantile(0.5, {}) is None


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    assert CHROMIUM, "chromium is installed by scripts/bootstrap.sh test"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--disable-extensions", "--virtual-time-budget=8000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def test_the_page_renders_in_headless_chromium_with_live_traffic(start_gateway, upstream, tmp_path):
    gateway = start_gateway(config(upstream.address))
    with traffic(gateway.url, ALICE):
        wait_until(lambda: live_rate(gateway, "GET /items/{id}"), "a live rate before the browser looks")
        dom = chromium("--dump-dom", f"{gateway.admin}/dashboard")
        shot = tmp_path / "dashboard.png"
        chromium("--window-size=1280,1400", f"--screenshot={shot}", f"{gateway.admin}/dashboard")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'class="pill ok">ready<' in html
    assert "GET /items/{id}" in html and f"HTTP_PROXY http://{upstream.address}/v1/{{id}}" in html
    assert '<td class="num canary-percent">12.5%</td>' in html
    rates = [float(r) for r in re.findall(r'<td class="num rate">([0-9.]+)</td>', html)]
    assert rates and max(rates) > 0, "no live rate on the page"
    today = re.search(r"<td>alice</td><td>yes</td><td>basic</td><td class=\"num usage-today\">(\d+)</td>", html)
    assert today and int(today.group(1)) > 0, "no usage for alice on the page"
    assert "<polyline" in html  # the rate sparkline
    assert ALICE not in html
    assert shot.exists() and shot.stat().st_size > 10_000


def test_the_snapshot_counts_open_websocket_connections(start_gateway):
    import asyncio

    import websockets

    gateway = start_gateway("""
apis:
  - name: echo
    type: WEBSOCKET
    routeSelectionExpression: $request.body.action
    webSocket: {managementAuthorization: NONE}
    stages: {live: {}}
    routes:
      - route: $default
        integration: {type: MOCK, requestTemplates: {"$default": '{"statusCode": 200}'}}
""")

    def connections() -> int:
        rows = [w for w in data(gateway)["websocket"] if (w["api"], w["stage"]) == ("echo", "live")]
        return rows[0]["connections"] if rows else 0

    async def hold() -> None:
        url = gateway.ws_url + "/live"
        async with websockets.connect(url, open_timeout=20), websockets.connect(url, open_timeout=20):
            # The workers publish the gauge each second: wait for both connections, off the event loop.
            await asyncio.to_thread(wait_until, lambda: connections() == 2, "2 open connections")
        await asyncio.to_thread(wait_until, lambda: connections() == 0, "the connections closed")

    asyncio.run(hold())
