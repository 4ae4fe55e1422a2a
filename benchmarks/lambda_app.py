"""The Lambda handlers of the FUNCTION scenarios: the same 13-byte body the upstream serves at `/`.

Loaded by fastgw through `functions: {hello: {handler: lambda_app:hello, codeUri: <this directory>}}`.
Standard library only.
"""

from __future__ import annotations

from typing import Any

RESULT = {"statusCode": 200, "headers": {"content-type": "text/plain"}, "body": "Hello, World!"}


def hello(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A plain (sync) handler: fastgw runs it in the worker's thread pool."""
    return RESULT


async def hello_async(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """An async handler: awaited on the worker's event loop."""
    return RESULT


def authorize(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda authorizer of the fastgw-lambda-auth scenario (HTTP API simple response): allows the
    benchmark's token. Its result is cached, so the timed requests never call it."""
    token = (event.get("identitySource") or [""])[0]
    return {"isAuthorized": token == "Bearer bench-token", "context": {"user": "bench"}}
