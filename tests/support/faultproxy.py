"""A fault-injecting TCP proxy for tests, modelled on toxiproxy's toxics (RELIABILITY.md §c).

    proxy = FaultProxy(("127.0.0.1", redis_port)).start()   # listen on proxy.port
    proxy.latency = 2.0          # every chunk waits 2 s before it is passed on (both directions)
    proxy.bandwidth = 100        # bytes per second, both directions (a slow link)
    proxy.down = True            # new connections are reset at once; open ones are cut
    proxy.reset_after = 0        # reset each new connection after this many upstream->client bytes
    proxy.stall = True           # accept and pass nothing on (a blackhole once connected)
    proxy.hold = True            # chunks sent to the target while set wait until release(): commands
                                 # held in flight, run late (after their client gave up) while chunks
                                 # sent after `hold = False` pass
    proxy.stop()

Toxics apply to the chunks forwarded after they are set. Threads, not asyncio: a test sets a
toxic from its own thread and the next chunk sees it.
"""
from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time


def _reset(sock: socket.socket) -> None:
    # SO_LINGER 0: close() sends RST instead of FIN, the "reset_peer" toxic.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    def __init__(self, target: tuple[str, int], port: int = 0) -> None:
        self.target = target
        self.latency = 0.0
        self.bandwidth = 0  # bytes/s; 0 = unlimited
        self.down = False
        self.stall = False
        self.reset_after: int | None = None
        self.hold = False
        self.held = 0  # chunks waiting for release()
        self.held_answered = 0  # chunks the target sent back, after release(), on connections that had one held
        self._gate = threading.Event()
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", port), backlog=256)
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self.release()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut()
        self._thread.join(5)

    def cut(self) -> None:
        """Reset every open connection (the proxy keeps accepting)."""
        with self._lock:
            open_now = list(self._open)
            self._open.clear()
        for sock in open_now:
            _reset(sock)

    def release(self) -> None:
        """Let the held chunks through (to a target whose client may be gone)."""
        gate, self._gate = self._gate, threading.Event()
        gate.set()

    def set_down(self, down: bool) -> None:
        self.down = down
        if down:
            self.cut()

    # -- internals -----------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            if self.down:
                _reset(client)
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        server.settimeout(None)
        with self._lock:
            self._open.update((client, server))
        budget = [self.reset_after]
        held = [False]  # a chunk of this connection was held: its answers are counted after release
        threading.Thread(target=self._pump, args=(client, server, None, held, True), daemon=True).start()
        self._pump(server, client, budget, held, False)

    def _pump(self, source: socket.socket, sink: socket.socket, budget: list[int | None] | None,
              held: list[bool], to_target: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                    return
                if to_target and self.hold:
                    held[0] = True
                    gate = self._gate
                    with self._lock:
                        self.held += 1
                    gate.wait()
                    with self._lock:
                        self.held -= 1
                elif not to_target and held[0]:
                    with self._lock:
                        self.held_answered += 1
                while self.stall and not self._stopped.is_set():
                    time.sleep(0.01)
                if self.latency:
                    time.sleep(self.latency)
                if budget is not None and budget[0] is not None:
                    if len(data) >= budget[0]:
                        sink.sendall(data[:budget[0]])
                        _reset(sink)
                        _reset(source)
                        return
                    budget[0] -= len(data)
                if self.bandwidth:
                    for i in range(0, len(data), max(1, self.bandwidth // 10)):
                        sink.sendall(data[i:i + max(1, self.bandwidth // 10)])
                        time.sleep(0.1)
                else:
                    sink.sendall(data)
        except OSError:
            _reset(sink)
            _reset(source)
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
