"""Issue 18's targets, read from one harness run's results.json (medians of per-round ratios).

    python -m benchmarks.targets benchmarks/out/<run>/results.json

Each ratio is taken within one round (two contenders measured back to back), then the median and the range
over the rounds, as the harness's own "per-round ratios" table does against nginx: drift between rounds
cancels. A target whose contenders were not in the run is left out.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from typing import Any

# (what, contender, reference, body, field, asked): rps and p99 ratios are contender ÷ reference
TARGETS = (
    ("default config ÷ tuned", "fastgw-default", "fastgw-default-tuned", "13", "rps", ">= 0.90"),
    ("tuned plain ÷ floor", "fastgw-plain", "floor", "13", "rps", ">= 0.85"),
    ("full path ÷ tuned plain", "fastgw-full", "fastgw-plain", "13", "rps", ">= 0.90"),
    ("cache hit ÷ granian app", "fastgw-cache-hit", "granian", "13", "rps", ">= 0.90"),
    ("64 KiB ÷ floor", "fastgw-plain", "floor", "64k", "rps", ">= 0.90"),
    ("p99 ÷ floor's p99, 13 B", "fastgw-plain", "floor", "13", "p99_ms", "<= 1.3"),
    ("p99 ÷ floor's p99, 64 KiB", "fastgw-plain", "floor", "64k", "p99_ms", "<= 1.3"),
)
RSS_ASKED_MIB = 64.0


def rounds(results: dict[str, Any]) -> dict[tuple[str, int], dict[str, dict[str, Any]]]:
    """(body, repetition) -> contender -> its run."""
    by_round: dict[tuple[str, int], dict[str, dict[str, Any]]] = defaultdict(dict)
    for run in results["runs"]:
        by_round[(str(run["body"]), run["rep"])][run["contender"]] = run
    return by_round


def met(value: float, asked: str) -> bool:
    op, limit = asked.split()
    return value >= float(limit) if op == ">=" else value <= float(limit)


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    by_round = rounds(results)
    rows = []
    for what, contender, reference, body, field, asked in TARGETS:
        ratios = [runs[contender][field] / runs[reference][field]
                  for (run_body, _), runs in sorted(by_round.items())
                  if run_body == body and contender in runs and reference in runs
                  and runs[contender].get(field) and runs[reference].get(field)]
        if ratios:
            median = statistics.median(ratios)
            rows.append({"target": what, "asked": asked, "median": round(median, 3), "low": round(min(ratios), 2),
                         "high": round(max(ratios), 2), "rounds": len(ratios), "met": met(median, asked)})
    peaks = [run["rss_process_peak_mib"] for run in results["runs"]
             if run["contender"].startswith("fastgw") and run.get("rss_process_peak_mib")]
    if peaks:
        rows.append({"target": "peak RSS, largest fastgw process (MiB)", "asked": f"<= {RSS_ASKED_MIB:g}",
                     "median": max(peaks), "low": min(peaks), "high": max(peaks), "rounds": len(peaks),
                     "met": max(peaks) <= RSS_ASKED_MIB})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="a harness run's results.json")
    args = parser.parse_args()
    with open(args.results) as f:
        rows = evaluate(json.load(f))
    print("| target | asked | median (range) | rounds | met |")
    print("|---|---|---|---:|---|")
    for row in rows:
        print(f"| {row['target']} | {row['asked']} | {row['median']} ({row['low']}–{row['high']}) | {row['rounds']} "
              f"| {'yes' if row['met'] else 'NO'} |")


if __name__ == "__main__":
    main()
