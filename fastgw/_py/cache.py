"""Pure-Python LRU + TTL cache with a byte budget (reference for the Cython build).

An entry costs ``nbytes + len(key) + ENTRY_OVERHEAD``: ENTRY_OVERHEAD (128) is a flat estimate of
the per-entry bookkeeping (dict slot, entry object, key/value headers) so that many tiny entries
cannot blow past the budget. The budget is never exceeded: a put evicts least recently used
entries until it fits. Expired entries are removed lazily, when ``get`` finds them.
``now`` and ``ttl`` may use any unit (seconds from time.monotonic(), ns...) as long as it is the same.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from typing import Any

ENTRY_OVERHEAD = 128


def _check_key(key: object) -> None:
    if not isinstance(key, (str, bytes)):
        raise TypeError(f"cache key must be str or bytes, not {type(key).__name__}")


class LruTtlCache:
    """See docs/DESIGN.md. The OrderedDict runs from least to most recently used."""

    ENTRY_OVERHEAD = ENTRY_OVERHEAD

    __slots__ = ("_max_bytes", "_bytes", "_entries")

    def __init__(self, max_bytes: int) -> None:
        max_bytes = operator.index(max_bytes)
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self._max_bytes = max_bytes
        self._bytes = 0
        # key -> (value, size, expires_at)
        self._entries: OrderedDict[str | bytes, tuple[Any, int, float]] = OrderedDict()

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str | bytes, now: float) -> Any:
        _check_key(key)
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, size, expires_at = entry
        if now >= expires_at:
            del self._entries[key]
            self._bytes -= size
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: str | bytes, value: Any, nbytes: int, ttl: float, now: float) -> bool:
        """Store value; False (and any old entry for key dropped) when it is too big or ttl <= 0."""
        _check_key(key)
        nbytes = operator.index(nbytes)
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        self.delete(key)
        size = nbytes + len(key) + ENTRY_OVERHEAD
        if size > self._max_bytes or ttl <= 0:
            return False
        self._entries[key] = (value, size, now + ttl)
        self._bytes += size
        while self._bytes > self._max_bytes:
            _, (_, old_size, _) = self._entries.popitem(last=False)
            self._bytes -= old_size
        return True

    def delete(self, key: str | bytes) -> bool:
        _check_key(key)
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self._bytes -= entry[1]
        return True

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
