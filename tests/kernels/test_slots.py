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

from .conftest import NO_EXTENSIONS

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


class ReferenceCounters:
    """The period counters as specified, without packing or a buffer: slot -> (period, count), absent
    until first written. A never-used counter starts at `initial` (AWS's quota offset); a counter of
    another period starts at 0; a refused acquire changes nothing."""

    def __init__(self) -> None:
        self.words: dict[int, tuple[int, int]] = {}

    def acquire(self, slot: int, period: int, limit: int, cost: int, initial: int) -> tuple[bool, int]:
        if slot not in self.words:
            base = initial
        else:
            seen, count = self.words[slot]
            base = count if seen == period else 0
        if limit >= 0 and base + cost > limit:
            return (False, base)
        self.words[slot] = (period, base + cost)
        return (True, base + cost)

    def release(self, slot: int, period: int, cost: int) -> None:
        if slot in self.words and self.words[slot][0] == period:
            self.words[slot] = (period, max(0, self.words[slot][1] - cost))

    def get(self, slot: int) -> tuple[int, int]:
        return self.words.get(slot, (0, 0))

    def set(self, slot: int, period: int, count: int) -> None:
        self.words[slot] = (period, count)

    def take(self, slot: int) -> tuple[int, int]:
        word = self.get(slot)
        if word[1]:
            self.words[slot] = (word[0], 0)
        return word


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["acq", "rel", "take", "set"]), st.integers(1, 3),
                              st.integers(0, 5), st.integers(-1, 8)), max_size=60))
def test_counters_match_the_reference(impl: ModuleType, ops: list[tuple[str, int, int, int]]) -> None:
    t, ref = impl.SlotTable(bytearray(64), 4), ReferenceCounters()
    for op, which, cost, limit in ops:
        s = t.find(which * 3 + 1)  # three idents in a 4-slot table, some colliding
        period = DAY + which
        if op == "acq":
            assert t.count_acquire(s, period, limit, cost, initial=1) == ref.acquire(s, period, limit, cost, 1)
        elif op == "rel":
            t.count_release(s, period, cost)
            ref.release(s, period, cost)
        elif op == "take":
            assert t.count_take(s) == ref.take(s)
        else:
            t.count_set(s, period, cost)
            ref.set(s, period, cost)
        assert t.count_get(s) == ref.get(s)


def test_builds_share_the_table_format() -> None:
    """A table written by one build reads the same in the other (the state file outlives a build)."""
    if NO_EXTENSIONS:
        pytest.skip("FASTGW_NO_EXTENSIONS is set: no compiled build to compare")
    from fastgw import _core, _py

    buf = bytearray(16 * 8)
    c, p = _core.SlotTable(buf, 8), _py.SlotTable(buf, 8)
    slot = c.find(12345)
    assert p.lookup(12345) == slot and p.find(777) == c.lookup(777)
    c.count_acquire(slot, DAY, 10, 3, initial=2)
    assert p.count_get(slot) == (DAY, 5)
    p.count_acquire(slot, DAY, 10, 1)
    assert c.count_get(slot) == (DAY, 6)


# ---------------------------------------------------------------- processes sharing one mmap


def _hammer(path: str, nslots: int, idents: list[int], tries: int, barrier: Any, out: Any) -> None:
    from fastgw import _core

    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 0)
        t = _core.SlotTable(mm, nslots)
        barrier.wait()  # every process starts together, inserting the same idents concurrently
        won: list[tuple[int, int]] = []
        for i in range(tries):
            ident = idents[i % len(idents)]
            allowed, count = t.count_acquire(t.find(ident), DAY, LIMIT)
            if allowed:
                won.append((ident, count))
        out.put(won)
        del t
        mm.close()


LIMIT = 20_000  # large enough that the processes run long enough to be scheduled together
PROCESSES = 4


def _race(path: Any, nslots: int, idents: list[int]) -> list[list[tuple[int, int]]]:
    """PROCESSES processes, each trying 3x what all counters admit together (so one that ran alone
    would take every count): the counts each won. Every child is ended, and must have exited 0."""
    path.write_bytes(bytes(16 * nslots))
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(PROCESSES), ctx.Queue()
    tries = 3 * LIMIT * len(idents)
    procs = [ctx.Process(target=_hammer, args=(str(path), nslots, idents, tries, barrier, out))
             for _ in range(PROCESSES)]
    try:
        for p in procs:
            p.start()
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0, f"a hammering process ended with {p.exitcode}"
        return results
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)


def test_processes_sharing_an_mmap_insert_and_count_exactly(tmp_path: Any) -> None:
    """The compiled table across processes (the pure-Python twin is not atomic: it is the build
    README tells multi-worker deployments not to use for limits). Every count of every counter is
    won by exactly one process, the idents are inserted once each, and the processes provably ran
    at the same time (each won some counts, which one running alone could not: it would take all)."""
    if NO_EXTENSIONS:
        pytest.skip("FASTGW_NO_EXTENSIONS is set: no compiled build")
    from fastgw import _core

    nslots, idents = 64, [1000 + k for k in range(5)]
    path = tmp_path / "slots"
    shares: list[int] = []
    for _ in range(8):
        results = _race(path, nslots, idents)
        for ident in idents:
            counts = sorted(count for won in results for i, count in won if i == ident)
            assert counts == list(range(1, LIMIT + 1)), f"ident {ident}: counts won {len(counts)}, duplicates " \
                f"{len(counts) - len(set(counts))}"
        with open(path, "r+b") as f:
            mm = mmap.mmap(f.fileno(), 0)
            t = _core.SlotTable(mm, nslots)
            assert t.occupied() == len(idents)
            assert [t.count_get(t.lookup(i)) for i in idents] == [(DAY, LIMIT)] * len(idents)
            del t
            mm.close()
        shares = [len(won) for won in results]
        if min(shares) > 0:  # every process won some: they overlapped
            return
    pytest.fail(f"the {PROCESSES} processes never overlapped in 8 tries (counts won: {shares}); the table's "
                "atomicity was not tested")


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


class ReferenceAdmit:
    """`admit` as specified: GCRA on each level in order (TAT per slot, absent = 0), then the quota
    counter; a refusal gives back one interval to every level that took one."""

    def __init__(self) -> None:
        self.tats: dict[int, int] = {}
        self.counters = ReferenceCounters()

    def admit(self, now: int, levels: tuple[tuple[int, int, int], ...], quota_slot: int, period: int,
              limit: int) -> tuple[int, int]:
        taken: list[tuple[int, int]] = []

        def refuse(index: int, retry: int) -> tuple[int, int]:
            for slot, interval in taken:
                self.tats[slot] = max(1, self.tats[slot] - interval)
            return (index, retry)

        for index, (slot, interval, tolerance) in enumerate(levels):
            if tolerance < 0:  # a zero rate or burst
                return refuse(index, SECOND)
            new_tat = max(self.tats.get(slot, 0), now) + interval
            if new_tat - now > tolerance:
                return refuse(index, new_tat - now - tolerance)
            self.tats[slot] = new_tat
            taken.append((slot, interval))
        allowed, count = self.counters.acquire(quota_slot, period, limit, 1, 0)
        return (-1, count) if allowed else refuse(len(levels), count)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 3 * SECOND), st.lists(st.tuples(st.integers(0, 3),
                                                                               st.sampled_from([0.5, 2.0, 10.0, 0.0]),
                                                                               st.integers(0, 4)),
                                                                     max_size=3),
                                st.integers(-1, 5)), max_size=40))
def test_admit_matches_the_reference(impl: ModuleType, steps: list) -> None:
    slots, _, buf = _chain(impl)
    ref = ReferenceAdmit()
    quota = slots.find(100)  # home slot 4: apart from the levels' slots 0-3
    assert quota == 4
    now = NOW
    for advance, specs, limit in steps:
        now += advance
        levels = _levels(specs)
        assert slots.admit(now, levels, quota, DAY, limit) == ref.admit(now, levels, quota, DAY, limit), levels
        tats = [struct.unpack_from("=q", buf, 8 * 8 + 8 * slot)[0] for slot in range(4)]  # the values area
        assert tats == [ref.tats.get(slot, 0) for slot in range(4)]
        assert slots.count_get(quota) == ref.counters.get(quota)
