"""Waiting on conditions with deadlines, never on fixed sleeps.

A test waits until what it expects is true (a metric reached its value, a log line was written, a
process exited) and fails with what it last saw when the deadline passes. The deadlines are bounds
for a loaded CI machine, not timing checks: the workers publish metrics about once a second, so a
count is usually there within ~1 s, and 20 s means something is wrong.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")


def wait_for(condition: Callable[[], object], timeout: float = 20.0, what: str = "condition",
             interval: float = 0.05) -> float:
    """Poll `condition` until it is truthy; the seconds it took. AssertionError at the deadline."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def wait_until(read: Callable[[], T], what: str = "value", timeout: float = 20.0, interval: float = 0.1) -> T:
    """Poll `read()` until it gives something truthy, and return that (a row, a count, a snapshot)."""
    started = time.monotonic()
    while True:
        value = read()
        if value:
            return value
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def wait_value(read: Callable[[], T], expected: T, timeout: float = 20.0, what: str = "value",
               interval: float = 0.05) -> T:
    """Poll `read()` until it equals `expected`; fails at the deadline with the last value read
    (a value that overshoots never equals, so an over-count fails too)."""
    started = time.monotonic()
    while True:
        value = read()
        if value == expected:
            return value
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: {value!r} after {timeout:.0f}s, expected {expected!r}")
        time.sleep(interval)


def scrape(admin: str, headers: dict[str, str] | None = None) -> str:
    return httpx.get(f"{admin}/metrics", headers=headers, timeout=5).text


def metric(admin: str, name: str, **labels: str) -> float:
    """The sum of every sample of `name` whose labels include `labels` (0 when there is none)."""
    total = 0.0
    for line in scrape(admin).splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_metric(admin: str, name: str, expected: float, timeout: float = 20.0, **labels: str) -> float:
    """Wait until `metric(admin, name, **labels)` equals `expected` exactly."""
    return wait_value(lambda: metric(admin, name, **labels), float(expected), timeout,
                      what=f"{name}{labels or ''}")


def wait_line(admin: str, line: str, timeout: float = 20.0) -> None:
    """Wait until the scrape holds `line` exactly (a whole sample: name, labels and value)."""
    def present() -> bool:
        return line in scrape(admin).splitlines()
    try:
        wait_for(present, timeout, what=line)
    except AssertionError:
        name = re.split(r"[{ ]", line, maxsplit=1)[0]
        seen = [x for x in scrape(admin).splitlines() if x.startswith(name)]
        raise AssertionError(f"no sample {line!r} after {timeout:.0f}s; {name} samples: {seen}") from None
