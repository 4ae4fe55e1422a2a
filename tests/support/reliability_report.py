"""The reliability report: which rows of the catalogue (shared/RELIABILITY.md) the suite proves.

A test names the rows it proves with `@pytest.mark.reliability("F-08", "F-09")` (or the mark on a
`pytest.param`). After a whole-suite run (or with `--reliability-report[=PATH]`, or
`FASTGW_RELIABILITY_REPORT=1`) this plugin writes docs/RELIABILITY-STATUS.md: one line per
catalogue id, `pass` only when every test that names the row ran and passed. A row no test names is
`fail: no test`, so the report shows the gaps; `n/a` comes only from the reviewed table in
tests/reliability_na.py.
"""
from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROW = re.compile(r"^\| ((?:FR|HS|RL|SZ|H2|UP|AU|CA|WS|RT|F)-\d+) \|", re.M)
REPO = Path(__file__).resolve().parents[2]
DEFAULT_REPORT = REPO / "docs" / "RELIABILITY-STATUS.md"
MARK = "reliability"


def catalogue_ids(path: Path) -> list[str]:
    """The row ids of the catalogue, in its order (the §b and §c tables)."""
    seen: dict[str, None] = {}
    for match in ROW.finditer(path.read_text()):
        seen.setdefault(match.group(1), None)
    return list(seen)


def marked_ids(item: pytest.Item) -> list[str]:
    return [row for mark in item.iter_markers(MARK) for row in mark.args]


@dataclass
class Outcome:
    nodeid: str
    failed: bool = False
    skipped: str | None = None
    passed: bool = False


@dataclass
class RowStatus:
    tests: list[Outcome] = field(default_factory=list)


def add_options(parser: pytest.Parser) -> None:
    parser.addoption("--reliability-report", nargs="?", const=str(DEFAULT_REPORT), default=None,
                     metavar="PATH", help="write the reliability status report (docs/RELIABILITY-STATUS.md "
                                          "by default) after the run")


class ReliabilityReport:
    def __init__(self, config: pytest.Config, catalogue: Path) -> None:
        self.config = config
        self.catalogue = catalogue
        self.ids = catalogue_ids(catalogue) if catalogue.exists() else []
        self.outcomes: dict[str, Outcome] = {}
        self.rows: dict[str, list[str]] = defaultdict(list)  # id -> nodeids
        self.deselected = 0

    # -- collection: every marked id must be a catalogue row ----------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        known = set(self.ids)
        for item in items:
            for row in marked_ids(item):
                if known and row not in known:
                    raise pytest.UsageError(f"{item.nodeid}: reliability mark {row!r} is not a row of {self.catalogue}")
                self.rows[row].append(item.nodeid)
                self.outcomes.setdefault(item.nodeid, Outcome(item.nodeid))

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected += len(items)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcome = self.outcomes.get(report.nodeid)
        if outcome is None:
            return
        if report.failed:
            outcome.failed = True
        elif report.skipped and hasattr(report, "wasxfail"):
            outcome.skipped = f"expected failure: {report.wasxfail}"
        elif report.skipped:
            outcome.skipped = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else "skipped"
        elif report.when == "call" and report.passed:
            outcome.passed = True

    # -- the report -------------------------------------------------------------------------------
    def wanted(self, session: pytest.Session) -> str | None:
        option = self.config.getoption("--reliability-report")
        if option:
            return option
        if os.environ.get("FASTGW_RELIABILITY_REPORT") == "1":
            return str(DEFAULT_REPORT)
        whole = (not self.config.getoption("keyword") and not self.config.getoption("markexpr")
                 and not self.deselected and not session.shouldstop and not session.shouldfail
                 and not self.config.getoption("collectonly")
                 and all(Path(arg.split("::")[0]).resolve() == REPO / "tests" for arg in self.config.args))
        return str(DEFAULT_REPORT) if whole and self.ids else None

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        path = self.wanted(session)
        if path and self.ids:
            Path(path).write_text(self.render())

    def status(self, row: str) -> str:
        from reliability_na import KNOWN_FAILING, NOT_APPLICABLE, PENDING

        nodeids = self.rows.get(row, [])
        if row in KNOWN_FAILING:
            return f"fail: {KNOWN_FAILING[row]}"
        if not nodeids:
            if row in NOT_APPLICABLE:
                return f"n/a: {NOT_APPLICABLE[row]}"
            if row in PENDING:
                return f"fail: no test (pending {PENDING[row]})"
            return "fail: no test"
        outcomes = [self.outcomes[nodeid] for nodeid in nodeids]
        failed = [o for o in outcomes if o.failed]
        if failed:
            return f"fail: {len(failed)} of {len(outcomes)} tests failed"
        if self.config.getoption("collectonly"):
            return "collected (not run)"
        not_run = [o for o in outcomes if not o.passed]
        if not_run:
            reason = next((o.skipped for o in not_run if o.skipped), "not run")
            return f"fail: {len(not_run)} of {len(outcomes)} tests did not run ({reason})"
        return "pass"

    def render(self) -> str:
        statuses = {row: self.status(row) for row in self.ids}
        counts = {kind: sum(1 for s in statuses.values() if s.startswith(kind)) for kind in ("pass", "fail", "n/a")}
        lines = [
            "# Reliability status (generated — do not edit)",
            "",
            "Written by `tests/support/reliability_report.py` from the catalogue "
            "`shared/RELIABILITY.md` (§b bad inputs, §c faults) and the `@pytest.mark.reliability(...)` "
            "marks of the suite. Regenerate with a whole-suite run, `scripts/test.sh`, or "
            "`.venv/bin/python -m pytest -p no:cacheprovider --reliability-report`. "
            "`n/a` reasons live in `tests/reliability_na.py`.",
            "",
            f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
            f"Rows: {len(self.ids)}; pass {counts['pass']}, fail {counts['fail']}, n/a {counts['n/a']}.",
            "",
            "| ID | Status | Test(s) |",
            "|---|---|---|",
        ]
        for row in self.ids:
            lines.append(f"| {row} | {statuses[row]} | {self.tests_cell(row)} |")
        return "\n".join(lines) + "\n"

    def tests_cell(self, row: str) -> str:
        # Parametrized tests fold into one entry with their count: the table stays readable.
        counts: dict[str, int] = defaultdict(int)
        for nodeid in self.rows.get(row, []):
            counts[nodeid.split("[")[0]] += 1
        return "<br>".join(f"`{name}`" + (f" ×{n}" if n > 1 else "") for name, n in counts.items())
