"""Back-pressure for streamed responses over RSGI, measured on the client connection's socket.

granian's RSGI stream (2.8.x) never waits: `send_bytes` puts each chunk on an unbounded channel
that the connection's task writes out as the client reads. A client that stops reading would make
the worker hold the rest of the response (measured: +403 MiB RSS for a stalled 400 MB stream). The
channel's length cannot be read, but what left it can: the kernel counts every byte written to the
connection's socket (TCP_INFO: sent + not yet sent). So a stream counts what it handed to granian,
and before handing more it waits while `handed - written` is above HIGH_WATER_BYTES. The wait ends
when the client reads again, or the relay's `sendIdleTimeoutMs` ends the stream.

The socket is granian's: a worker finds it among its descriptors by the connection's two addresses
(`find_socket`, a few system calls per descriptor) and keeps a duplicate while a stream is metered.
That costs too much for every response, so a stream is metered only once it handed FREE_BYTES
(as much as a response read whole, up to 256 KiB, hands over at once). What one stalled client can
make a worker hold is therefore about FREE_BYTES + HIGH_WATER_BYTES + one chunk per stream.

One meter serves every stream of a connection (HTTP/2 multiplexes them on one socket): the written
count is the connection's, so it is compared with everything the connection's metered streams
handed. Response heads and framing (chunk sizes, HTTP/2 frame headers) are written but not counted
as handed, so `pending` is an estimate low by those few bytes.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import struct

FREE_BYTES = 256 * 1024
HIGH_WATER_BYTES = 1024 * 1024
POLL_FIRST, POLL_MAX = 0.001, 0.05  # seconds between two looks at a full connection (doubling)
TCP_INFO_SIZE = 232
TCP_ESTABLISHED, TCP_CLOSE_WAIT = 1, 8
INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class ClientGone(Exception):
    """The connection's socket is no longer open to the client."""


def written_bytes(sock: socket.socket) -> tuple[int, int]:
    """(TCP state, bytes the server wrote to the socket so far): tcpi_bytes_sent - tcpi_bytes_retrans
    + tcpi_notsent_bytes (Linux 4.19+), read in one call."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
    notsent = struct.unpack_from("I", info, 144)[0]
    sent, retrans = struct.unpack_from("QQ", info, 200)
    return info[0], sent - retrans + notsent


class ConnectionMeter:
    """One client connection's socket (a duplicate descriptor) and what its streams handed."""

    __slots__ = ("key", "sock", "base", "handed", "streams")

    def __init__(self, key: tuple[str, str], sock: socket.socket):
        self.key = key
        self.sock = sock
        self.base = written_bytes(sock)[1]
        self.handed = 0
        self.streams = 0

    def pending(self) -> int:
        """Bytes handed to granian that have not reached the socket; raises ClientGone."""
        state, written = written_bytes(self.sock)
        if state != TCP_ESTABLISHED and state != TCP_CLOSE_WAIT:
            raise ClientGone()
        return self.handed - (written - self.base)

    async def wait_for_room(self) -> None:
        """Return once the connection's pending bytes are at most HIGH_WATER_BYTES (the caller bounds
        the wait with its send timeout)."""
        pause = POLL_FIRST
        while self.pending() > HIGH_WATER_BYTES:
            await asyncio.sleep(pause)
            pause = min(pause * 2, POLL_MAX)


class StreamPacer:
    """One streamed response's side of the meter: the adapter calls `handed(n)` after each chunk it
    handed to the server, and `close()` when the stream ends, however it ends."""

    __slots__ = ("client", "server", "free", "meter")

    def __init__(self, client: str, server: str, free: int):
        self.client = client
        self.server = server
        self.free = free
        self.meter: ConnectionMeter | None = None

    async def handed(self, size: int) -> None:
        """Count `size` more bytes handed; wait while the connection has too many pending. Raises
        ClientGone when the connection's socket is closed or cannot be found."""
        meter = self.meter
        if meter is None:
            self.free -= size
            if self.free >= 0:
                return
            meter = self.meter = open_meter(self.client, self.server)
            if meter is None:
                raise ClientGone()
        meter.handed += size
        await meter.wait_for_room()

    def close(self) -> None:
        if self.meter is not None:
            close_meter(self.meter)
            self.meter = None

    def shut_down(self) -> None:
        """Shut the client connection down (a failed stream must fail at the client)."""
        meter = self.meter
        if meter is None:
            shut_down_connection(self.client, self.server)
            return
        try:
            meter.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close()


def free_bytes(protocol: str) -> int:
    """What a stream hands before it is metered. HTTP/2 streams are metered from their first byte:
    a connection carries up to 100 of them at once."""
    return 0 if protocol == "HTTP/2" else FREE_BYTES


# Meters of the connections with a metered stream, by (client address, server address).
METERS: dict[tuple[str, str], ConnectionMeter] = {}


def open_meter(client: str, server: str) -> ConnectionMeter | None:
    """The meter of this connection (shared by its streams), or None when its socket is not found."""
    key = (client, server)
    meter = METERS.get(key)
    if meter is None:
        sock = find_socket(client, server)
        if sock is None:
            return None
        meter = METERS[key] = ConnectionMeter(key, sock)
    meter.streams += 1
    return meter


def close_meter(meter: ConnectionMeter) -> None:
    """A metered stream ended. The duplicate descriptor is closed with the connection's last stream:
    it keeps the socket open, so it must not outlive the streams."""
    meter.streams -= 1
    if meter.streams <= 0:
        if METERS.get(meter.key) is meter:
            del METERS[meter.key]
        meter.sock.close()


def find_socket(client: str, server: str) -> socket.socket | None:
    """A duplicate of this worker's socket of the client connection from `client` to `server`
    (host:port as RSGI gives them), found among the process's descriptors by its two addresses.
    Costs a few system calls per open descriptor. The caller closes it."""
    peer, local = host_port(client), host_port(server)
    if peer is None or local is None:
        return None
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = int(name)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except (OSError, ValueError):
            continue
        try:
            if sock.family in INET_FAMILIES and sock.type == socket.SOCK_STREAM and sock.getsockname()[1] == local[1]:
                host, port = sock.getpeername()[:2]
                if port == peer[1] and host.removeprefix("::ffff:") == peer[0]:
                    return sock
        except OSError:
            pass
        sock.close()
    return None


def shut_down_connection(client: str, server: str) -> None:
    """Shut down this worker's socket of the client connection (the abort of a failed stream)."""
    sock = find_socket(client, server)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.close()


def host_port(address: str) -> tuple[str, int] | None:
    host, _, port = address.rpartition(":")
    return (host.strip("[]").removeprefix("::ffff:"), int(port)) if port.isdigit() else None
