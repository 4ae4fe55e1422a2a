"""benchmarks/targets.py: issue 18's ratios from a harness run's results.json (medians of per-round ratios)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.targets import evaluate


def _run(contender: str, body: str, rep: int, rps: float, p99: float, rss: float = 60.0) -> dict[str, Any]:
    return {"contender": contender, "body": body, "rep": rep, "rps": rps, "p99_ms": p99, "rss_process_peak_mib": rss}


def test_ratios_are_taken_within_each_round_then_the_median() -> None:
    # The floor drifts between rounds; plain follows it at 0.9, 0.8 and 0.95 of it: the median is 0.9,
    # whatever the drift (a ratio of the medians would read 1000 / 1100 here).
    runs = []
    for rep, (floor, plain) in enumerate([(1000, 900), (2000, 1600), (1100, 1045)]):
        runs += [_run("floor", "13", rep, floor, 2.0), _run("fastgw-plain", "13", rep, plain, 2.2, rss=63.0)]
    rows = {row["target"]: row for row in evaluate({"runs": runs})}
    plain = rows["tuned plain ÷ floor"]
    assert (plain["median"], plain["low"], plain["high"], plain["rounds"], plain["met"]) == (0.9, 0.8, 0.95, 3, True)
    assert rows["p99 ÷ floor's p99, 13 B"]["median"] == 1.1 and rows["p99 ÷ floor's p99, 13 B"]["met"]
    assert rows["peak RSS, largest fastgw process (MiB)"]["median"] == 63.0
    assert "64 KiB ÷ floor" not in rows and "full path ÷ tuned plain" not in rows  # not in the run: left out


def test_a_missed_target_says_so(tmp_path: Path) -> None:
    runs = [_run("fastgw-plain", "13", 0, 1000, 2.0), _run("fastgw-full", "13", 0, 850, 2.0)]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"runs": runs}))
    out = subprocess.run([sys.executable, "-m", "benchmarks.targets", str(path)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent).stdout
    assert "| full path ÷ tuned plain | >= 0.90 | 0.85 (0.85–0.85) | 1 | NO |" in out
