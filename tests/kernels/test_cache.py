from __future__ import annotations

from collections import OrderedDict
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

OVERHEAD = 128


def test_entry_overhead_constant(impl: ModuleType) -> None:
    assert impl.LruTtlCache.ENTRY_OVERHEAD == OVERHEAD
    assert impl.LruTtlCache(10).ENTRY_OVERHEAD == OVERHEAD


def test_put_get_and_accounting(impl: ModuleType) -> None:
    c = impl.LruTtlCache(10_000)
    assert c.get("k", 0.0) is None
    assert c.put("k", b"value", 5, 10.0, 0.0) is True
    assert c.get("k", 1.0) == b"value"
    assert len(c) == 1
    assert c.bytes_used == 5 + 1 + OVERHEAD
    assert c.max_bytes == 10_000


def test_put_replaces(impl: ModuleType) -> None:
    c = impl.LruTtlCache(10_000)
    c.put("key", "old", 100, 10.0, 0.0)
    c.put("key", "new", 7, 10.0, 0.0)
    assert c.get("key", 0.0) == "new"
    assert len(c) == 1
    assert c.bytes_used == 7 + 3 + OVERHEAD


def test_ttl_expiry(impl: ModuleType) -> None:
    c = impl.LruTtlCache(10_000)
    c.put("a", 1, 0, 5.0, 100.0)
    assert c.get("a", 104.999) == 1
    assert c.get("a", 105.0) is None  # expires_at = now + ttl is already stale
    assert len(c) == 0 and c.bytes_used == 0
    assert c.put("b", 1, 0, 0.0, 0.0) is False  # ttl <= 0: nothing to keep
    assert c.put("b", 1, 0, -1.0, 0.0) is False
    assert len(c) == 0


def test_lru_eviction_and_get_refreshes(impl: ModuleType) -> None:
    size = 1 + OVERHEAD + 100
    c = impl.LruTtlCache(3 * size)
    for k in "abc":
        assert c.put(k, k, 100, 60.0, 0.0)
    assert c.bytes_used == 3 * size
    assert c.get("a", 1.0) == "a"  # now b is the least recently used
    assert c.put("d", "d", 100, 60.0, 1.0)
    assert c.get("b", 1.0) is None
    assert [c.get(k, 1.0) for k in "acd"] == ["a", "c", "d"]
    # A bigger entry evicts as many as needed, oldest first.
    assert c.put("e", "e", 100 + size, 60.0, 1.0)
    assert [c.get(k, 1.0) for k in "acde"] == [None, None, "d", "e"]
    assert c.bytes_used == 3 * size


def test_put_refreshes_recency(impl: ModuleType) -> None:
    size = 1 + OVERHEAD
    c = impl.LruTtlCache(2 * size)
    c.put("a", 1, 0, 60.0, 0.0)
    c.put("b", 2, 0, 60.0, 0.0)
    c.put("a", 3, 0, 60.0, 0.0)
    c.put("c", 4, 0, 60.0, 0.0)
    assert c.get("b", 0.0) is None and c.get("a", 0.0) == 3


def test_too_big(impl: ModuleType) -> None:
    c = impl.LruTtlCache(1000)
    assert c.put("x", 1, 1000 - OVERHEAD - 1, 60.0, 0.0) is True  # exactly the budget
    assert c.bytes_used == 1000
    assert c.put("y", 1, 1000 - OVERHEAD, 60.0, 0.0) is False  # one byte over on its own
    assert c.get("x", 0.0) == 1  # a refused put evicts nothing
    assert c.put("x", 2, 10_000, 60.0, 0.0) is False  # and drops the stale value of its key
    assert c.get("x", 0.0) is None and c.bytes_used == 0
    assert impl.LruTtlCache(0).put("a", 1, 0, 60.0, 0.0) is False


def test_str_and_bytes_keys_are_distinct(impl: ModuleType) -> None:
    c = impl.LruTtlCache(10_000)
    c.put("k", "str", 0, 60.0, 0.0)
    c.put(b"k", "bytes", 0, 60.0, 0.0)
    assert (c.get("k", 0.0), c.get(b"k", 0.0), len(c)) == ("str", "bytes", 2)
    c.put("é", 1, 0, 60.0, 0.0)
    assert c.bytes_used == 3 * (1 + OVERHEAD)  # len(key): characters for str


def test_delete_and_clear(impl: ModuleType) -> None:
    c = impl.LruTtlCache(10_000)
    c.put("a", 1, 10, 60.0, 0.0)
    c.put("b", 2, 10, 60.0, 0.0)
    assert c.delete("a") is True
    assert c.delete("a") is False
    assert len(c) == 1 and c.bytes_used == 10 + 1 + OVERHEAD
    c.clear()
    assert len(c) == 0 and c.bytes_used == 0 and c.get("b", 0.0) is None
    assert c.put("b", 3, 10, 60.0, 0.0) and c.get("b", 0.0) == 3  # usable after clear


def test_errors(impl: ModuleType) -> None:
    c = impl.LruTtlCache(100)
    for bad in (1, None, ("a",), bytearray(b"a")):
        with pytest.raises(TypeError):
            c.get(bad, 0.0)
        with pytest.raises(TypeError):
            c.put(bad, 1, 0, 1.0, 0.0)
        with pytest.raises(TypeError):
            c.delete(bad)
    with pytest.raises(ValueError):
        c.put("a", 1, -1, 1.0, 0.0)
    with pytest.raises(TypeError):
        c.put("a", 1, 1.5, 1.0, 0.0)
    with pytest.raises(ValueError):
        impl.LruTtlCache(-1)


def test_values_are_kept_by_reference(impl: ModuleType) -> None:
    c = impl.LruTtlCache(10_000)
    value: list[int] = []
    c.put("a", value, 0, 60.0, 0.0)
    assert c.get("a", 0.0) is value


class Payload:
    """A weak-referenceable value, to see when the cache lets go of it."""


def test_values_are_released(impl: ModuleType) -> None:
    import gc
    import weakref

    c = impl.LruTtlCache(2 * (1 + OVERHEAD))
    refs = []
    for key in ("a", "b", "c", "d", "e"):  # "a".."c" are evicted or replaced along the way
        value = Payload()
        refs.append(weakref.ref(value))
        c.put(key, value, 0, 5.0 if key != "d" else 1.0, 0.0)
        del value
    assert [r() is None for r in refs] == [True, True, True, False, False]
    assert c.get("d", 2.0) is None  # expired
    assert refs[3]() is None
    c.put("e", "replaced", 0, 5.0, 0.0)
    assert refs[4]() is None
    value = Payload()
    ref = weakref.ref(value)
    c.put("f", value, 0, 5.0, 0.0)
    del value
    c.clear()
    assert ref() is None
    value = Payload()
    ref = weakref.ref(value)
    c.put("g", value, 0, 5.0, 0.0)
    del value, c
    gc.collect()
    assert ref() is None


# ---------------------------------------------------------------- against a reference model


class Model:
    """The spec in the most literal form: OrderedDict from least to most recently used."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.data: OrderedDict[Any, tuple[Any, int, float]] = OrderedDict()

    def used(self) -> int:
        return sum(size for _, size, _ in self.data.values())

    def get(self, key: Any, now: float) -> Any:
        if key not in self.data:
            return None
        value, size, expires = self.data[key]
        if now >= expires:
            del self.data[key]
            return None
        self.data.move_to_end(key)
        return value

    def put(self, key: Any, value: Any, nbytes: int, ttl: float, now: float) -> bool:
        self.data.pop(key, None)
        size = nbytes + len(key) + OVERHEAD
        if size > self.max_bytes or ttl <= 0:
            return False
        self.data[key] = (value, size, now + ttl)
        while self.used() > self.max_bytes:
            self.data.popitem(last=False)
        return True

    def delete(self, key: Any) -> bool:
        return self.data.pop(key, None) is not None


keys = st.sampled_from(["a", "b", "dd", "eee", b"a", b"ff"])
# Time mostly stands still and most TTLs are long, so that entries live long enough to compete
# for the budget; clears and deletes are rare for the same reason.
steps = st.sampled_from([0.0, 0.0, 0.0, 0.5, 1.0, 2.5])
ttls = st.sampled_from([-1.0, 0.0, 0.5, 3.0, 50.0, 50.0, 50.0, 50.0])


@st.composite
def operation(draw: st.DrawFn) -> tuple:
    roll = draw(st.integers(0, 99))
    if roll < 40:
        return ("get", draw(keys), draw(steps))
    if roll < 85:
        return ("put", draw(keys), draw(st.integers(0, 400)), draw(ttls), draw(steps))
    if roll < 97:
        return ("delete", draw(keys))
    return ("clear",)


operations = st.lists(operation(), min_size=10, max_size=100)
# Budgets that hold two to six entries make the eviction order matter most often.
budgets = st.one_of(st.integers(0, 1500), st.sampled_from([300, 450, 600, 900, 1200]))


@settings(max_examples=400, deadline=None)
@given(budgets, operations)
def test_matches_reference_model(impl: ModuleType, max_bytes: int, ops: list[tuple]) -> None:
    cache, model = impl.LruTtlCache(max_bytes), Model(max_bytes)
    clock = 0.0
    for i, op in enumerate(ops):
        name = op[0]
        if name == "get":
            clock += op[2]  # time only moves forward
            assert cache.get(op[1], clock) == model.get(op[1], clock), (i, op)
        elif name == "put":
            clock += op[4]
            value = ("v", i)
            assert cache.put(op[1], value, op[2], op[3], clock) == model.put(op[1], value, op[2], op[3], clock)
        elif name == "delete":
            assert cache.delete(op[1]) == model.delete(op[1])
        else:
            cache.clear()
            model.data.clear()
        assert len(cache) == len(model.data)
        assert cache.bytes_used == model.used() <= max_bytes
    # Same survivors, with the same values (get in model order so both see the same recency changes).
    for key in list(model.data):
        assert cache.get(key, clock) == model.get(key, clock)
