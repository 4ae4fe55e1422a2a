"""Live reloads (SIGHUP, POST /reload, serve --watch, canary changes) swap the plan inside every worker:
no worker restarts, so no connection drops. Acceptance: 20 reloads while wrk runs give zero non-2xx
responses and zero socket errors; a broken file is refused with its errors and the old config serves."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
import time

import httpx
import pytest
from support.waiting import wait_for


def config(upstream: str, version: str) -> str:
    return f"""
apis:
  - name: live
    type: HTTP
    encodedSlashes: DECODE
    stages: {{$default: {{variables: {{version: {version}}}}}}}
    routes:
      - route: GET /items/{{id}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/${{stageVariables.version}}/{{id}}"}}
"""


def wrk_counts(output: str) -> tuple[int, int, int]:
    """(requests, non-2xx/3xx, socket errors) from wrk's report."""
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return requests, int(non_2xx.group(1)) if non_2xx else 0, sum(map(int, errors.groups())) if errors else 0


@pytest.mark.reliability("F-22")
def test_twenty_reloads_under_wrk_drop_nothing(start_gateway, upstream):
    assert shutil.which("wrk"), "wrk is missing: scripts/bootstrap.sh test installs it"
    gateway = start_gateway(config(upstream.address, "v0"), workers=2, args=("--no-access-log",))
    wrk = subprocess.Popen(["wrk", "-t2", "-c16", "-d25s", "--timeout", "5s", f"{gateway.url}/items/1"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: len(upstream.requests) >= 100, what="wrk's load to start")
        answers = []
        for i in range(1, 21):
            gateway.config_path.write_text(config(upstream.address, f"v{i}"))
            response = httpx.post(f"{gateway.admin}/reload", timeout=30)
            answers.append(response)
            assert response.status_code == 202, response.text
            assert response.json()["workers"] == 2  # both workers run generation i when it returns
            if i == 10:
                # A broken file: refused with its errors, the old config keeps serving.
                gateway.config_path.write_text(config(upstream.address, "v10").replace("HTTP_PROXY", "NOPE"))
                refused = httpx.post(f"{gateway.admin}/reload", timeout=30)
                assert refused.status_code == 400
                assert any("integration.type" in p for p in refused.json()["problems"])
                gateway.signal(signal.SIGHUP)  # the signal too: logged, nothing changes
                wait_for(lambda: "config reload rejected (SIGHUP)" in gateway.stderr(), what="the SIGHUP rejection")
            time.sleep(0.6)  # spreads the 20 reloads over wrk's 25 s: pacing, not a wait
        output, _ = wrk.communicate(timeout=60)
    finally:
        if wrk.poll() is None:
            wrk.kill()
    requests, non_2xx, socket_errors = wrk_counts(output)
    print(f"\nwrk during 20 reloads: {requests} requests, {non_2xx} non-2xx, {socket_errors} socket errors")
    assert requests > 1000, output
    assert (non_2xx, socket_errors) == (0, 0), output
    assert [a.json()["generation"] for a in answers] == list(range(1, 21))
    # Every worker runs the last generation; the upstream saw each version in turn.
    assert {httpx.get(f"{gateway.url}/items/9").json()["target"] for _ in range(20)} == {"/v20/9"}
    seen = {r.target.split("/")[1] for r in upstream.requests}
    assert {f"v{i}" for i in range(21)} <= seen
    assert "config reload rejected (POST /reload)" in gateway.stderr()


def test_watch_reloads_config_documents_and_handlers(tmp_path, start_gateway, upstream):
    handlers = tmp_path / "watched_handlers.py"
    handlers.write_text("def hello(event, context):\n    return {'statusCode': 200, 'body': 'one'}\n")
    text = config(upstream.address, "a") + """      - route: GET /hello
        integration: {type: FUNCTION, uri: hello}
functions: {hello: "watched_handlers:hello"}
"""
    gateway = start_gateway(text, workers=2, args=("--watch",), env={"PYTHONPATH": str(tmp_path)})

    def until(check, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.1)
        return False

    assert httpx.get(f"{gateway.url}/hello").text == "one"
    # The config file changes: reloaded.
    gateway.config_path.write_text(text.replace("version: a", "version: b"))
    assert until(lambda: all(httpx.get(f"{gateway.url}/items/2").json()["target"] == "/b/2" for _ in range(6)))
    # A broken file: logged, the old config keeps serving.
    gateway.config_path.write_text(text.replace("version: a", "version: c").replace("HTTP_PROXY", "NOPE"))
    assert until(lambda: "config reload rejected (--watch)" in gateway.stderr())
    assert httpx.get(f"{gateway.url}/items/2").json()["target"] == "/b/2"
    # The handler module changes: its new code runs.
    gateway.config_path.write_text(text.replace("version: a", "version: b"))
    assert until(lambda: gateway.stderr().count("config reload accepted (--watch)") == 2)
    handlers.write_text("def hello(event, context):\n    return {'statusCode': 200, 'body': 'two'}\n")
    assert until(lambda: all(httpx.get(f"{gateway.url}/hello").text == "two" for _ in range(6)))


@pytest.mark.reliability("F-22")
def test_requests_in_flight_finish_with_the_old_plan(start_gateway):
    from support.upstream import Action, RecordingUpstream

    slow = RecordingUpstream(lambda request: Action(delay=1.5, body=request.target.encode())).start()
    try:
        gateway = start_gateway(config(slow.address, "old"))
        result: dict[str, httpx.Response] = {}
        thread = threading.Thread(target=lambda: result.setdefault("r", httpx.get(f"{gateway.url}/items/1",
                                                                                   timeout=10)))
        thread.start()
        wait_for(lambda: len(slow.requests) == 1, what="the request to be in flight")
        gateway.config_path.write_text(config(slow.address, "new"))
        assert httpx.post(f"{gateway.admin}/reload", timeout=30).status_code == 202
        thread.join()
        assert result["r"].status_code == 200 and result["r"].content == b"/old/1"
        assert httpx.get(f"{gateway.url}/items/1", timeout=10).content == b"/new/1"
    finally:
        slow.stop()
