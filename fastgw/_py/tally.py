"""Per-worker request tallies for the metrics: the reference for src_ext/_tally.pxi."""

from __future__ import annotations

from bisect import bisect_left


class Tally:
    def __init__(self, labels: tuple, bounds: tuple[float, ...]):
        if len(bounds) > 32:
            raise ValueError("at most 32 buckets")
        self.labels = labels
        self.bounds = bounds
        self._clear()

    def _clear(self) -> None:
        self.statuses: dict[int, int] = {}
        self.durations = [0] * (len(self.bounds) + 1)
        self.integrations = [0] * (len(self.bounds) + 1)
        self.duration_sum = 0.0
        self.integration_sum = 0.0
        self.integration_count = 0

    def record(self, status: int, elapsed: float, integration: float) -> None:
        if not 100 <= status <= 599:
            status = 599  # not an HTTP status: counted as a server error
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.durations[bisect_left(self.bounds, elapsed)] += 1
        self.duration_sum += elapsed
        if integration >= 0:
            self.integrations[bisect_left(self.bounds, integration)] += 1
            self.integration_sum += integration
            self.integration_count += 1

    def drain(self) -> tuple[dict[int, int], list[float], list[float] | None]:
        durations: list[float] = [*self.durations, self.duration_sum]
        integrations: list[float] | None = None
        if self.integration_count:
            integrations = [*self.integrations, self.integration_sum]
        statuses = self.statuses
        self._clear()
        return statuses, durations, integrations
