"""Chaos under load and a short soak, the CI versions of benchmarks/chaos.py (issue #20): each runs
a real gateway under keep-alive load from 6-8 client threads and judges the scenario as the benchmark
does. The long versions (100 reloads, the 10-minute soak) are `python -m benchmarks.chaos`."""
from __future__ import annotations

import pytest

from benchmarks import chaos


def run(name: str, soak_seconds: float = 20) -> dict:
    result = chaos.run([name], soak_seconds, quick=True)[name]
    print(f"\n{name}: {result}")
    return result


@pytest.mark.reliability("F-21")
def test_sigterm_under_load_fails_no_request_started_before_it():
    result = run("sigterm")
    assert result["started_before_signal"] > 0 and not result["problems"], result


@pytest.mark.reliability("F-22")
def test_reloads_under_load_fail_nothing():
    result = run("reloads")
    assert result["sent"] > 100 and not result["problems"], result


def test_a_killed_worker_is_respawned_under_load():
    result = run("kill-worker")
    assert not result["problems"], result


@pytest.mark.reliability("F-14", "F-16")
def test_redis_restart_under_load_fails_nothing_and_loses_no_count():
    result = run("redis-restart")
    assert result["sent"] > 100 and not result["problems"], result
    # Known gap (docs/RELIABILITY.md): at most the commands in flight when Redis stopped are counted twice.
    assert 0 <= result["usage_overcount"] <= 16, result


def test_upstream_restart_under_load_recovers():
    result = run("upstream-restart")
    assert result["failed_after_restart"] == 0 and not result["problems"], result


def test_short_soak_keeps_rss_and_fds_flat():
    result = run("soak", soak_seconds=20)
    assert result["sent"] > 500 and not result["problems"], result
