"""Results shared by the workers of one node: a small SQLite table under the state directory (the
Lambda authorizers' result cache: fastgw/policies/authorizers/custom.py). Each process opens its own
connection (SQLite connections do not survive a fork); WAL mode lets them all read and write at once.
A failing store is logged and skipped: the workers' own memories still work."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from typing import Any

import orjson

log = logging.getLogger("fastgw.state")

FILE = "results.sqlite3"
SCHEMA = "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, expires REAL NOT NULL, value BLOB NOT NULL)"
PURGE_EVERY = 512  # puts between two deletions of expired rows


class ResultStore:
    def __init__(self, state_dir: str):
        self.path = os.path.join(state_dir, FILE)
        self.state_dir = state_dir
        self._db: sqlite3.Connection | None = None
        self._pid = -1
        self._puts = 0

    def _connection(self) -> sqlite3.Connection:
        if self._db is None or self._pid != os.getpid():
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=0.5, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=OFF")  # a cache: losing it at a crash costs only calls
            except sqlite3.OperationalError:
                pass
            db.execute(SCHEMA)
            self._db, self._pid = db, os.getpid()
        return self._db

    def get(self, key: str, now: float) -> tuple[float, Any] | None:
        try:
            row = self._connection().execute("SELECT expires, value FROM results WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            log.warning("result store %s: %s", self.path, exc)
            return None
        if row is None or row[0] <= now:
            return None
        return row[0], orjson.loads(row[1])

    def put(self, key: str, expires: float, value: Any) -> None:
        try:
            db = self._connection()
            db.execute("INSERT OR REPLACE INTO results (key, expires, value) VALUES (?, ?, ?)",
                       (key, expires, orjson.dumps(value)))
            self._puts += 1
            if self._puts % PURGE_EVERY == 0:
                db.execute("DELETE FROM results WHERE expires <= ?", (time.time(),))
        except (sqlite3.Error, TypeError) as exc:
            log.warning("result store %s: %s", self.path, exc)
