from __future__ import annotations

import math
import mmap
import multiprocessing
import os
import struct
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

SECOND = 1_000_000_000
NOW = 1_700_000_000 * SECOND  # a time.time_ns()-sized clock


def table(impl: ModuleType, nslots: int = 4) -> Any:
    return impl.GcraTable(bytearray(8 * nslots), nslots)


def test_burst_then_denied(impl: ModuleType) -> None:
    t = table(impl)
    results = [t.acquire(0, NOW, 10.0, 5) for _ in range(7)]
    assert results[:5] == [(True, 0, 4), (True, 0, 3), (True, 0, 2), (True, 0, 1), (True, 0, 0)]
    # The 6th would need the TAT one interval (100 ms) further than the burst allows.
    assert results[5] == (False, 100_000_000, 0)
    assert results[6] == results[5]  # a denial stores nothing


def test_refill(impl: ModuleType) -> None:
    t = table(impl)
    for _ in range(3):
        assert t.acquire(1, NOW, 2.0, 3)[0]
    assert t.acquire(1, NOW, 2.0, 3) == (False, SECOND // 2, 0)
    assert t.acquire(1, NOW + SECOND // 2 - 1, 2.0, 3) == (False, 1, 0)
    assert t.acquire(1, NOW + SECOND // 2, 2.0, 3) == (True, 0, 0)
    # Idle long enough and the whole burst is back (the TAT never lags behind now).
    assert t.acquire(1, NOW + 100 * SECOND, 2.0, 3) == (True, 0, 2)


def test_cost(impl: ModuleType) -> None:
    t = table(impl)
    assert t.acquire(0, NOW, 1.0, 10, 4) == (True, 0, 6)
    assert t.acquire(0, NOW, 1.0, 10, 7) == (False, SECOND, 0)
    assert t.acquire(0, NOW, 1.0, 10, 0) == (True, 0, 6)  # cost 0 peeks
    assert t.acquire(0, NOW, 1.0, 10, 6) == (True, 0, 0)
    assert t.acquire(2, NOW, 1.0, 3, 4) == (False, SECOND, 0)  # more than the burst: never


def test_tat_is_native_int64_in_the_buffer(impl: ModuleType) -> None:
    buf = bytearray(32)
    t = impl.GcraTable(buf, 4)
    t.acquire(2, NOW, 4.0, 10)
    assert struct.unpack_from("=q", buf, 16)[0] == NOW + SECOND // 4
    assert bytes(buf[:16]) == bytes(16) and bytes(buf[24:]) == bytes(8)
    t.reset(2)
    assert buf == bytearray(32)


def test_slots_are_independent_and_reset(impl: ModuleType) -> None:
    t = table(impl)
    assert t.acquire(0, NOW, 1.0, 1)[0]
    assert not t.acquire(0, NOW, 1.0, 1)[0]
    assert t.acquire(3, NOW, 1.0, 1)[0]
    t.reset(0)
    assert t.acquire(0, NOW, 1.0, 1) == (True, 0, 0)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 5), (-1.0, 5), (5.0, 0), (5.0, -3), (math.nan, 5)])
def test_zero_rate_or_burst_always_denies(impl: ModuleType, rate: float, burst: int) -> None:
    t = table(impl)
    assert t.acquire(0, NOW, rate, burst) == (False, SECOND, 0)
    assert t.acquire(0, NOW + 10 * SECOND, rate, burst) == (False, SECOND, 0)


def test_extreme_rates_do_not_overflow(impl: ModuleType) -> None:
    t = table(impl)
    assert t.acquire(0, NOW, 1e-30, 2**62) == (True, 0, 0)  # spans clamp to 2**60 ns
    assert not t.acquire(0, NOW, 1e-30, 2**62)[0]
    assert t.acquire(1, NOW, math.inf, 3) == (True, 0, 2)  # T is at least 1 ns
    assert t.acquire(1, NOW, 1e12, 3) == (True, 0, 1)


def test_errors(impl: ModuleType) -> None:
    t = table(impl, 2)
    with pytest.raises(IndexError):
        t.acquire(2, NOW, 1.0, 1)
    with pytest.raises(IndexError):
        t.acquire(-1, NOW, 1.0, 1)
    with pytest.raises(IndexError):
        t.reset(2)
    with pytest.raises(ValueError, match="cost"):
        t.acquire(0, NOW, 1.0, 1, -1)
    with pytest.raises(TypeError):
        t.acquire(0, NOW, 1.0, 1.5)
    with pytest.raises(TypeError):
        t.acquire(0, float(NOW), 1.0, 1)
    with pytest.raises(TypeError):
        t.acquire(0, NOW, "5", 1)
    with pytest.raises(ValueError, match="too small"):
        impl.GcraTable(bytearray(15), 2)
    with pytest.raises(ValueError):
        impl.GcraTable(bytearray(16), -1)
    with pytest.raises(BufferError):
        impl.GcraTable(b"\0" * 16, 2)
    with pytest.raises(TypeError):
        impl.GcraTable(16, 2)
    assert t.nslots == 2
    assert impl.GcraTable(bytearray(), 0).nslots == 0


def test_mmap_backed(impl: ModuleType) -> None:
    mm = mmap.mmap(-1, 8 * 16)
    t = impl.GcraTable(mm, 16)
    assert [t.acquire(15, NOW, 1.0, 2)[0] for _ in range(3)] == [True, True, False]
    assert struct.unpack_from("=q", mm, 8 * 15)[0] == NOW + 2 * SECOND
    del t  # releases the buffer export, so the mmap can close
    mm.close()


def test_builds_share_the_buffer_format() -> None:
    if os.environ.get("FASTGW_NO_EXTENSIONS"):
        pytest.skip("FASTGW_NO_EXTENSIONS is set: no compiled build to compare")
    from fastgw import _core, _py

    buf = bytearray(8)
    c, p = _core.GcraTable(buf, 1), _py.GcraTable(buf, 1)
    assert c.acquire(0, NOW, 1.0, 3) == (True, 0, 2)
    assert p.acquire(0, NOW, 1.0, 3) == (True, 0, 1)
    assert c.acquire(0, NOW, 1.0, 3) == (True, 0, 0)
    assert p.acquire(0, NOW, 1.0, 3) == (False, SECOND, 0)


# ---------------------------------------------------------------- two processes, one mmap


def _hammer(mm: mmap.mmap, barrier: Any, out: Any, attempts: int, burst: int) -> None:
    from fastgw import _core

    t = _core.GcraTable(mm, 1)
    barrier.wait()
    admitted = sum(1 for _ in range(attempts) if t.acquire(0, NOW, 1000.0, burst)[0])
    out.put(admitted)


def _race(burst: int) -> tuple[list[int], int]:
    ctx = multiprocessing.get_context("fork")
    mm = mmap.mmap(-1, 8)  # anonymous and MAP_SHARED: the children write the parent's pages
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(mm, barrier, out, 3 * burst, burst)) for _ in range(2)]
    try:
        for p in procs:
            p.start()
        counts = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0, f"a hammering process ended with {p.exitcode}"
        return counts, struct.unpack_from("=q", mm, 0)[0]
    finally:  # a hung or failed child never outlives the test
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)


def test_two_processes_share_one_mmap_table() -> None:
    """The compiled table (the pure-Python twin is not atomic across processes; README says so)."""
    if os.environ.get("FASTGW_NO_EXTENSIONS"):
        pytest.skip("FASTGW_NO_EXTENSIONS is set: no compiled build")
    burst = 20_000
    counts: list[int] = []
    for _ in range(8):
        counts, tat = _race(burst)
        assert sum(counts) == burst, counts
        assert tat == NOW + burst * (SECOND // 1000)
        if min(counts) > 0:  # both got a share, so they really ran at the same time
            return
    pytest.fail(f"the two processes never overlapped in 8 tries ({counts}): the table's atomicity was not tested")


# ---------------------------------------------------------------- against real-valued GCRA


class FloatGcra:
    """GCRA exactly as specified, in floats: T = 1e9/rate, capacity burst."""

    def __init__(self) -> None:
        self.tat = 0.0

    def acquire(self, now: float, rate: float, burst: int, cost: int) -> tuple[bool, float, float]:
        interval = 1e9 / rate
        new_tat = max(self.tat, now) + interval * cost
        limit = burst * interval
        if new_tat - now <= limit:
            self.tat = new_tat
            return (True, 0.0, math.floor((limit - (new_tat - now)) / interval))
        return (False, (new_tat - now) - limit, 0)


# (time step ns, cost); many zero or small steps so that the burst runs out and denials happen too.
time_steps = st.one_of(st.just(0), st.integers(0, 10**7), st.integers(0, 3 * SECOND))
ops = st.lists(
    st.tuples(time_steps, st.integers(0, 4)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([1, 2, 4, 5, 8, 10, 16, 50, 100, 1000, 10**6]), st.integers(1, 20), ops)
def test_exact_when_the_interval_is_whole_nanoseconds(
    impl: ModuleType, rate: int, burst: int, steps: list[tuple[int, int]]
) -> None:
    t, ref = table(impl, 1), FloatGcra()
    now = 10**12  # keep every float exact (< 2**53)
    for dt, cost in steps:
        now += dt
        assert t.acquire(0, now, float(rate), burst, cost) == ref.acquire(now, rate, burst, cost)


@settings(max_examples=300, deadline=None)
@given(st.floats(0.3, 1e6), st.integers(1, 50), ops)
def test_close_to_real_valued_gcra(impl: ModuleType, rate: float, burst: int, steps: list[tuple[int, int]]) -> None:
    """T is rounded down to whole ns, so TATs drift from the real-valued ones by < 1 ns per unit of
    cost admitted. Away from that margin the decisions must agree; near it the runs may part."""
    t, ref = table(impl, 1), FloatGcra()
    now = 10**12
    drift = burst + 2  # the tolerance itself differs by < burst ns
    for dt, cost in steps:
        now += dt
        allowed, retry, remaining = t.acquire(0, now, rate, burst, cost)
        new_tat = max(ref.tat, now) + 1e9 / rate * cost
        margin = (new_tat - now) - burst * 1e9 / rate
        if abs(margin) <= drift:
            return
        r_allowed, r_retry, r_remaining = ref.acquire(now, rate, burst, cost)
        assert allowed == r_allowed
        assert abs(retry - r_retry) <= drift
        assert abs(remaining - r_remaining) <= 1
        if allowed:
            drift += cost
