"""The `server` section: listeners, workers, the admin API, TLS, draining, request limits and the IAM
credentials the gateway trusts (AWS_IAM routes)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from ...scheduling import POLICIES
from .reader import _Reader

INTERFACES = ("auto", "asgi", "rsgi")
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")  # us-east-1, us-gov-west-1, eu-central-2


@dataclass(slots=True)
class Limits:
    maxUriBytes: int = 8 * 1024
    maxHeaderBytes: int = 60 * 1024
    maxHeaderFieldBytes: int = 16 * 1024
    maxHeaderCount: int = 100
    maxBodyBytes: int = 10 * 1024 * 1024
    headerReadTimeoutMs: int = 10_000
    bodyIdleTimeoutMs: int = 30_000  # between two reads of a request body (408 and close); RELIABILITY.md F-27
    sendIdleTimeoutMs: int = 60_000  # a streamed response whose client reads nothing this long is aborted (F-28)
    # Accepted, not applied: granian (hyper) closes an idle keep-alive connection after
    # headerReadTimeoutMs, the same timer that cuts slow heads; loading a config that sets it warns.
    keepAliveIdleMs: int | None = None
    maxValidatedBodyBytes: int = 1024 * 1024  # request validation reads bodies up to this size (413 above)


@dataclass(slots=True)
class WebSocketPassThrough:
    """`server.webSocketPassThrough`: HTTP_PROXY routes relay WebSocket upgrades to a WebSocket upstream
    (fastgw/websocket/passthrough.py), with the limits of AWS's WebSocket APIs by default."""

    enabled: bool = True  # granian serves upgrades only when on: takes effect on restart
    maxMessageBytes: int = 128 * 1024  # a bigger message, either way, closes both sides with 1009
    idleTimeoutSeconds: float = 600.0  # no message either way for this long: both sides closed with 1001
    maxLifetimeSeconds: float = 7200.0  # a session is closed with 1001 after this long


@dataclass(slots=True)
class IamConfig:
    """`server.iam`: who may call AWS_IAM routes (fastgw/policies/authorizers/iam.py)."""

    credentialsFile: str | None = None  # AWS shared-credentials INI; relative to the config file (--iam-credentials)
    region: str = "us-east-1"  # the region a SigV4 credential scope must name


@dataclass(slots=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 0  # 0: one per CPU
    adminHost: str = "127.0.0.1"
    adminPort: int = 9901
    adminToken: str | None = None
    interface: str = "auto"
    accessLog: bool = True
    tlsCert: str | None = None
    tlsKey: str | None = None
    drainSeconds: float = 25.0
    reusePort: bool = False  # start even if another process listens on host:port, and share it (handover)
    trustedHops: int = 0  # proxies in front of fastgw whose X-Forwarded-For is trusted
    cpuScheduling: str = "normal"  # "batch": SCHED_BATCH workers (fastgw/scheduling.py)
    limits: Limits = field(default_factory=Limits)
    iam: IamConfig = field(default_factory=IamConfig)
    webSocketPassThrough: WebSocketPassThrough = field(default_factory=WebSocketPassThrough)


def _read_limits(r: _Reader, value: Any, path: str) -> Limits:
    known = tuple(Limits.__dataclass_fields__)
    obj = r.mapping(value, path, known)
    d = Limits()
    return Limits(
        maxUriBytes=r.integer(obj, "maxUriBytes", path, d.maxUriBytes, 256, 1 << 20),
        maxHeaderBytes=r.integer(obj, "maxHeaderBytes", path, d.maxHeaderBytes, 1024, 1 << 20),
        maxHeaderFieldBytes=r.integer(obj, "maxHeaderFieldBytes", path, d.maxHeaderFieldBytes, 256, 1 << 20),
        maxHeaderCount=r.integer(obj, "maxHeaderCount", path, d.maxHeaderCount, 8, 10_000),
        maxBodyBytes=r.integer(obj, "maxBodyBytes", path, d.maxBodyBytes, 0, 1 << 40),
        headerReadTimeoutMs=r.integer(obj, "headerReadTimeoutMs", path, d.headerReadTimeoutMs, 100, 600_000),
        bodyIdleTimeoutMs=r.integer(obj, "bodyIdleTimeoutMs", path, d.bodyIdleTimeoutMs, 100, 600_000),
        sendIdleTimeoutMs=r.integer(obj, "sendIdleTimeoutMs", path, d.sendIdleTimeoutMs, 100, 3_600_000),
        keepAliveIdleMs=r.integer(obj, "keepAliveIdleMs", path, 0, 100, 3_600_000) or None,
        maxValidatedBodyBytes=r.integer(obj, "maxValidatedBodyBytes", path, d.maxValidatedBodyBytes, 0, 1 << 30),
    )


def _read_passthrough(r: _Reader, value: Any, path: str) -> WebSocketPassThrough:
    obj = r.mapping(value, path, tuple(WebSocketPassThrough.__dataclass_fields__))
    d = WebSocketPassThrough()
    return WebSocketPassThrough(
        enabled=r.boolean(obj, "enabled", path, d.enabled),
        maxMessageBytes=r.integer(obj, "maxMessageBytes", path, d.maxMessageBytes, 1, 64 * 1024 * 1024),
        idleTimeoutSeconds=r.number(obj, "idleTimeoutSeconds", path, d.idleTimeoutSeconds, 0.05),
        maxLifetimeSeconds=r.number(obj, "maxLifetimeSeconds", path, d.maxLifetimeSeconds, 0.05),
    )


def _read_iam(r: _Reader, value: Any, path: str) -> IamConfig:
    obj = r.mapping(value, path, tuple(IamConfig.__dataclass_fields__))
    d = IamConfig()
    region = r.string(obj, "region", path, d.region) or d.region
    if not REGION.match(region):
        r.error(f"{path}.region", f"'{region}' is not an AWS region name (like us-east-1)")
        region = d.region
    credentials = r.string(obj, "credentialsFile", path)
    if credentials is not None and not credentials.strip():
        r.error(f"{path}.credentialsFile", "is empty")
        credentials = None
    return IamConfig(credentialsFile=credentials, region=region)


def _read_server(r: _Reader, value: Any) -> ServerConfig:
    path = "server"
    known = tuple(ServerConfig.__dataclass_fields__)
    obj = r.mapping(value, path, known)
    d = ServerConfig()
    return ServerConfig(
        host=r.string(obj, "host", path, d.host) or d.host,
        port=r.integer(obj, "port", path, d.port, 0, 65535),
        workers=r.integer(obj, "workers", path, d.workers, 0, 1024),
        adminHost=r.string(obj, "adminHost", path, d.adminHost) or d.adminHost,
        adminPort=r.integer(obj, "adminPort", path, d.adminPort, 0, 65535),
        adminToken=r.string(obj, "adminToken", path),
        interface=r.string(obj, "interface", path, d.interface, choices=INTERFACES) or d.interface,
        accessLog=r.boolean(obj, "accessLog", path, d.accessLog),
        tlsCert=r.string(obj, "tlsCert", path),
        tlsKey=r.string(obj, "tlsKey", path),
        drainSeconds=r.number(obj, "drainSeconds", path, d.drainSeconds),
        reusePort=r.boolean(obj, "reusePort", path, d.reusePort),
        trustedHops=r.integer(obj, "trustedHops", path, d.trustedHops, 0, 32),
        cpuScheduling=r.string(obj, "cpuScheduling", path, d.cpuScheduling, choices=POLICIES) or d.cpuScheduling,
        limits=_read_limits(r, obj.get("limits"), f"{path}.limits"),
        iam=_read_iam(r, obj.get("iam"), f"{path}.iam"),
        webSocketPassThrough=_read_passthrough(r, obj.get("webSocketPassThrough"), f"{path}.webSocketPassThrough"),
    )


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
