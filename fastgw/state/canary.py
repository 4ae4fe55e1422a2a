"""The canary changes made at run time (`fastgw canary set|promote|rollback`, the admin API's /canary),
kept in the state directory's SQLite file (`STATE/state.sqlite3`, table `canary_changes`, one row per
API stage) and laid over the config file's stages every time the config is loaded, so a restart
keeps them (fastgw/canary.py makes the changes).

With `state: {backend: redis}` they are kept in Redis instead (`RedisCanaryStore`: one hash for the
whole fleet) and every change is announced on the events channel: every node's main process reloads
its config at once (fastgw/runtime.py `start_follow`), so all nodes serve the same canary."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from typing import Any

import orjson

from ..config.overlay import apply_changes, overridden, state_dir_of
from .channel import publish
from .redisconn import ERRORS, RedisLink, link_from_data, sync_client

log = logging.getLogger("fastgw.deployments")


STORE_FILE = "state.sqlite3"  # shared with fastgw/state/store.py (WAL mode: many connections)


SCHEMA = """CREATE TABLE IF NOT EXISTS canary_changes (
    api TEXT NOT NULL, stage TEXT NOT NULL, change TEXT NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (api, stage))"""


class CanaryStore:
    def __init__(self, state_dir: str, create: bool = True):
        self.path = os.path.join(state_dir, STORE_FILE)
        if create:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            pass
        self.db.execute(SCHEMA)

    @classmethod
    def open_existing(cls, state_dir: str) -> CanaryStore | None:
        if not os.path.exists(os.path.join(state_dir, STORE_FILE)):
            return None
        return cls(state_dir, create=False)

    def changes(self) -> dict[tuple[str, str], dict[str, Any]]:
        rows = self.db.execute("SELECT api, stage, change FROM canary_changes").fetchall()
        return {(api, stage): orjson.loads(change) for api, stage, change in rows}

    def drop(self, keys: list[tuple[str, str]]) -> None:
        for api, stage in keys:
            self.put(api, stage, None)

    def put(self, api: str, stage: str, change: dict[str, Any] | None) -> None:
        if change is None:
            self.db.execute("DELETE FROM canary_changes WHERE api = ? AND stage = ?", (api, stage))
        else:
            self.db.execute("INSERT OR REPLACE INTO canary_changes (api, stage, change, updated) VALUES (?, ?, ?, ?)",
                            (api, stage, orjson.dumps(change).decode(), time.time()))

    def close(self) -> None:
        self.db.close()


CHANGES_KEY = "fastgw:{canary}:changes"  # field "API\x1fSTAGE" -> the change (JSON)


class RedisCanaryStore:
    """CanaryStore's interface on Redis, shared by every node; a change is announced (kind "canary")."""

    def __init__(self, link: RedisLink):
        self.link = link
        self.path = link.describe()
        self.client = sync_client(link, 2.0)

    def changes(self) -> dict[tuple[str, str], dict[str, Any]]:
        raw = self.client.hgetall(CHANGES_KEY)
        out = {}
        for field, value in raw.items():
            api, _, stage = field.decode().partition("\x1f")
            out[(api, stage)] = orjson.loads(value)
        return out

    def drop(self, keys: list[tuple[str, str]]) -> None:
        for api, stage in keys:
            self.put(api, stage, None)

    def put(self, api: str, stage: str, change: dict[str, Any] | None) -> None:
        field = f"{api}\x1f{stage}"
        if change is None:
            self.client.hdel(CHANGES_KEY, field)
        else:
            self.client.hset(CHANGES_KEY, field, orjson.dumps(change))
        publish(self.link, "canary", self.client, api=api, stage=stage, origin=ORIGIN)

    def close(self) -> None:
        self.client.close()


ORIGIN = f"{os.uname().nodename}:{os.getpid()}"  # this process, in the announcements it makes


def open_store(data: Any, source: str, create: bool = True) -> CanaryStore | RedisCanaryStore | None:
    """The config's canary store: Redis with `state.backend: redis`, else the state directory's SQLite
    file (None when `create` is false and there is none)."""
    link = link_from_data(data.get("state")) if isinstance(data, dict) else None
    if link is not None:
        return RedisCanaryStore(link)
    if create:
        return CanaryStore(state_dir_of(data, source))
    return CanaryStore.open_existing(state_dir_of(data, source))


def overlay(data: Any, source: str) -> Any:
    """`apply_changes` with the changes stored for the config (if it has any)."""
    if not isinstance(data, dict) or not isinstance(data.get("apis"), list):
        return data
    store = open_store(data, source, create=False)
    if store is None:
        return data
    try:
        changes = store.changes()
    except ERRORS as exc:
        # The config file's stages until Redis answers: a serving node's follower reloads then
        # (fastgw/runtime.py start_follow), and `fastgw validate` works without Redis.
        log.warning("the canary changes are kept in Redis (%s), which did not answer (%s): the config file's "
                    "stages apply until it does", store.path, exc)
        return data
    finally:
        store.close()
    # The stored changes win over the file: say so, so that an edit of the file that changes nothing
    # is explained (and how to drop them).
    for (api, stage), fields in overridden(data, changes).items():
        log.warning("stage %s/%s: the stored canary state (%s) overrides the config file's %s; edits of "
                    "these in the file do not apply until `fastgw canary reset --api %s --stage %s`",
                    api, stage, store.path, ", ".join(fields), api, stage)
    return apply_changes(data, changes)
