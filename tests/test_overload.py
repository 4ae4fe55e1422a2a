"""Load shedding per worker (`server.overload`, RELIABILITY.md F-23): past the requests in flight or the
resident memory a worker may have, new requests are answered 503 + Retry-After before their body is
read, the admitted ones finish, nothing crashes, and requests are admitted again once the load drops.
Real `fastgw serve` processes; memory is read from /proc like an operator would."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from support.upstream import Action, RecordingUpstream
from support.waiting import metric, wait_for, wait_metric, wait_until
from test_upstream_limits import GatedUpstream

IN_FLIGHT = 4
SENT = 10
BODY = b"x" * (1 << 20)


def overload_config(slow: str, fast: str, overload: str, functions: str = "") -> str:
    return f"""
server:
  overload: {overload}
{functions}
apis:
  - name: shop
    type: HTTP
    stages: {{$default: {{}}}}
    routes:
      - route: POST /slow/{{id}}
        integration: {{type: HTTP_PROXY, uri: "http://{slow}/items/{{id}}"}}
      - route: GET /fast
        integration: {{type: HTTP_PROXY, uri: "http://{fast}/fast"}}
{HOLD_ROUTE if functions else ""}"""


HOLD_ROUTE = """
      - route: POST /hold
        integration: {type: FUNCTION, uri: hold, timeoutInMillis: 30000}
"""


def rss(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (or its peak, VmHWM) in bytes, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.reliability("F-23")
def test_f23_requests_past_the_in_flight_limit_are_shed_before_their_body_is_read(start_gateway):
    """4 requests may be in flight per worker: of 10 POSTs (1 MiB bodies) to an upstream that holds
    them, 6 are answered 503 + Retry-After at once (connection closed: their bodies are never read), the
    held 4 finish when the upstream answers, and the worker admits requests again."""
    slow = GatedUpstream().start()
    fast = RecordingUpstream(lambda request: Action(body=b"fast")).start()
    results: list[httpx.Response] = []
    try:
        gateway = start_gateway(overload_config(slow.address, fast.address,
                                                f"{{maxRequestsInFlight: {IN_FLIGHT}, retryAfterSeconds: 2}}"))
        pid = gateway.worker_pids()
        with ThreadPoolExecutor(SENT) as pool:
            def call(i: int) -> None:
                results.append(httpx.post(f"{gateway.url}/slow/{i}", content=BODY, timeout=30))

            futures = [pool.submit(call, i) for i in range(SENT)]
            shed = wait_until(lambda: len(results) >= SENT - IN_FLIGHT and results,
                              f"{SENT - IN_FLIGHT} answers while the upstream holds its requests", timeout=15)
            assert not slow.gate.is_set()
            for response in shed:
                assert response.status_code == 503
                assert response.headers["retry-after"] == "2"
                assert response.headers["connection"] == "close"
                assert response.json() == {"message": "Service Unavailable"}
            wait_for(lambda: len(slow.heads()) == IN_FLIGHT, 10, "the admitted requests at the upstream")
            # The limit is the worker's: any route is shed while it is reached.
            assert httpx.get(f"{gateway.url}/fast", timeout=10).status_code == 503
            slow.gate.set()
            for future in futures:
                future.result(30)
        assert sorted(r.status_code for r in results) == [200] * IN_FLIGHT + [503] * (SENT - IN_FLIGHT)
        # Recovery: the load is gone, requests are admitted again; the worker never restarted.
        assert httpx.get(f"{gateway.url}/fast", timeout=10).text == "fast"
        assert gateway.worker_pids() == pid
        wait_metric(gateway.admin, "fastgw_overload_shed_total", SENT - IN_FLIGHT + 1, reason="requests")
        assert len(slow.heads()) == IN_FLIGHT  # the shed requests never reached the upstream
    finally:
        slow.gate.set()
        slow.stop()
        fast.stop()


MIB = 1 << 20
LARGE = 8 * MIB
SENDERS = 12


@pytest.mark.reliability("F-23")
def test_f23_a_worker_past_its_memory_limit_sheds_new_requests_and_recovers(start_gateway, tmp_path: Path):
    """Requests whose 8 MiB bodies a function holds in memory arrive one after another: once the
    worker's resident memory passes maxRssBytes (its idle size + 48 MiB) the next ones are answered 503
    (counted as `memory`), the worker's peak stays within a few requests of the limit (without the
    guard all 12 are held), and once the held requests finish the memory is given back and requests are
    admitted again."""
    gate = tmp_path / "gate"
    gate.mkdir()
    fast = RecordingUpstream(lambda request: Action(body=b"fast")).start()
    functions = "functions:\n  hold: {handler: handlers.lambdas:hold, timeout: 30}"
    try:
        gateway = start_gateway(overload_config(fast.address, fast.address, "{maxRequestsInFlight: 64}", functions),
                                env={"FASTGW_TEST_GATE": str(gate), "PYTHONPATH": str(Path(__file__).parent)})
        [pid] = gateway.worker_pids()
        assert httpx.get(f"{gateway.url}/fast", timeout=10).status_code == 200
        limit = rss(pid) + 48 * MIB
        gateway.config_path.write_text(overload_config(
            fast.address, fast.address, f"{{maxRequestsInFlight: 64, maxRssBytes: {limit}}}", functions))
        assert httpx.post(f"{gateway.admin}/reload", timeout=20).status_code == 202
        wait_for(lambda: "reload" in gateway.stderr(), 10, "the reload")
        answers: list[httpx.Response] = []
        lock = threading.Lock()
        with ThreadPoolExecutor(SENDERS) as pool:
            def call() -> None:
                response = httpx.post(f"{gateway.url}/hold", content=b"x" * LARGE, timeout=40,
                                      headers={"content-type": "application/octet-stream"})
                with lock:
                    answers.append(response)

            futures = []
            for sent in range(1, SENDERS + 1):
                futures.append(pool.submit(call))
                # The next one goes once this one is held by the function (its body in memory), or refused.
                wait_for(lambda sent=sent: len(list(gate.glob("arrived-*"))) + len(answers) >= sent, 20,
                         f"request {sent} held or answered")
                if answers:
                    break
            refused = wait_until(lambda: [a for a in answers if a.status_code == 503], "a shed request")
            peak = rss(pid, "VmHWM")
            (gate / "open").touch()
            for future in futures:
                future.result(40)
        held = len(list(gate.glob("arrived-*")))
        assert refused[0].headers["retry-after"] == "1"
        assert refused[0].json() == {"message": "Service Unavailable"}
        assert held < SENDERS
        assert sorted(a.status_code for a in answers if a.status_code != 503) == [200] * held
        # Bounded: the limit plus what one sample period (250 ms) let in; 12 held bodies would be far more.
        assert peak < limit + 4 * 20 * MIB, f"peak {peak >> 20} MiB, limit {limit >> 20} MiB, {held} held"
        wait_metric(gateway.admin, "fastgw_overload_shed_total", 1, reason="memory")
        # Recovery: the held requests are gone and their memory given back.
        wait_for(lambda: httpx.get(f"{gateway.url}/fast", timeout=10).status_code == 200, 20, "admitted again")
        assert gateway.worker_pids() == [pid]
        assert metric(gateway.admin, "fastgw_overload_shed_total", reason="requests") == 0
        log = gateway.stderr()
        assert "past server.overload.maxRssBytes" in log and "admitting requests again" in log, log
    finally:
        (gate / "open").touch()
        fast.stop()
