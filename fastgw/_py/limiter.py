"""Pure-Python GCRA rate-limit table (reference for the Cython build; NOT atomic across processes).

Each slot holds one native-endian int64: the theoretical arrival time (TAT, ns); 0 means unused.
The emission interval T = 1e9/rate is rounded down to whole nanoseconds (at least 1) so that all
arithmetic is exact integer arithmetic and ``burst`` back-to-back requests are always admitted
(the drift against real-valued GCRA is < 1 ns per request). Spans are clamped to MAX_SPAN so that
an int64 cannot overflow for any rate/burst/cost.
"""

from __future__ import annotations

import operator
import struct
from typing import Any

MAX_SPAN = 1 << 60  # ~36 years in ns; TAT stays far below 2**63 for any realistic clock
DENIED_RETRY_NS = 1_000_000_000  # rate <= 0 or burst <= 0: deny and ask to retry in 1 s

_SLOT = struct.Struct("=q")


def emission_interval(rate: float) -> int:
    t = 1e9 / rate
    if t >= MAX_SPAN:
        return MAX_SPAN
    return max(1, int(t))


def span(interval: int, count: int) -> int:
    """interval * count, clamped to MAX_SPAN (both non-negative)."""
    return MAX_SPAN if count > MAX_SPAN // interval else interval * count


class GcraTable:
    """``nslots`` GCRA states in a writable buffer of >= 8*nslots bytes (bytearray, mmap...)."""

    __slots__ = ("_view", "_nslots")

    def __init__(self, buffer: Any, nslots: int) -> None:
        nslots = operator.index(nslots)
        if nslots < 0:
            raise ValueError("nslots must be >= 0")
        view = memoryview(buffer)
        if view.readonly:
            view.release()
            raise BufferError("GcraTable needs a writable buffer")
        if view.nbytes < 8 * nslots:
            view.release()
            raise ValueError(f"buffer too small: {nslots} slots need {8 * nslots} bytes")
        self._view = view.cast("B")
        self._nslots = nslots

    @property
    def nslots(self) -> int:
        return self._nslots

    def _offset(self, slot: int) -> int:
        slot = operator.index(slot)
        if not 0 <= slot < self._nslots:
            raise IndexError(f"slot {slot} out of range (nslots={self._nslots})")
        return 8 * slot

    def acquire(self, slot: int, now_ns: int, rate: float, burst: int, cost: int = 1) -> tuple[bool, int, int]:
        offset = self._offset(slot)
        now_ns = operator.index(now_ns)
        burst = operator.index(burst)
        cost = operator.index(cost)
        if isinstance(rate, (str, bytes, bytearray)):  # float() would parse text; a C double does not
            raise TypeError(f"rate must be a number, not {type(rate).__name__}")
        rate = float(rate)
        if cost < 0:
            raise ValueError("cost must be >= 0")
        if not rate > 0 or burst <= 0:  # also denies a NaN rate
            return (False, DENIED_RETRY_NS, 0)
        interval = emission_interval(rate)
        tolerance = span(interval, burst)
        (tat,) = _SLOT.unpack_from(self._view, offset)
        new_tat = max(tat, now_ns) + span(interval, cost)
        diff = new_tat - now_ns
        if diff > tolerance:
            return (False, diff - tolerance, 0)
        _SLOT.pack_into(self._view, offset, new_tat)
        return (True, 0, (tolerance - diff) // interval)

    def reset(self, slot: int) -> None:
        _SLOT.pack_into(self._view, self._offset(slot), 0)
