from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

# ---------------------------------------------------------------- examples


def make(impl: ModuleType, *routes: tuple[str, str]) -> Any:
    router = impl.Router()
    for method, template in routes:
        router.add(method, template, f"{method} {template}")
    return router


def test_literal_param_greedy(impl: ModuleType) -> None:
    r = make(impl, ("GET", "/items/{id}"), ("GET", "/items/new"), ("GET", "/files/{path+}"), ("GET", "/"))
    assert r.match("GET", "/items/42") == (0, "GET /items/{id}", {"id": "42"})
    assert r.match("GET", "/items/new") == (0, "GET /items/new", {})
    assert r.match("GET", "/files/a/b/c.txt") == (0, "GET /files/{path+}", {"path": "a/b/c.txt"})
    assert r.match("GET", "/files/x") == (0, "GET /files/{path+}", {"path": "x"})
    assert r.match("GET", "/") == (0, "GET /", {})


def test_precedence_literal_param_greedy_at_each_segment(impl: ModuleType) -> None:
    r = make(impl, ("GET", "/a/{p+}"), ("GET", "/a/{x}"), ("GET", "/a/b"))
    assert r.match("GET", "/a/b")[1] == "GET /a/b"
    assert r.match("GET", "/a/c") == (0, "GET /a/{x}", {"x": "c"})
    assert r.match("GET", "/a/b/c") == (0, "GET /a/{p+}", {"p": "b/c"})


def test_backtracking(impl: ModuleType) -> None:
    r = make(impl, ("GET", "/a/b/c"), ("GET", "/a/{x}/d"), ("GET", "/{y}/{z+}"))
    # The literal branch /a/b dead-ends at "d", so the {x} branch is tried next.
    assert r.match("GET", "/a/b/d") == (0, "GET /a/{x}/d", {"x": "b"})
    assert r.match("GET", "/a/b/c") == (0, "GET /a/b/c", {})
    assert r.match("GET", "/a/b/e") == (0, "GET /{y}/{z+}", {"y": "a", "z": "b/e"})


def test_backtracking_restores_captures(impl: ModuleType) -> None:
    r = make(impl, ("GET", "/{a}/{b}/x"), ("GET", "/{c}/{d+}"))
    assert r.match("GET", "/1/2/y") == (0, "GET /{c}/{d+}", {"c": "1", "d": "2/y"})


def test_exact_method_beats_any(impl: ModuleType) -> None:
    r = make(impl, ("ANY", "/a"), ("GET", "/a"))
    assert r.match("GET", "/a")[1] == "GET /a"
    assert r.match("DELETE", "/a")[1] == "ANY /a"


def test_path_specificity_beats_method(impl: ModuleType) -> None:
    r = make(impl, ("ANY", "/a"), ("GET", "/{x}"))
    assert r.match("GET", "/a")[1] == "ANY /a"
    r = make(impl, ("POST", "/a"), ("GET", "/{x}"))
    assert r.match("GET", "/a") == (0, "GET /{x}", {"x": "a"})


def test_405_lists_methods_of_the_most_specific_path(impl: ModuleType) -> None:
    r = make(impl, ("POST", "/a/b"), ("GET", "/a/b"), ("PUT", "/a/{x}"))
    assert r.match("DELETE", "/a/b") == (1, ("GET", "POST"), None)
    assert r.match("DELETE", "/a/c") == (1, ("PUT",), None)
    assert r.match("PUT", "/a/b") == (0, "PUT /a/{x}", {"x": "b"})


def test_404(impl: ModuleType) -> None:
    r = make(impl, ("GET", "/a"))
    assert r.match("GET", "/b") == (2, None, None)
    assert r.match("GET", "/a/b") == (2, None, None)
    assert r.match("GET", "/") == (2, None, None)
    assert impl.Router().match("GET", "/") == (2, None, None)


def test_default_catches_404_and_405(impl: ModuleType) -> None:
    r = make(impl, ("GET", "/a"))
    r.set_default("dflt")
    assert r.match("GET", "/a")[1] == "GET /a"
    assert r.match("POST", "/a") == (0, "dflt", {})
    assert r.match("GET", "/zzz/y") == (0, "dflt", {})
    r2 = impl.Router()
    r2.set_default(None)  # a None target is still a target
    assert r2.match("GET", "/") == (0, None, {})


def test_trailing_slash_and_root(impl: ModuleType) -> None:
    r = make(impl, ("GET", "/a"), ("GET", "/b/"), ("GET", "/"), ("GET", "/f/{p+}"))
    assert r.match("GET", "/a/")[1] == "GET /a"
    assert r.match("GET", "/b")[1] == "GET /b/"
    assert r.match("GET", "/")[1] == "GET /"
    assert r.match("GET", "")[1] == "GET /"
    assert r.match("GET", "/f/x/y/") == (0, "GET /f/{p+}", {"p": "x/y"})
    with pytest.raises(ValueError, match="duplicate route"):
        r.add("GET", "/a/", "again")


def test_root_does_not_match_params_and_greedy_needs_a_segment(impl: ModuleType) -> None:
    r = make(impl, ("GET", "/{x}"), ("GET", "/f/{p+}"))
    assert r.match("GET", "/") == (2, None, None)
    r = make(impl, ("GET", "/f/{p+}"))
    assert r.match("GET", "/f") == (2, None, None)
    assert r.match("GET", "/f/") == (2, None, None)
    assert r.match("GET", "/f/x") == (0, "GET /f/{p+}", {"p": "x"})


def test_values_are_raw_and_case_sensitive(impl: ModuleType) -> None:
    r = make(impl, ("GET", "/Items/{id}"))
    assert r.match("GET", "/Items/a%2Fb%20c") == (0, "GET /Items/{id}", {"id": "a%2Fb%20c"})
    assert r.match("GET", "/items/1") == (2, None, None)
    assert r.match("get", "/Items/1") == (1, ("GET",), None)


def test_param_names_per_route(impl: ModuleType) -> None:
    r = make(impl, ("GET", "/u/{id}/x"), ("POST", "/u/{name}/x"), ("GET", "/u/{who}"))
    assert r.match("GET", "/u/7/x") == (0, "GET /u/{id}/x", {"id": "7"})
    assert r.match("POST", "/u/7/x") == (0, "POST /u/{name}/x", {"name": "7"})
    assert r.match("GET", "/u/7") == (0, "GET /u/{who}", {"who": "7"})
    with pytest.raises(ValueError, match="duplicate route"):
        r.add("GET", "/u/{other}", "x")


def test_params_dict_is_fresh(impl: ModuleType) -> None:
    r = make(impl, ("GET", "/{x}"))
    first = r.match("GET", "/1")[2]
    first["x"] = "changed"
    assert r.match("GET", "/1")[2] == {"x": "1"}


@pytest.mark.parametrize(
    "template",
    ["", "a", "items", "/a{b}", "/{a}b", "/{a}{b}", "/{a+}/b", "/{a}/{a}", "/{a}/{a+}", "/{}", "/{+}",
     "/{a b}", "/{a/b}", "/a//b", "//", "/{a", "/a}", "/{a+}x"],
)
def test_bad_templates(impl: ModuleType, template: str) -> None:
    with pytest.raises(ValueError):
        impl.Router().add("GET", template, "t")


@pytest.mark.parametrize("method", ["get", "", "G ET", "Get", "ANY ", "GET/"])
def test_bad_methods(impl: ModuleType, method: str) -> None:
    with pytest.raises(ValueError, match="invalid method"):
        impl.Router().add(method, "/a", "t")


def test_good_names_and_methods(impl: ModuleType) -> None:
    r = make(impl, ("M-SEARCH", "/{a.b-c_D9}/{rest+}"), ("ANY", "/x"))
    assert r.match("M-SEARCH", "/1/2/3")[2] == {"a.b-c_D9": "1", "rest": "2/3"}


def test_duplicate_message_names_both_routes(impl: ModuleType) -> None:
    r = make(impl, ("GET", "/a/{x}"))
    with pytest.raises(ValueError, match=r"duplicate route GET /a/\{y\}.*GET /a/\{x\}"):
        r.add("GET", "/a/{y}", "t")
    r.add("ANY", "/a/{y}", "ok: another method")


def test_routes_in_insertion_order(impl: ModuleType) -> None:
    r = impl.Router()
    r.add("GET", "/b", 1)
    r.add("ANY", "/a/{x}", 2)
    r.set_default(3)
    assert r.routes() == [("GET", "/b", 1), ("ANY", "/a/{x}", 2)]
    with pytest.raises(ValueError):
        r.add("GET", "/b", 4)
    assert len(r.routes()) == 2


def test_type_errors(impl: ModuleType) -> None:
    r = impl.Router()
    with pytest.raises(TypeError):
        r.match("GET", b"/a")
    with pytest.raises(TypeError):
        r.match(None, "/a")
    with pytest.raises(TypeError):
        r.add("GET", b"/a", 1)


# ---------------------------------------------------------------- brute-force reference
#
# AWS HTTP API rules, applied by enumerating every route: the most specific path wins, comparing
# segment by segment (literal > {param} > {greedy+}); among routes of that path an exact method
# beats ANY. A request that no route takes but whose path some route matches is a 405 listing the
# methods of the most specific such path.

RANK = {"lit": 0, "param": 1, "greedy": 2}


def ref_parse(template: str) -> list[tuple[str, str]]:
    body = template[1:].removesuffix("/")
    out = []
    for seg in body.split("/") if body else []:
        if seg.endswith("+}"):
            out.append(("greedy", seg[1:-2]))
        elif seg.startswith("{"):
            out.append(("param", seg[1:-1]))
        else:
            out.append(("lit", seg))
    return out


def ref_segments(path: str) -> list[str]:
    body = path[1:] if path.startswith("/") else path
    body = body.removesuffix("/")
    return body.split("/") if body else []


def ref_bind(shape: list[tuple[str, str]], segs: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for i, (kind, text) in enumerate(shape):
        if kind == "greedy":
            if i >= len(segs):
                return None
            params[text] = "/".join(segs[i:])
            return params
        if i >= len(segs):
            return None
        if kind == "lit" and segs[i] != text:
            return None
        if kind == "param":
            params[text] = segs[i]
    return params if len(shape) == len(segs) else None


def ref_match(routes: list[tuple[str, str, Any]], default: list[Any], method: str, path: str) -> tuple:
    segs = ref_segments(path)
    candidates = []
    for m, template, target in routes:
        shape = ref_parse(template)
        params = ref_bind(shape, segs)
        if params is not None:
            rank = tuple(RANK[kind] for kind, _ in shape)
            candidates.append((rank, m, target, params))
    usable = [c for c in candidates if c[1] in (method, "ANY")]
    if usable:
        rank, _, target, params = min(usable, key=lambda c: (c[0], c[1] == "ANY"))
        return (0, target, params)
    if default:
        return (0, default[0], {})
    if candidates:
        best = min(c[0] for c in candidates)
        return (1, tuple(sorted(c[1] for c in candidates if c[0] == best)), None)
    return (2, None, None)


def ref_shape_key(template: str) -> tuple:
    return tuple((kind, text if kind == "lit" else "") for kind, text in ref_parse(template))


LITERALS = ["a", "b", "c"]


@st.composite
def route_templates(draw: st.DrawFn) -> str:
    kinds = draw(st.lists(st.sampled_from(["lit", "lit", "param"]), max_size=4))
    segs = []
    for i, kind in enumerate(kinds):
        if kind == "lit":
            segs.append(draw(st.sampled_from(LITERALS)))
        else:
            segs.append("{" + draw(st.sampled_from(["x", "y"])) + str(i) + "}")
    if draw(st.booleans()) and draw(st.booleans()):
        segs.append("{" + draw(st.sampled_from(["rest", "tail"])) + "+}")
    trailing = "/" if segs and draw(st.integers(0, 4)) == 0 else ""
    return "/" + "/".join(segs) + trailing


route_sets = st.lists(st.tuples(st.sampled_from(["GET", "POST", "ANY"]), route_templates()), max_size=14)
paths = st.builds(
    lambda segs, slash: "/" + "/".join(segs) + ("/" if slash and segs else ""),
    st.lists(st.sampled_from([*LITERALS, "d"]), max_size=5),
    st.booleans(),
)
requests = st.lists(st.tuples(st.sampled_from(["GET", "POST", "PUT"]), paths), min_size=1, max_size=12)


@settings(max_examples=400, deadline=None)
@given(route_sets, requests, st.booleans())
def test_router_matches_brute_force_reference(
    impl: ModuleType, spec: list[tuple[str, str]], reqs: list[tuple[str, str]], with_default: bool
) -> None:
    router = impl.Router()
    routes: list[tuple[str, str, Any]] = []
    seen: set[tuple] = set()
    for i, (method, template) in enumerate(spec):
        key = (method, ref_shape_key(template))
        if key in seen:
            with pytest.raises(ValueError, match="duplicate route"):
                router.add(method, template, i)
            continue
        seen.add(key)
        router.add(method, template, i)
        routes.append((method, template, i))
    default = ["dflt"] if with_default else []
    if with_default:
        router.set_default("dflt")
    assert router.routes() == routes
    for method, path in reqs:
        assert router.match(method, path) == ref_match(routes, default, method, path), (method, path)


@settings(max_examples=150, deadline=None)
@given(route_sets, requests)
def test_compiled_and_twin_agree(spec: list[tuple[str, str]], reqs: list[tuple[str, str]]) -> None:
    import os

    if os.environ.get("FASTGW_NO_EXTENSIONS"):
        pytest.skip("FASTGW_NO_EXTENSIONS is set: no compiled build to compare")
    from fastgw import _core, _py

    routers = [_core.Router(), _py.Router()]
    for i, (method, template) in enumerate(spec):
        outcomes = []
        for router in routers:
            try:
                router.add(method, template, i)
                outcomes.append(None)
            except ValueError as exc:
                outcomes.append(str(exc))
        assert outcomes[0] == outcomes[1]
    for method, path in reqs:
        assert routers[0].match(method, path) == routers[1].match(method, path)
