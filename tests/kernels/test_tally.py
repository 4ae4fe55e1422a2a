"""The metrics tally kernel against its pure-Python twin and a plain reference."""

from __future__ import annotations

import os
import random
from bisect import bisect_left

import pytest

from fastgw._py.tally import Tally as PyTally

BOUNDS = (0.001, 0.01, 0.1, 1.0)
IMPLS = [pytest.param(PyTally, id="py")]
if not os.environ.get("FASTGW_NO_EXTENSIONS"):
    from fastgw._core import Tally as CTally

    IMPLS.insert(0, pytest.param(CTally, id="c"))


@pytest.mark.parametrize("tally_cls", IMPLS)
def test_tally_matches_a_plain_reference(tally_cls):
    rng = random.Random(7)
    tally = tally_cls(("api", "stage", "GET /x", "GET"), BOUNDS)
    assert tally.labels == ("api", "stage", "GET /x", "GET")
    for _round in range(3):
        statuses: dict[int, int] = {}
        durations = [0] * (len(BOUNDS) + 1)
        integrations = [0] * (len(BOUNDS) + 1)
        duration_sum = integration_sum = 0.0
        for _ in range(500):
            status = rng.choice([200, 200, 404, 502])
            elapsed = rng.choice([0.0, 0.001, 0.0005, 0.05, 1.0, 3.0, rng.random()])
            integration = rng.choice([-1.0, elapsed / 2])
            tally.record(status, elapsed, integration)
            statuses[status] = statuses.get(status, 0) + 1
            durations[bisect_left(BOUNDS, elapsed)] += 1
            duration_sum += elapsed
            if integration >= 0:
                integrations[bisect_left(BOUNDS, integration)] += 1
                integration_sum += integration
        got_statuses, got_durations, got_integrations = tally.drain()
        assert got_statuses == statuses
        assert got_durations[:-1] == durations and got_durations[-1] == pytest.approx(duration_sum)
        assert got_integrations[:-1] == integrations and got_integrations[-1] == pytest.approx(integration_sum)
    assert tally.drain() == ({}, [0] * (len(BOUNDS) + 1) + [0.0], None)  # drained: empty again


@pytest.mark.parametrize("tally_cls", IMPLS)
def test_too_many_buckets_refused(tally_cls):
    with pytest.raises(ValueError):
        tally_cls((), tuple(float(i) for i in range(40)))
