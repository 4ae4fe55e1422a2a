"""SlotTable: the shared-state hash table and packed period counters, on both builds."""

from __future__ import annotations

import mmap
import multiprocessing
import struct
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .conftest import is_compiled

SECOND = 1_000_000_000
NOW = 1_700_000_000 * SECOND
DAY = 20_000  # a period number (days since the epoch)


def table(impl: ModuleType, nslots: int = 8, buf: Any = None) -> Any:
    return impl.SlotTable(buf if buf is not None else bytearray(16 * nslots), nslots)


def test_find_inserts_once_and_lookup_never_inserts(impl: ModuleType) -> None:
    t = table(impl)
    assert t.lookup(42) == -1
    slot = t.find(42)
    assert 0 <= slot < 8
    assert t.find(42) == slot and t.lookup(42) == slot
    assert t.occupied() == 1
    # Idents that collide on the same home slot probe linearly.
    other = t.find(42 + 8)
    assert other == (slot + 1) % 8
    assert t.lookup(42 + 16) == -1


def test_negative_idents_and_full_table(impl: ModuleType) -> None:
    t = table(impl, 4)
    idents = [-1, -(1 << 63), (1 << 63) - 1, 7]
    slots = [t.find(i) for i in idents]
    assert sorted(slots) == [0, 1, 2, 3]
    assert t.find(99) == -1 and t.lookup(99) == -1
    assert [t.find(i) for i in idents] == slots  # still found when full
    with pytest.raises(ValueError):
        t.find(0)


def test_layout_is_native_int64(impl: ModuleType) -> None:
    buf = bytearray(16 * 4)
    t = impl.SlotTable(buf, 4)
    slot = t.find(5)
    assert struct.unpack_from("=q", buf, 8 * slot)[0] == 5
    t.count_set(slot, DAY, 3)
    assert struct.unpack_from("=q", buf, 32 + 8 * slot)[0] == (DAY << 40) | 3


def test_counter_limit_and_period_reset(impl: ModuleType) -> None:
    t = table(impl)
    s = t.find(1)
    assert [t.count_acquire(s, DAY, 3) for _ in range(4)] == [(True, 1), (True, 2), (True, 3), (False, 3)]
    assert t.count_get(s) == (DAY, 3)
    # A new period starts from zero.
    assert t.count_acquire(s, DAY + 1, 3) == (True, 1)
    assert t.count_acquire(s, DAY + 1, 3, cost=3) == (False, 1)
    assert t.count_acquire(s, DAY + 1, 3, cost=2) == (True, 3)
    # Unlimited, and cost 0 peeks.
    assert t.count_acquire(s, DAY + 1, -1, cost=10) == (True, 13)
    assert t.count_acquire(s, DAY + 1, 13, cost=0) == (True, 13)


def test_initial_applies_only_to_a_never_used_counter(impl: ModuleType) -> None:
    t = table(impl)
    s = t.find(1)
    assert t.count_get(s) == (0, 0)
    assert t.count_acquire(s, DAY, 10, initial=8) == (True, 9)  # AWS quota offset
    assert t.count_acquire(s, DAY, 10, initial=8) == (True, 10)
    assert t.count_acquire(s, DAY, 10, initial=8) == (False, 10)
    assert t.count_acquire(s, DAY + 1, 10, initial=8) == (True, 1)


def test_release_take_and_set(impl: ModuleType) -> None:
    t = table(impl)
    s = t.find(1)
    t.count_acquire(s, DAY, -1, cost=5)
    t.count_release(s, DAY, 2)
    assert t.count_get(s) == (DAY, 3)
    t.count_release(s, DAY - 1, 2)  # another period: nothing to give back
    assert t.count_get(s) == (DAY, 3)
    t.count_release(s, DAY, 10)
    assert t.count_get(s) == (DAY, 0)
    t.count_set(s, DAY, 7)
    assert t.count_take(s) == (DAY, 7)
    assert t.count_get(s) == (DAY, 0)
    assert t.count_take(s) == (DAY, 0)
    with pytest.raises(ValueError):
        t.count_set(s, 0, 1)
    with pytest.raises(ValueError):
        t.count_acquire(s, 1 << 23, 1)
    with pytest.raises(IndexError):
        t.count_get(8)


def test_gcra_refund_undoes_exactly_one_acquire(impl: ModuleType) -> None:
    buf = bytearray(16 * 4)
    slots = impl.SlotTable(buf, 4)
    gcra = impl.GcraTable(memoryview(buf)[32:], 4)
    s = slots.find(9)
    for _ in range(3):
        assert gcra.acquire(s, NOW, 3.0, 3)[0]
    assert not gcra.acquire(s, NOW, 3.0, 3)[0]
    slots.gcra_refund(s, 3.0)
    assert gcra.acquire(s, NOW, 3.0, 3) == (True, 0, 0)
    slots.gcra_refund(s, 3.0, 2)
    assert gcra.acquire(s, NOW, 3.0, 3, 2) == (True, 0, 0)
    # Refunding an unused slot leaves it unused.
    slots.gcra_refund(slots.find(10), 3.0)
    assert slots.count_get(slots.find(10)) == (0, 0)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["acq", "rel", "take", "set"]), st.integers(1, 3),
                              st.integers(0, 5), st.integers(-1, 8)), max_size=60))
def test_compiled_matches_reference(impl: ModuleType, ops: list[tuple[str, int, int, int]]) -> None:
    if not is_compiled(impl):
        return
    from fastgw import _py

    tables = [impl.SlotTable(bytearray(64), 4), _py.SlotTable(bytearray(64), 4)]
    for op, period, cost, limit in ops:
        results = []
        for t in tables:
            s = t.find(period * 3 + 1)
            if op == "acq":
                results.append(t.count_acquire(s, DAY + period, limit, cost, initial=1))
            elif op == "rel":
                results.append(t.count_release(s, DAY + period, cost))
            elif op == "take":
                results.append(t.count_take(s))
            else:
                results.append(t.count_set(s, DAY + period, cost))
            results.append(t.count_get(s))
        assert results[: len(results) // 2] == results[len(results) // 2:]


def _hammer(path: str, nslots: int, ident: int, tries: int, queue: Any) -> None:
    from fastgw import _core

    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 0)
        t = _core.SlotTable(mm, nslots)
        won = 0
        for i in range(tries):
            s = t.find(ident + (i % 5))  # 5 idents, inserted concurrently by every process
            if t.count_acquire(s, DAY, 100)[0]:
                won += 1
        queue.put(won)
        del t
        mm.close()


def test_processes_sharing_an_mmap_insert_and_count_exactly(impl: ModuleType, tmp_path: Any) -> None:
    if not is_compiled(impl):
        pytest.skip("only the compiled build is atomic across processes")
    nslots = 64
    path = tmp_path / "slots"
    path.write_bytes(bytes(16 * nslots))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(str(path), nslots, 1000, 400, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    won = sum(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(10)
    # 5 counters with a limit of 100 each: exactly 500 admitted out of 1600 tries, 5 slots used.
    assert won == 500
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 0)
        t = impl.SlotTable(mm, nslots)
        assert t.occupied() == 5
        assert sorted(t.count_get(t.lookup(1000 + k))[1] for k in range(5)) == [100] * 5
        del t
        mm.close()


def _chain(impl: ModuleType, nslots: int = 8) -> tuple[Any, Any, bytearray]:
    buf = bytearray(16 * nslots)
    return impl.SlotTable(buf, nslots), impl.GcraTable(memoryview(buf)[8 * nslots:], nslots), buf


def _levels(specs: list[tuple[int, float, int]]) -> tuple[tuple[int, int, int], ...]:
    from fastgw.policies.usage.plan import gcra_params

    return tuple((slot, *gcra_params(rate, burst)) for slot, rate, burst in specs)


def test_admit_is_the_chain_of_acquires_with_refunds(impl: ModuleType) -> None:
    slots, gcra, _ = _chain(impl)
    levels = _levels([(0, 1.0, 5), (1, 1.0, 3), (2, 1.0, 2)])
    assert slots.admit(NOW, levels) == (-1, 0)
    assert slots.admit(NOW, levels) == (-1, 0)
    # The third level is spent: refused there, and the first two get their tokens back.
    assert slots.admit(NOW, levels) == (2, SECOND)
    assert gcra.acquire(0, NOW, 1.0, 5, 0) == (True, 0, 3)  # 2 taken of 5, not 3
    assert gcra.acquire(1, NOW, 1.0, 3, 0) == (True, 0, 1)
    # A zero rate refuses at once, taking nothing.
    assert slots.admit(NOW, _levels([(3, 1.0, 5), (4, 0.0, 5)])) == (1, SECOND)
    assert gcra.acquire(3, NOW, 1.0, 5, 0) == (True, 0, 5)


def test_admit_counts_quota_last_and_refunds_on_quota(impl: ModuleType) -> None:
    slots, gcra, _ = _chain(impl)
    q = slots.find(77)
    levels = _levels([(0, 1.0, 10)])
    assert slots.admit(NOW, levels, q, DAY, 2) == (-1, 1)
    assert slots.admit(NOW, levels, q, DAY, 2) == (-1, 2)
    assert slots.admit(NOW, levels, q, DAY, 2) == (1, 2)  # quota refused: index len(levels)
    assert gcra.acquire(0, NOW, 1.0, 10, 0) == (True, 0, 8)  # the refused request was refunded
    assert slots.admit(NOW, (), q, DAY + 1, 2, initial=1) == (-1, 1)  # a new period; initial only when unused
    # Throttled requests never reach the quota.
    tight = _levels([(1, 1.0, 1)])
    q2 = slots.find(78)
    assert slots.admit(NOW, tight, q2, DAY, 10) == (-1, 1)
    assert slots.admit(NOW, tight, q2, DAY, 10) == (0, SECOND)
    assert slots.count_get(q2) == (DAY, 1)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 3 * SECOND), st.lists(st.tuples(st.integers(0, 3),
                                                                               st.sampled_from([0.5, 2.0, 10.0]),
                                                                               st.integers(0, 4)),
                                                                     max_size=3),
                                st.integers(-1, 5)), max_size=40))
def test_admit_compiled_matches_reference(impl: ModuleType, steps: list) -> None:
    if not is_compiled(impl):
        return
    from fastgw import _py

    pair = [_chain(impl), _chain(_py)]
    now = NOW
    for advance, specs, limit in steps:
        now += advance
        levels = _levels(specs)
        results = [s.admit(now, levels, s.find(99), DAY, limit) for s, _, _ in pair]
        assert results[0] == results[1]
        assert pair[0][2] == pair[1][2]  # same bytes in both tables
