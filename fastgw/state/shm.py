"""The host-wide shared table: one memory-mapped file under the state directory, mapped by the main
process and by every worker, updated only with the kernels' atomic operations (no lock).

    header   64 bytes: magic, slot count, owner pid, creation time
    idents   int64[nslots]   SlotTable's hash table (ident -> slot)
    values   int64[nslots]   per slot: a GCRA TAT (GcraTable) or a packed (period, count) counter

The main process creates the file before the workers start (fastgw/policies/usage/persist.py) and removes
it after a graceful stop; a file found at start is what a crash left behind, and its counters are
saved before a fresh one replaces it.
"""

from __future__ import annotations

import mmap
import os
import socket
import struct
import time

from .._accel import GcraTable, SlotTable

MAGIC = b"FGWSLOT1"
HEADER = struct.Struct("=8sqqq")  # magic, nslots, owner pid, created (ns)
HEADER_BYTES = 64
DEFAULT_SLOTS = 1 << 18  # 4 MiB; room for ~100k keys x plans with their per-method buckets
FILE_NAME = "limits.shm"


class SharedTable:
    """A mapping of the shared file: ``slots`` (SlotTable) and ``gcra`` (GcraTable) over one buffer."""

    def __init__(self, path: str, mm: mmap.mmap, nslots: int):
        self.path = path
        self.nslots = nslots
        _, _, owner, created = HEADER.unpack_from(mm, 0)
        # Unique to this table's life (one gateway start): names the counts it hands to Redis, so that
        # a retried hand-over is recognised (fastgw/policies/usage/redis.py RECONCILE).
        self.identity = f"{socket.gethostname()}:{owner}:{created}"
        self._mm = mm
        view = memoryview(mm)
        self._views = [view[HEADER_BYTES:HEADER_BYTES + 16 * nslots],
                       view[HEADER_BYTES + 8 * nslots:HEADER_BYTES + 16 * nslots]]
        self.slots = SlotTable(self._views[0], nslots)
        self.gcra = GcraTable(self._views[1], nslots)
        self._view = view

    @classmethod
    def create(cls, state_dir: str, nslots: int = DEFAULT_SLOTS) -> SharedTable:
        """A fresh, zeroed table, put in place atomically (a worker never maps a half-made file)."""
        os.makedirs(state_dir, exist_ok=True)
        path = os.path.join(state_dir, FILE_NAME)
        tmp = f"{path}.{os.getpid()}.tmp"
        size = HEADER_BYTES + 16 * nslots
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, size)
            os.pwrite(fd, HEADER.pack(MAGIC, nslots, os.getpid(), time.time_ns()), 0)
            os.rename(tmp, path)
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return cls(path, mm, nslots)

    @classmethod
    def open(cls, state_dir: str) -> SharedTable | None:
        """Map an existing table; None when there is none or it is not one of ours."""
        path = os.path.join(state_dir, FILE_NAME)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_BYTES:
                return None
            magic, nslots, _, _ = HEADER.unpack(os.pread(fd, HEADER.size, 0))
            if magic != MAGIC or nslots <= 0 or size < HEADER_BYTES + 16 * nslots:
                return None
            mm = mmap.mmap(fd, HEADER_BYTES + 16 * nslots)
        finally:
            os.close(fd)
        return cls(path, mm, nslots)

    def close(self) -> None:
        # The kernels hold buffer exports of the views: drop them before unmapping.
        self.slots = None  # type: ignore[assignment]
        self.gcra = None  # type: ignore[assignment]
        try:
            for view in self._views:
                view.release()
            self._view.release()
            self._mm.close()
        except BufferError:  # a kernel object still referenced elsewhere: the GC unmaps it later
            pass

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
