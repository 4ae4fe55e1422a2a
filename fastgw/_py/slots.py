"""Pure-Python SlotTable (reference for the Cython build; NOT atomic across processes).

A hash table of int64 idents -> slot numbers (open addressing, linear probing, insert-only) and,
beside it, one int64 value per slot: a GCRA TAT (see limiter.py; this class only refunds it) or a
counter packed as (period << 40) | count. Layout in the buffer: idents int64[nslots] (0 = free),
then values int64[nslots], native-endian.
"""

from __future__ import annotations

import operator
import struct
from typing import Any

from .limiter import DENIED_RETRY_NS, emission_interval, span

COUNT_BITS = 40
COUNT_MASK = (1 << COUNT_BITS) - 1
PERIOD_LIMIT = 1 << 23

_I64 = struct.Struct("=q")


class SlotTable:
    """``nslots`` idents and values in a writable buffer of >= 16*nslots bytes."""

    __slots__ = ("_view", "_nslots", "_values")

    def __init__(self, buffer: Any, nslots: int) -> None:
        nslots = operator.index(nslots)
        if nslots <= 0:
            raise ValueError("nslots must be > 0")
        view = memoryview(buffer)
        if view.readonly:
            view.release()
            raise BufferError("SlotTable needs a writable buffer")
        if view.nbytes < 16 * nslots:
            view.release()
            raise ValueError(f"buffer too small: {nslots} slots need {16 * nslots} bytes")
        self._view = view.cast("B")
        self._nslots = nslots
        self._values = 8 * nslots

    @property
    def nslots(self) -> int:
        return self._nslots

    def _check(self, slot: int) -> int:
        slot = operator.index(slot)
        if not 0 <= slot < self._nslots:
            raise IndexError(f"slot {slot} out of range (nslots={self._nslots})")
        return self._values + 8 * slot

    def _load(self, offset: int) -> int:
        return _I64.unpack_from(self._view, offset)[0]

    def _store(self, offset: int, value: int) -> None:
        _I64.pack_into(self._view, offset, value)

    def _probe(self, ident: int, insert: bool) -> int:
        ident = operator.index(ident)
        if ident == 0:
            raise ValueError("ident 0 is reserved for free slots")
        if not -(1 << 63) <= ident < (1 << 63):
            raise OverflowError("ident must fit in an int64")
        n = self._nslots
        start = i = (ident & 0xFFFF_FFFF_FFFF_FFFF) % n
        while True:
            seen = self._load(8 * i)
            if seen == ident:
                return i
            if seen == 0:
                if not insert:
                    return -1
                self._store(8 * i, ident)
                return i
            i = (i + 1) % n
            if i == start:
                return -1

    def find(self, ident: int) -> int:
        """The slot of ``ident``, inserting it if absent; -1 when the table is full."""
        return self._probe(ident, True)

    def lookup(self, ident: int) -> int:
        """The slot of ``ident``, or -1 when it was never inserted."""
        return self._probe(ident, False)

    def count_acquire(self, slot: int, period: int, limit: int, cost: int = 1, initial: int = 0) -> tuple[bool, int]:
        offset = self._check(slot)
        period, limit, cost, initial = (operator.index(x) for x in (period, limit, cost, initial))
        if not 0 < period < PERIOD_LIMIT:
            raise ValueError("period out of range")
        if cost < 0 or initial < 0:
            raise ValueError("cost and initial must be >= 0")
        word = self._load(offset)
        if word == 0:
            base = initial
        elif word >> COUNT_BITS == period:
            base = word & COUNT_MASK
        else:
            base = 0
        new_count = base + cost
        if (limit >= 0 and new_count > limit) or new_count > COUNT_MASK:
            return (False, base)
        self._store(offset, (period << COUNT_BITS) | new_count)
        return (True, new_count)

    def count_release(self, slot: int, period: int, cost: int = 1) -> None:
        offset = self._check(slot)
        word = self._load(offset)
        if word == 0 or word >> COUNT_BITS != period:
            return
        count = word & COUNT_MASK
        count = count - cost if count > cost else 0
        self._store(offset, (period << COUNT_BITS) | count)

    def count_get(self, slot: int) -> tuple[int, int]:
        word = self._load(self._check(slot))
        return (word >> COUNT_BITS, word & COUNT_MASK)

    def count_set(self, slot: int, period: int, count: int) -> None:
        offset = self._check(slot)
        if not 0 < period < PERIOD_LIMIT or not 0 <= count <= COUNT_MASK:
            raise ValueError("period or count out of range")
        self._store(offset, (period << COUNT_BITS) | count)

    def count_take(self, slot: int) -> tuple[int, int]:
        offset = self._check(slot)
        word = self._load(offset)
        if word & COUNT_MASK:
            self._store(offset, word & ~COUNT_MASK)
        return (word >> COUNT_BITS, word & COUNT_MASK)

    def gcra_refund(self, slot: int, rate: float, cost: int = 1) -> None:
        offset = self._check(slot)
        rate = float(rate)
        if cost <= 0 or not rate > 0:
            return
        tat = self._load(offset)
        if tat == 0:
            return
        self._store(offset, max(1, tat - span(emission_interval(rate), cost)))

    def admit(self, now_ns: int, levels: tuple[tuple[int, int, int], ...], quota_slot: int = -1, period: int = 0,
              limit: int = -1, initial: int = 0) -> tuple[int, int]:
        """A whole usage check: GCRA on each (slot, interval_ns, tolerance_ns) level in order, then
        the quota counter; a refusal gives back what earlier levels took. See the Cython docstring."""
        taken = 0
        for index, (slot, interval, tolerance) in enumerate(levels):
            offset = self._check(slot)
            if tolerance < 0:
                self._untake(levels, taken)
                return (index, DENIED_RETRY_NS)
            tat = self._load(offset)
            new_tat = max(tat, now_ns) + interval
            diff = new_tat - now_ns
            if diff > tolerance:
                self._untake(levels, taken)
                return (index, diff - tolerance)
            self._store(offset, new_tat)
            taken += 1
        if quota_slot < 0:
            return (-1, 0)
        allowed, count = self.count_acquire(quota_slot, period, limit, 1, initial)
        if allowed:
            return (-1, count)
        self._untake(levels, taken)
        return (len(levels), count)

    def _untake(self, levels: tuple[tuple[int, int, int], ...], upto: int) -> None:
        for slot, interval, _ in levels[:upto]:
            offset = self._check(slot)
            tat = self._load(offset)
            if tat:
                self._store(offset, max(1, tat - interval))

    def occupied(self) -> int:
        return sum(1 for i in range(self._nslots) if self._load(8 * i) != 0)
