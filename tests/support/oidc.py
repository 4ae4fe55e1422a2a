"""A test OIDC issuer on loopback: discovery, a JWKS of test keys, tokens signed with them.

It serves `/.well-known/openid-configuration` and `/jwks` from a threaded http.server, counts the
requests for each path, can rotate its keys (`add_key`, `remove_key`) and be taken down (`down()`:
the port refuses connections) and brought back (`up()`, same port).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def public_jwk(private: Any, kid: str, alg: str | None = None) -> dict[str, Any]:
    public = private.public_key()
    if isinstance(private, rsa.RSAPrivateKey):
        data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
    elif isinstance(private, ed25519.Ed25519PrivateKey):
        data = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(public))
    else:
        data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
    data["kid"] = kid
    data["use"] = "sig"
    if alg is not None:
        data["alg"] = alg
    return data


class Issuer:
    def __init__(self, path: str = ""):
        self.path = path  # the issuer URL's path (a Cognito-like /us-east-1_pool)
        self.keys: dict[str, tuple[Any, str]] = {}  # kid -> (private key, alg)
        self.published: dict[str, dict[str, Any]] = {}  # kid -> public JWK
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.port = 0

    # -- keys and tokens ---------------------------------------------------------------------------
    def add_key(self, kid: str, private: Any | None = None, alg: str = "RS256", jwk_alg: bool = False) -> Any:
        private = private if private is not None else (rsa_key() if alg[:2] in ("RS", "PS") else ec_key())
        with self.lock:
            self.keys[kid] = (private, alg)
            self.published[kid] = public_jwk(private, kid, alg if jwk_alg else None)
        return private

    def remove_key(self, kid: str) -> None:
        with self.lock:
            self.published.pop(kid, None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        out = {"iss": self.url, "sub": "user-1", "aud": "api://fastgw", "iat": now, "nbf": now - 5,
               "exp": now + 600, "scope": "read write"}
        for key, value in overrides.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
        return out

    def token(self, kid: str = "k1", alg: str | None = None, headers: dict[str, Any] | None = None,
              **claims: Any) -> str:
        private, key_alg = self.keys[kid]
        return jwt.encode(self.claims(**claims), private, algorithm=alg or key_alg,
                          headers={"kid": kid, **(headers or {})})

    def requests(self, path: str) -> int:
        with self.lock:
            return self.counts[path]

    # -- the server --------------------------------------------------------------------------------
    def start(self, port: int = 0) -> Issuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                with issuer.lock:
                    issuer.counts[path] += 1
                    keys = list(issuer.published.values())
                if path == f"{issuer.path}/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": f"http://127.0.0.1:{issuer.port}/jwks"}
                elif path == "/jwks":
                    body = {"keys": keys}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port or self.port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def down(self) -> None:
        """Taken down: the port refuses connections."""
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def up(self) -> None:
        self.start(self.port)

    stop = down


def main() -> None:
    """A local issuer for trying examples/jwt-api.yaml: prints a token, serves until interrupted."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--port", type=int, default=9400)
    ap.add_argument("--audience", default="api://fastgw")
    ap.add_argument("--scope", default="read write")
    args = ap.parse_args()
    issuer = Issuer()
    issuer.add_key("k1", alg="RS256")
    issuer.start(args.port)
    print(f"issuer {issuer.url}; a token valid for 1 h:", flush=True)
    print(issuer.token(aud=args.audience, scope=args.scope, exp=int(time.time()) + 3600), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        issuer.stop()


if __name__ == "__main__":
    main()
