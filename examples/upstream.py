"""A small example upstream for examples/gateway.yaml: echoes each request back as JSON.

    python examples/upstream.py [--port 9001]

`/slow` waits 2 seconds before answering (the example route times out after 0.5 s).

Each answer leaves in one write on a TCP_NODELAY socket. The stdlib default (headers and body in two
writes, Nagle on) holds the body back until the client's delayed ACK: about 40 ms on every kept-alive
request, which a latency measurement through the gateway would then show as the gateway's.
"""

from __future__ import annotations

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY on every accepted connection
    wbufsize = 1 << 16  # headers and body buffered, sent in one write when the answer is complete

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/slow"):
            time.sleep(2)
        payload = json.dumps({
            "method": self.command,
            "path": self.path,
            "headers": dict(self.headers.items()),
            "body": body.decode("utf-8", "replace"),
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _answer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Echo)
    server.daemon_threads = True
    print(f"example upstream on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
