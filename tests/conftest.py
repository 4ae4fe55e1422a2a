from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support.gateway import GatewayProcess  # noqa: E402
from support.reliability_report import ReliabilityReport, add_options  # noqa: E402
from support.upstream import RecordingUpstream  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
if not SHARED.exists():  # CI lays shared/ beside the clone
    SHARED = Path(os.environ.get("FASTGW_SHARED", SHARED))


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    """The reliability report (tests/support/reliability_report.py): rows of shared/RELIABILITY.md
    proved by the tests marked `@pytest.mark.reliability(...)`."""
    config.pluginmanager.register(ReliabilityReport(config, SHARED / "RELIABILITY.md"), "fastgw-reliability")


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    server = RecordingUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """One real 6-node Redis Cluster for the whole run (started once: ~2 s); tests take it through
    `redis_cluster` (tests/test_redis_cluster.py), which empties it and waits for it to be whole."""
    from support.redis_cluster import RedisCluster

    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    """A failed test shows the end of the log of every gateway it started: a failure in a CI run
    must say what the gateway saw."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for gateway in getattr(item, "fastgw_gateways", []):
        report.sections.append((f"{gateway.name} stderr (last 60 lines)",
                                "\n".join(gateway.stderr().splitlines()[-60:])))


@pytest.fixture
def start_gateway(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator:
    """start_gateway(config_text, workers=1, args=(), env=None) -> a running GatewayProcess."""
    started: list[GatewayProcess] = []
    request.node.fastgw_gateways = started

    def start(config: str, workers: int = 1, args: tuple[str, ...] = (), env: dict[str, str] | None = None,
              name: str = "gateway") -> GatewayProcess:
        gateway = GatewayProcess(config, tmp_path, workers=workers, args=args, env=env, name=name)
        started.append(gateway)
        return gateway.start()

    yield start
    for gateway in started:
        gateway.stop()
