"""Upstream host names to addresses (RELIABILITY.md F-30): a hosts file first, then the system resolver.

`server.upstream.hostsFile` names a file in `/etc/hosts` format that is read at every lookup, so an
edit takes effect at the next refresh of each name (`server.upstream.dnsRefreshSeconds`); names it
does not list go to `getaddrinfo` (the event loop runs it on a thread: never on the request path of a
connection that has an address already). fastgw/upstream.py keeps the last good answer per pool.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

Address = tuple[int, str]  # (address family, IP address text)


def is_address(host: str) -> bool:
    """An IP literal needs no lookup."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def read_hosts(path: str) -> dict[str, list[Address]]:
    """A hosts file: name (lower case) -> its addresses in file order. Raises OSError when unreadable;
    malformed lines are skipped, as the C library does."""
    names: dict[str, list[Address]] = {}
    with open(path, encoding="utf-8", errors="replace") as file:
        for line in file:
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            try:
                ip = ipaddress.ip_address(fields[0].split("%", 1)[0])
            except ValueError:
                continue
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            for name in fields[1:]:
                found = names.setdefault(name.lower(), [])
                if (family, str(ip)) not in found:
                    found.append((family, str(ip)))
    return names


async def lookup(loop: asyncio.AbstractEventLoop, host: str, port: int, hosts_file: str | None) -> tuple[Address, ...]:
    """The addresses of `host`, in the order to try them. Raises OSError (socket.gaierror included)."""
    if hosts_file is not None:
        listed = read_hosts(hosts_file).get(host.lower())
        if listed:
            return tuple(listed)
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    found: list[Address] = []
    for family, _, _, _, sockaddr in infos:
        address = (int(family), str(sockaddr[0]))
        if address not in found:
            found.append(address)
    if not found:
        raise socket.gaierror(socket.EAI_NONAME, f"no address for {host}")
    return tuple(found)
