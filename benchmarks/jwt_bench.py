"""The JWT scenario's issuer material: one RSA key made per harness run, its JWKS (served by the
upstream nginx at /.well-known/jwks.json, as an issuer's jwks_uri would be) and one RS256 token the
load generator sends with every request. PyJWT and cryptography are fastgw's own dependencies."""

from __future__ import annotations

import functools
import json
import time

ISSUER = "https://issuer.bench.invalid"
AUDIENCE = "bench-client"
KID = "bench-key-1"
JWKS_PATH = "/.well-known/jwks.json"


@functools.cache
def _material() -> tuple[str, str]:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": KID, "use": "sig", "alg": "RS256"})
    now = int(time.time())
    token = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "bench-user", "iat": now, "exp": now + 86_400,
                        "scope": "read"}, key, algorithm="RS256", headers={"kid": KID})
    return json.dumps({"keys": [public]}), token


def jwks_json() -> str:
    return _material()[0]


def token() -> str:
    return _material()[1]
