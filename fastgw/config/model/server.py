"""The `server` section: listeners, workers, the admin API, TLS, draining, request limits, the IAM
credentials the gateway trusts (AWS_IAM routes) and trace export.

Every setting can also come from a `FASTGW_*` environment variable named after its path
(`drainSeconds` -> FASTGW_DRAIN_SECONDS, `limits.maxBodyBytes` -> FASTGW_LIMITS_MAX_BODY_BYTES,
`tracing.otlpEndpoint` -> FASTGW_TRACING_OTLP_ENDPOINT): a variable that is set beats the file, and
is read and checked like the file's value (a bad one is a problem naming the variable). Container
images set them without editing the mounted config file."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ...scheduling import POLICIES
from ..loader import Problem
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
class WebSocketListener:
    """`server.webSocket`: the listener of WebSocket APIs (fastgw/websocket/listener.py). As in AWS, a
    WebSocket API has an endpoint of its own: its own port, next to the HTTP port by default. Restart only."""

    host: str | None = None  # None: server.host
    port: int | None = None  # None: server.port + 1
    pingIntervalSeconds: float = 20.0  # a keepalive ping this often (0: none)
    pingTimeoutSeconds: float = 20.0  # no pong this long after a ping: closed with 1011
    maxPingsPerSecond: float = 10.0  # a client pinging faster (over a 1 s burst of as many) is closed with 1008


@dataclass(slots=True)
class IamConfig:
    """`server.iam`: who may call AWS_IAM routes (fastgw/policies/authorizers/iam.py)."""

    credentialsFile: str | None = None  # AWS shared-credentials INI; relative to the config file (--iam-credentials)
    region: str = "us-east-1"  # the region a SigV4 credential scope must name


@dataclass(slots=True)
class TracingConfig:
    """`server.tracing`: OpenTelemetry export (fastgw/tracing.py). No endpoint: nothing is exported."""

    otlpEndpoint: str | None = None  # OTLP/HTTP protobuf, e.g. http://collector:4318/v1/traces
    sampleRate: float = 0.01  # share of requests exported (0-1); an incoming sampled traceparent is kept
    serviceName: str = "fastgw"  # the resource's service.name
    batchSize: int = 512  # spans per export request
    flushIntervalMs: int = 1000  # a batch goes out at least this often
    queueSize: int = 4096  # spans waiting per worker; more are dropped (counted), never blocking a request


@dataclass(slots=True)
class UpstreamSettings:
    """`server.upstream`: what every upstream pool of a worker is made with (fastgw/upstream.py)."""

    # Requests in flight to one upstream (per worker, connecting ones included) past which the next is
    # answered 503 at once: Envoy's circuit breaker `max_requests` (1024). An upstream group sets its
    # own (`upstreamGroups.<name>.circuitBreaker.maxRequests`). RELIABILITY.md F-13.
    maxRequests: int = 1024
    # A host name is looked up again after this long; connections to an address it no longer has are
    # closed once idle (RELIABILITY.md F-30). Envoy's `dns_refresh_rate` is 5 s, nginx's `valid` 30 s.
    dnsRefreshSeconds: float = 30.0
    # A hosts file (`/etc/hosts` format) read before the system resolver at each lookup: static names
    # for upstreams that need no DNS, and a test's stub resolver. Relative to the config file.
    hostsFile: str | None = None


@dataclass(slots=True)
class OverloadSettings:
    """`server.overload`: load shedding per worker (fastgw/pipeline.py `Gateway.handle`, RELIABILITY.md F-23).
    Past either limit a new request is answered 503 with Retry-After before anything of it is read;
    requests already admitted finish."""

    maxRequestsInFlight: int = 10_000  # requests being handled by one worker (0: no limit)
    # The worker's resident memory past which it stops admitting requests (0: no limit); at 95 % of it
    # freed heap memory is given back to the system first (Envoy's overload manager: 95 % shrink, 98 % stop).
    maxRssBytes: int = 0
    retryAfterSeconds: int = 1  # the Retry-After of a shed request


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
    cpuScheduling: str = "auto"  # auto | normal | batch: SCHED_BATCH workers (fastgw/scheduling.py)
    limits: Limits = field(default_factory=Limits)
    iam: IamConfig = field(default_factory=IamConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    webSocketPassThrough: WebSocketPassThrough = field(default_factory=WebSocketPassThrough)
    webSocket: WebSocketListener = field(default_factory=WebSocketListener)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    overload: OverloadSettings = field(default_factory=OverloadSettings)


def websocket_address(server: ServerConfig) -> tuple[str, int]:
    """Where the WebSocket APIs listen: `server.webSocket` host and port, else the HTTP host and port + 1."""
    listener = server.webSocket
    host = listener.host or server.host
    return host, listener.port if listener.port is not None else (server.port + 1 if server.port else 0)


# Sections of `server` whose fields have variables of their own (FASTGW_LIMITS_*, FASTGW_IAM_*, ...).
SECTIONS: dict[str, Any] = {"limits": Limits, "iam": IamConfig, "tracing": TracingConfig,
                            "webSocketPassThrough": WebSocketPassThrough, "webSocket": WebSocketListener,
                            "upstream": UpstreamSettings, "overload": OverloadSettings}
SECRET_FIELDS = ("adminToken",)  # never echoed in a problem


def env_name(path: str) -> str:
    """`limits.maxBodyBytes` -> FASTGW_LIMITS_MAX_BODY_BYTES."""
    return "FASTGW_" + re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", path).replace(".", "_").upper()


def env_settings(env: Any = None) -> dict[str, tuple[str, str]]:
    """The server settings the environment sets: path -> (variable, text)."""
    env = os.environ if env is None else env
    found: dict[str, tuple[str, str]] = {}
    for name in ServerConfig.__dataclass_fields__:
        fields = SECTIONS[name].__dataclass_fields__ if name in SECTIONS else (None,)
        for sub in fields:
            path = f"{name}.{sub}" if sub else name
            variable = env_name(path)
            text = env.get(variable)
            if text is not None and text != "":
                found[path] = (variable, text)
    return found


def _env_value(text: str, default: Any) -> Any:
    """A variable's text as the file would give it: booleans also as 1/0/yes/no; numbers stay text
    (the readers convert and check them)."""
    if isinstance(default, bool):
        lowered = text.strip().lower()
        return {"1": True, "yes": True, "on": True, "0": False, "no": False, "off": False}.get(lowered, lowered)
    return text


def _with_env(value: Any, found: dict[str, tuple[str, str]]) -> Any:
    """The `server` mapping with the environment's settings laid over it (the file's data is not changed)."""
    if not found or (value is not None and not isinstance(value, dict)):
        return value
    merged = dict(value or {})
    defaults = ServerConfig()
    for path, (_, text) in found.items():
        name, _, sub = path.partition(".")
        if sub:
            section = merged.get(name)
            section = dict(section) if isinstance(section, dict) else {}
            section[sub] = _env_value(text, getattr(getattr(defaults, name), sub))
            merged[name] = section
        else:
            merged[name] = _env_value(text, getattr(defaults, name))
    return merged


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


def _read_listener(r: _Reader, value: Any, path: str) -> WebSocketListener:
    obj = r.mapping(value, path, tuple(WebSocketListener.__dataclass_fields__))
    d = WebSocketListener()
    port = obj.get("port")
    return WebSocketListener(
        host=r.string(obj, "host", path) or None,
        port=None if port is None else r.integer(obj, "port", path, 0, 1, 65535),
        pingIntervalSeconds=r.number(obj, "pingIntervalSeconds", path, d.pingIntervalSeconds),
        pingTimeoutSeconds=r.number(obj, "pingTimeoutSeconds", path, d.pingTimeoutSeconds, 0.05),
        maxPingsPerSecond=r.number(obj, "maxPingsPerSecond", path, d.maxPingsPerSecond, 0.1),
    )


def _read_upstream(r: _Reader, value: Any, path: str) -> UpstreamSettings:
    obj = r.mapping(value, path, tuple(UpstreamSettings.__dataclass_fields__))
    d = UpstreamSettings()
    hosts = r.string(obj, "hostsFile", path)
    if hosts is not None and not hosts.strip():
        r.error(f"{path}.hostsFile", "is empty")
        hosts = None
    refresh = r.number(obj, "dnsRefreshSeconds", path, d.dnsRefreshSeconds, 0.1)
    if refresh > 86_400:
        r.error(f"{path}.dnsRefreshSeconds", f"must be at most 86400 (a day); got {refresh}")
        refresh = d.dnsRefreshSeconds
    return UpstreamSettings(
        maxRequests=r.integer(obj, "maxRequests", path, d.maxRequests, 1, 1_000_000),
        dnsRefreshSeconds=refresh,
        hostsFile=hosts,
    )


def _read_overload(r: _Reader, value: Any, path: str) -> OverloadSettings:
    obj = r.mapping(value, path, tuple(OverloadSettings.__dataclass_fields__))
    d = OverloadSettings()
    rss = r.integer(obj, "maxRssBytes", path, d.maxRssBytes, 0, 1 << 50)
    if 0 < rss < 64 * 1024 * 1024:
        r.error(f"{path}.maxRssBytes", f"must be 0 (no limit) or at least 64 MiB (67108864); got {rss}: "
                "a worker needs that much to start")
        rss = d.maxRssBytes
    if rss and not os.path.exists("/proc/self/statm"):  # fail closed: a limit fastgw cannot watch
        r.error(f"{path}.maxRssBytes", "needs /proc/self/statm (Linux) to read the worker's memory")
        rss = d.maxRssBytes
    return OverloadSettings(
        maxRequestsInFlight=r.integer(obj, "maxRequestsInFlight", path, d.maxRequestsInFlight, 0, 10_000_000),
        maxRssBytes=rss,
        retryAfterSeconds=r.integer(obj, "retryAfterSeconds", path, d.retryAfterSeconds, 1, 3600),
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


def _read_tracing(r: _Reader, value: Any, path: str) -> TracingConfig:
    obj = r.mapping(value, path, tuple(TracingConfig.__dataclass_fields__))
    d = TracingConfig()
    endpoint = r.string(obj, "otlpEndpoint", path)
    if endpoint is not None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            r.error(f"{path}.otlpEndpoint", f"must be an http:// or https:// URL (OTLP/HTTP), not '{endpoint}'")
            endpoint = None
    rate = r.number(obj, "sampleRate", path, d.sampleRate)
    if rate > 1:
        r.error(f"{path}.sampleRate", f"must be between 0 and 1; got {rate}")
        rate = d.sampleRate
    return TracingConfig(
        otlpEndpoint=endpoint,
        sampleRate=rate,
        serviceName=r.string(obj, "serviceName", path, d.serviceName) or d.serviceName,
        batchSize=r.integer(obj, "batchSize", path, d.batchSize, 1, 100_000),
        flushIntervalMs=r.integer(obj, "flushIntervalMs", path, d.flushIntervalMs, 10, 600_000),
        queueSize=r.integer(obj, "queueSize", path, d.queueSize, 1, 10_000_000),
    )


def _read_server(r: _Reader, value: Any, env: Any = None) -> ServerConfig:
    path = "server"
    found = env_settings(env)
    before = len(r.problems)
    server = _read_server_fields(r, _with_env(value, found))
    if found:  # a problem with a value the environment gave names the variable, not the file
        for i in range(before, len(r.problems)):
            problem = r.problems[i]
            key = problem.path.removeprefix(path + ".")
            if key in found:
                variable, text = found[key]
                shown = "" if key in SECRET_FIELDS else f"={text!r}"
                # no path: the file's line would point at the wrong place
                r.problems[i] = Problem("", f"environment {variable}{shown} ({problem.path}): {problem.message}")
    return server


def _read_server_fields(r: _Reader, value: Any) -> ServerConfig:
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
        tracing=_read_tracing(r, obj.get("tracing"), f"{path}.tracing"),
        webSocketPassThrough=_read_passthrough(r, obj.get("webSocketPassThrough"), f"{path}.webSocketPassThrough"),
        webSocket=_read_listener(r, obj.get("webSocket"), f"{path}.webSocket"),
        upstream=_read_upstream(r, obj.get("upstream"), f"{path}.upstream"),
        overload=_read_overload(r, obj.get("overload"), f"{path}.overload"),
    )


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
