"""Key management and usage reports (AWS CreateApiKey, GetApiKeys, UpdateApiKey, DeleteApiKey,
GetUsage, UpdateUsage) over the configured backend. The CLI and the admin API both use this.

Keys declared in the config file are listed but cannot be changed here (edit the file); keys
created here are stored hashed (SQLite, or Redis with the Redis backend) and running workers pick
them up within a second, without a restart.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Protocol

from ...state.store import KeyRecord, Store
from . import keys as keylib
from .persist import Persister, gateway_running
from .plan import UsageSetup, check_key_plans, day_text, period_bounds, period_of


class UsageError(Exception):
    """A request the service refuses; `status` is the HTTP status the admin API answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Backend(Protocol):
    def list_keys(self) -> list[KeyRecord]: ...
    def insert_key(self, record: KeyRecord) -> None: ...
    def update_key(self, key_id: str, *, enabled: bool | None = None, delete: bool = False) -> bool: ...
    def daily_usage(self, key_id: str, plan: str, first: str, last: str) -> dict[str, int]: ...
    def quota_used(self, key_id: str, plan: str, kind: str, period: int) -> int | None: ...
    def set_remaining(self, key_id: str, plan: str, kind: str, period: int, used: int) -> str: ...
    def close(self) -> None: ...


class LocalBackend:
    """SQLite; quota changes go through the running gateway's main process when there is one."""

    def __init__(self, setup: UsageSetup, persister: Persister | None = None):
        self.setup = setup
        self.persister = persister
        shared = persister.store if persister is not None else None
        self.store = shared if shared is not None else Store(setup.state_dir)
        self._own_store = shared is None

    def list_keys(self) -> list[KeyRecord]:
        return self.store.list_keys()

    def insert_key(self, record: KeyRecord) -> None:
        self.store.insert_key(record)

    def update_key(self, key_id: str, *, enabled: bool | None = None, delete: bool = False) -> bool:
        return self.store.update_key(key_id, enabled=enabled, delete=delete)

    def daily_usage(self, key_id: str, plan: str, first: str, last: str) -> dict[str, int]:
        if self.persister is not None:
            self.persister.tick()  # the admin API answers with counts as of now
        return self.store.daily_usage(key_id, plan, first, last)

    def quota_used(self, key_id: str, plan: str, kind: str, period: int) -> int | None:
        live = self.persister.live_count(key_id, plan) if self.persister is not None else None
        if live is None:
            live = self.store.load_quota().get((key_id, plan))
        if live is None:
            return None
        return live[1] if live[0] == period else 0

    def set_remaining(self, key_id: str, plan: str, kind: str, period: int, used: int) -> str:
        remaining = self.setup.plans[plan].quota.limit - used  # type: ignore[union-attr]
        if self.persister is not None:
            self.persister.set_remaining(key_id, plan, remaining)
            return "applied"
        if gateway_running(self.setup.state_dir):
            self.store.queue_adjustment(key_id, plan, remaining)
            return "queued: the running gateway applies it within a second"
        self.store.save({(key_id, plan): (period, used)}, {})
        return "applied"

    def close(self) -> None:
        if self._own_store:
            self.store.close()


class UsageService:
    def __init__(self, setup: UsageSetup, backend: Backend):
        self.setup = setup
        self.backend = backend

    @classmethod
    def open(cls, setup: UsageSetup, persister: Persister | None = None) -> UsageService:
        if setup.state.backend == "redis":
            from .redis import RedisBackend

            return cls(setup, RedisBackend(setup))
        return cls(setup, LocalBackend(setup, persister))

    def close(self) -> None:
        self.backend.close()

    # -- keys ---------------------------------------------------------------------------------------
    def list_keys(self) -> list[KeyRecord]:
        config = [KeyRecord(k.id, k.name, k.digest, k.plans, k.enabled, 0.0, "config") for k in self.setup.keys]
        return config + self.backend.list_keys()

    def find_key(self, ref: str) -> KeyRecord:
        for record in self.list_keys():
            if ref in (record.id, record.name):
                return record
        raise UsageError(f"no API key with the id or name '{ref}'", 404)

    def create_key(self, name: str, plans: list[str], value: str | None = None,
                   enabled: bool = True) -> tuple[KeyRecord, str]:
        """Returns the record and the value; the value is shown this once and never stored."""
        if not name or len(name) > 1024:
            raise UsageError("a key name has 1 to 1024 characters")
        if value is None:
            value = keylib.new_value()
        elif not keylib.valid_value(value):
            raise UsageError("a key value has 20 to 128 visible ASCII characters")
        problems = check_key_plans(plans, self.setup.plans, "usagePlans")
        if problems:
            raise UsageError("; ".join(str(p) for p in problems))
        digest = keylib.digest(value)
        for record in self.list_keys():
            if record.name == name:
                raise UsageError(f"an API key named '{name}' exists", 409)
            if record.digest == digest:
                raise UsageError("an API key with this value exists", 409)
        record = KeyRecord(keylib.new_id(), name, digest, tuple(plans), enabled, time.time())
        self.backend.insert_key(record)
        return record, value

    def _runtime_key(self, ref: str) -> KeyRecord:
        record = self.find_key(ref)
        if record.source == "config":
            raise UsageError(f"key '{record.name}' is declared in the config file: change it there", 409)
        return record

    def set_enabled(self, ref: str, enabled: bool) -> KeyRecord:
        record = self._runtime_key(ref)
        self.backend.update_key(record.id, enabled=enabled)
        record.enabled = enabled
        return record

    def delete_key(self, ref: str) -> KeyRecord:
        record = self._runtime_key(ref)
        self.backend.update_key(record.id, delete=True)
        return record

    # -- usage ---------------------------------------------------------------------------------------
    def _plans_of(self, record: KeyRecord, plan: str | None) -> list[str]:
        names = [p for p in record.plans if p in self.setup.plans]
        if plan is not None:
            if plan not in names:
                raise UsageError(f"key '{record.name}' is not in usage plan '{plan}'", 404)
            return [plan]
        return names

    def get_usage(self, ref: str, start: str, end: str, plan: str | None = None) -> list[dict[str, Any]]:
        """AWS GetUsage, one answer per plan: items {keyId: [[used, remaining], ...]} per day."""
        record = self.find_key(ref)
        try:
            first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
        except ValueError:
            raise UsageError("dates are YYYY-MM-DD") from None
        if last < first or (last - first).days > 366:
            raise UsageError("the end date must follow the start date, at most 366 days later")
        now = time.time()
        answers = []
        for name in self._plans_of(record, plan):
            quota = self.setup.plans[name].quota
            daily = self.backend.daily_usage(record.id, name, start, end)
            current = period_of(quota.period, now) if quota is not None else 0
            live = self.backend.quota_used(record.id, name, quota.period, current) if quota is not None else None
            rows = []
            day = first
            running: dict[int, int] = {}  # period -> used so far in the listed days
            while day <= last:
                text = day.isoformat()
                used = daily.get(text, 0)
                remaining = None
                if quota is not None:
                    epoch = dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()
                    period = period_of(quota.period, epoch)
                    running[period] = running.get(period, 0) + used
                    if period == current and text == day_text(now) and live is not None:
                        remaining = max(0, quota.limit - live)  # exact, and reflects UpdateUsage
                    else:
                        remaining = max(0, quota.limit - running[period])
                rows.append([used, remaining])
                day += dt.timedelta(days=1)
            answers.append({"usagePlanId": name, "startDate": start, "endDate": end, "position": None,
                            "items": {record.id: rows}})
        return answers

    def update_usage(self, ref: str, plan: str, remaining: int) -> dict[str, Any]:
        """AWS UpdateUsage (`replace /remaining`): the key may make `remaining` more requests this period."""
        record = self.find_key(ref)
        self._plans_of(record, plan)
        quota = self.setup.plans[plan].quota
        if quota is None:
            raise UsageError(f"usage plan '{plan}' has no quota", 409)
        if remaining < 0:
            raise UsageError("remaining must be >= 0")
        period = period_of(quota.period, time.time())
        used = max(0, quota.limit - remaining)
        outcome = self.backend.set_remaining(record.id, plan, quota.period, period, used)
        end = period_bounds(quota.period, period)[1]
        return {"keyId": record.id, "usagePlanId": plan, "remaining": quota.limit - used, "limit": quota.limit,
                "periodEnds": int(end), "result": outcome}
