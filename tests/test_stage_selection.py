"""Stage selection and route matching as the worker remembers them (Gateway.stages_seen,
Gateway.routes_seen): the same answers as computing them every time, per host where API mappings make
the host matter, never a remembered error, long paths not kept, and nothing kept across a new plan."""

from __future__ import annotations

import pytest

from fastgw import pipeline
from fastgw.compile import load_plan
from fastgw.config.loader import parse_text
from fastgw.errors import GatewayError
from fastgw.pipeline import Gateway

CONFIG = """
apis:
  - name: orders
    stages: {live: {}, beta: {}}
    routes: [{route: "GET /x/{id}", integration: {type: HTTP_PROXY, uri: "http://127.0.0.1:9/{id}"}}]
  - name: users
    stages: {live2: {}}
    routes: [{route: "GET /x/{id}", integration: {type: HTTP_PROXY, uri: "http://127.0.0.1:9/u/{id}"}}]
apiMappings:
  - {domainName: a.example.com, basePath: v1, api: orders, stage: live}
  - {domainName: b.example.com, basePath: v1, api: users, stage: live2}
"""


def gateway(text: str = CONFIG) -> Gateway:
    return Gateway(load_plan(parse_text(text, "gateway.yaml")), None)


def names(result: tuple) -> tuple[str, str, str]:
    stage, path = result
    return stage.api.name, stage.name, path


def test_remembered_answers_equal_computed_ones_per_host() -> None:
    gw = gateway()
    for _ in range(2):  # the second round is answered from memory
        assert names(gw.select_stage("a.example.com", "/v1/x/1")) == ("orders", "live", "/x/1")
        assert names(gw.select_stage("b.example.com:443", "/v1/x/1")) == ("users", "live2", "/x/1")
        assert names(gw.select_stage("c.example.com", "/beta/x/./1")) == ("orders", "beta", "/x/1")
    for host, path in list(gw.stages_seen):
        assert gw.stages_seen[(host, path)] == gw._select_stage(host, path)


def test_errors_are_not_remembered_and_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    gw = gateway()
    for _ in range(2):
        with pytest.raises(GatewayError):
            gw.select_stage("a.example.com", "/v1/x/%zz")
    assert not gw.stages_seen
    monkeypatch.setattr(pipeline, "STAGES_SEEN_MAX", 3)
    for i in range(7):
        gw.select_stage("c.example.com", f"/live/x/{i}")
        assert len(gw.stages_seen) <= 3


def test_a_new_plan_forgets() -> None:
    gw = gateway()
    gw.select_stage("c.example.com", "/beta/x/1")
    new_plan = load_plan(parse_text(CONFIG.replace("beta: {}", "gamma: {}"), "gateway.yaml"))
    gw.stages_seen, gw.plan = {}, new_plan  # what swap() does to them (the rest of it needs a loop)
    with pytest.raises(GatewayError):
        gw.select_stage("c.example.com", "/beta/x/1")
    assert names(gw.select_stage("c.example.com", "/gamma/x/1")) == ("orders", "gamma", "/x/1")


def test_long_paths_are_not_remembered() -> None:
    gw = gateway()
    long_path = "/live/x/" + "a" * pipeline.SEEN_PATH_MAX
    stage, route_path = gw.select_stage("c.example.com", long_path)
    gw.match(stage, "GET", route_path)
    assert not gw.stages_seen and not gw.routes_seen


def test_remembered_routes_give_each_request_its_own_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    gw = gateway()
    stage, route_path = gw.select_stage("c.example.com", "/live/x/7")
    first_route, first = gw.match(stage, "GET", route_path)
    first["id"] = "tampered"  # a request's own dict: nothing another request sees
    route, params = gw.match(stage, "GET", route_path)
    assert route is first_route and params == {"id": "7"}
    assert (route, params) == stage.router.match("GET", route_path)[1:]
    for _ in range(2):  # 405s and 404s are answered every time, never remembered
        with pytest.raises(GatewayError):
            gw.match(stage, "POST", route_path)
        with pytest.raises(GatewayError):
            gw.match(stage, "GET", "/nowhere")
    assert list(gw.routes_seen) == [(stage, "GET", route_path)]
    monkeypatch.setattr(pipeline, "ROUTES_SEEN_MAX", 3)
    for i in range(7):
        gw.match(stage, "GET", f"/x/{i}")
        assert len(gw.routes_seen) <= 3
