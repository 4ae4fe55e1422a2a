from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st


def test_names_and_render(impl: ModuleType) -> None:
    t = impl.Template("http://${stageVariables.backend}/items/{id}")
    assert t.names == ("stageVariables.backend", "id")
    assert t.render({"stageVariables.backend": "up:8080", "id": "42"}) == "http://up:8080/items/42"


def test_greedy_name_and_repeats(impl: ModuleType) -> None:
    t = impl.Template("/{proxy+}/{id}/{proxy}")
    assert t.names == ("proxy", "id")
    assert t.render({"proxy": "a/b", "id": 1}) == "/a/b/1/a/b"


def test_values_verbatim(impl: ModuleType) -> None:
    t = impl.Template("/x/{v}")
    assert t.render({"v": "a b/c?d=%2F&{x}"}) == "/x/a b/c?d=%2F&{x}"
    assert t.render({"v": 3.5}) == "/x/3.5"
    assert t.render({"v": None}) == "/x/None"


def test_every_string_kind(impl: ModuleType) -> None:
    """ASCII, Latin-1, BMP and astral text mixed in literals and values (one result buffer)."""
    t = impl.Template("é/{a}/中/{b}/😀{c}")
    for values in ({"a": "x", "b": "y", "c": "z"}, {"a": "ü", "b": "中文", "c": "🎉"}, {"a": "", "b": "", "c": ""}):
        assert t.render(values) == f"é/{values['a']}/中/{values['b']}/😀{values['c']}"
    ascii_only = impl.Template("/{a}/{b}")
    assert ascii_only.render({"a": "ÿ", "b": "𝄞"}) == "/ÿ/𝄞"


class Text(str):
    pass


def test_str_subclasses_and_many_placeholders(impl: ModuleType) -> None:
    t = impl.Template("/{a}/{b}")
    assert t.render({"a": Text("sub"), "b": 2}) == "/sub/2"
    names = [f"n{i}" for i in range(40)]
    many = impl.Template("".join("{" + n + "}," for n in names))
    values = {n: str(i) for i, n in enumerate(names)}
    assert many.render(values) == "".join(f"{i}," for i in range(40))
    with pytest.raises(KeyError) as info:
        many.render({k: v for k, v in values.items() if k != "n39"})
    assert info.value.args == ("n39",)


def test_value_error_types_propagate(impl: ModuleType) -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    with pytest.raises(RuntimeError):
        impl.Template("/{a}/{b}").render({"a": "ok", "b": Broken()})


def test_no_placeholders(impl: ModuleType) -> None:
    for text in ("", "/plain", "$ and $$ but no brace"):
        t = impl.Template(text)
        assert t.names == ()
        assert t.render({}) == text
        assert t.partial({"x": 1}).render({}) == text


def test_dollar_forms(impl: ModuleType) -> None:
    t = impl.Template("$${a}x$b{c}$")
    assert t.names == ("a", "c")
    assert t.render({"a": "1", "c": "2"}) == "$1x$b2$"


def test_missing_value_is_keyerror_with_the_name(impl: ModuleType) -> None:
    t = impl.Template("/{a}/${b.c}")
    with pytest.raises(KeyError) as info:
        t.render({"a": "1"})
    assert info.value.args == ("b.c",)


class Lookup(Mapping[str, str]):
    """A non-dict mapping, to exercise the generic lookup path."""

    def __init__(self, data: dict[str, str]) -> None:
        self.data = data

    def __getitem__(self, key: str) -> str:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def test_any_mapping(impl: ModuleType) -> None:
    t = impl.Template("/{a}/{b}")
    assert t.render(Lookup({"a": "1", "b": "2"})) == "/1/2"
    with pytest.raises(KeyError) as info:
        t.render(Lookup({"a": "1"}))
    assert info.value.args == ("b",)
    assert t.partial(Lookup({"b": "2"})).render({"a": "1"}) == "/1/2"


def test_partial(impl: ModuleType) -> None:
    t = impl.Template("http://${stageVariables.host}/v1/{id}/${stageVariables.host}")
    p = t.partial({"stageVariables.host": "h:1", "unused": "x"})
    assert isinstance(p, impl.Template)
    assert p.names == ("id",)
    assert p.render({"id": "7"}) == "http://h:1/v1/7/h:1"
    assert t.names == ("stageVariables.host", "id")  # the original is untouched
    assert p.partial({"id": 9}).render({}) == "http://h:1/v1/9/h:1"


def test_partial_values_are_not_reparsed(impl: ModuleType) -> None:
    p = impl.Template("/{a}/{b}").partial({"a": "{b}}{"})
    assert p.names == ("b",)
    assert p.render({"b": "2"}) == "/{b}}{/2"


def test_source_and_repr(impl: ModuleType) -> None:
    t = impl.Template("/a/${x.y}/{p+}")
    assert t.source == "/a/${x.y}/{p+}"
    assert repr(t) == "Template('/a/${x.y}/{p+}')"
    assert t.partial({"x.y": "Q"}).source == "/a/Q/{p+}"


@pytest.mark.parametrize(
    ("text", "column"),
    [("ab}c", 3), ("{ab", 1), ("a{b{c}", 2), ("/x/{a}}", 7), ("${a", 2), ("{a}{", 4), ("}", 1)],
)
def test_unbalanced_braces_report_the_column(impl: ModuleType, text: str, column: int) -> None:
    with pytest.raises(ValueError, match=rf"unbalanced .* at column {column}\b"):
        impl.Template(text)


@pytest.mark.parametrize("text", ["{}", "{+}", "${}", "${a+}", "{a b}", "{a/b}", "/{é}", "{a++}"])
def test_bad_names(impl: ModuleType, text: str) -> None:
    with pytest.raises(ValueError, match="invalid placeholder name"):
        impl.Template(text)


def test_type_errors(impl: ModuleType) -> None:
    with pytest.raises(TypeError):
        impl.Template(b"/{a}")


# ---------------------------------------------------------------- property: against plain string building

NAMES = ["a", "b", "x.y", "stageVariables.host"]
# A literal ending in "$" would fuse with a following "{name}" into "${name}" (see test_dollar_forms).
literal_text = st.text(alphabet="ab/$?=:. ", max_size=6).filter(lambda s: not s.endswith("$"))
piece = st.one_of(
    literal_text.map(lambda s: ("lit", s)),
    st.tuples(st.sampled_from(["{}", "{}+", "${}"]), st.sampled_from(NAMES)),
)


def build(pieces: list[tuple[str, str]]) -> str:
    out = []
    for kind, text in pieces:
        if kind == "lit":
            out.append(text)
        elif kind == "{}":
            out.append("{" + text + "}")
        elif kind == "{}+":
            out.append("{" + text + "+}")
        else:
            out.append("${" + text + "}")
    return "".join(out)


def expected(pieces: list[tuple[str, str]], values: dict[str, str]) -> str:
    return "".join(text if kind == "lit" else values[text] for kind, text in pieces)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(piece, max_size=8),
    st.fixed_dictionaries({n: st.text(alphabet="xyz{}$/", max_size=4) for n in NAMES}),
    st.sets(st.sampled_from(NAMES)),
)
def test_render_and_partial_match_string_building(
    impl: ModuleType, pieces: list[tuple[str, str]], values: dict[str, str], early: set[str]
) -> None:
    t = impl.Template(build(pieces))
    used = [text for kind, text in pieces if kind != "lit"]
    assert t.names == tuple(dict.fromkeys(used))
    assert t.render(values) == expected(pieces, values)
    p = t.partial({k: values[k] for k in early})
    assert p.names == tuple(n for n in t.names if n not in early)
    assert p.render({k: v for k, v in values.items() if k not in early}) == expected(pieces, values)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab{}$+", max_size=10))
def test_builds_agree_on_arbitrary_text(text: str) -> None:
    """Both builds accept the same texts, give the same names, or fail at the same column."""
    import os

    if os.environ.get("FASTGW_NO_EXTENSIONS"):
        pytest.skip("FASTGW_NO_EXTENSIONS is set: no compiled build to compare")
    from fastgw import _core, _py

    outcomes = []
    for mod in (_core, _py):
        try:
            t = mod.Template(text)
            outcomes.append(("ok", t.names, t.render(dict.fromkeys(t.names, "V"))))
        except ValueError as exc:
            outcomes.append(("error", re.sub(r"\s+", " ", str(exc))))
    assert outcomes[0] == outcomes[1]


def test_names_are_shared_with_router_params(impl: ModuleType) -> None:
    """Route parameter names and placeholder names are interned: render(params) looks up by identity."""
    router = impl.Router()
    router.add("GET", "/items/{item.id}/{rest+}", "t")
    params = router.match("GET", "/items/7/a/b")[2]
    template = impl.Template("http://up/{item.id}/{rest+}")
    assert [k for k in params] == list(template.names)
    assert all(a is b for a, b in zip(params, template.names, strict=True))
    assert template.render(params) == "http://up/7/a/b"
