"""API key values: generated, checked and hashed here; stored and compared only as SHA-256 digests.

A value is 20 to 128 visible ASCII characters (AWS: 20-128). SHA-256 without a salt is enough for
values of that length drawn at random (the generated ones carry ~238 bits); it keeps lookups a
single dict access on the digest. The digest is then compared with hmac.compare_digest, so the
time a check takes never depends on how much of a guessed value was right.
"""

from __future__ import annotations

import hashlib
import secrets
import string

from ...config.model import API_KEY_VALUE

ALPHABET = string.ascii_letters + string.digits
GENERATED_LENGTH = 40


def digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("latin-1", "replace")).digest()


def valid_value(value: str) -> bool:
    return API_KEY_VALUE.match(value) is not None


def new_value() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(GENERATED_LENGTH))


def new_id() -> str:
    """A runtime key's id (AWS key ids are 10 random characters)."""
    return "r" + secrets.token_hex(5)


def config_key_id(name: str) -> str:
    """A config key's id: stable across restarts and value rotations, derived from its name."""
    return "c" + hashlib.blake2b(name.encode(), digest_size=5).hexdigest()
