"""Test Lambda handlers: each returns what the tests check (the event it received, a fixed result, ...)."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The event and the context as the JSON body (payload 1.0 and 2.0 both accept this result)."""
    import json

    body = {
        "event": event,
        "context": {
            "function_name": context.function_name,
            "aws_request_id": context.aws_request_id,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "remaining": context.get_remaining_time_in_millis(),
        },
    }
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}


async def echo_async(event: dict[str, Any], context: Any) -> dict[str, Any]:
    await asyncio.sleep(0)
    return echo(event, context)


def sleepy(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A blocking 100 ms handler (the concurrency acceptance)."""
    time.sleep(0.1)
    return {"statusCode": 200, "body": "slept"}


def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
    time.sleep(2.0)
    return {"statusCode": 200, "body": "too late"}


def boom(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise RuntimeError("handler failed")


def result(event: dict[str, Any], context: Any) -> Any:
    """Returns the result named by the `case` query parameter (response mapping tests)."""
    case = (event.get("queryStringParameters") or {}).get("case", "")
    return RESULTS[case]


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
RESULTS: dict[str, Any] = {
    "plain": {"statusCode": 201, "headers": {"x-one": "1"}, "body": "created"},
    "multi": {"statusCode": 200, "headers": {"x-a": "single", "x-b": "b"},
              "multiValueHeaders": {"x-a": ["m1", "m2"]}, "body": "{}"},
    "binary": {"statusCode": 200, "headers": {"content-type": "image/png"}, "isBase64Encoded": True,
               "body": base64.b64encode(PNG).decode()},
    "no-status": {"body": "x"},
    "extra-key": {"statusCode": 200, "body": "x", "unexpected": True},
    "body-not-string": {"statusCode": 200, "body": {"a": 1}},
    "bad-status": {"statusCode": "abc", "body": ""},
    "not-a-dict": ["a", "list"],
    "bad-base64": {"statusCode": 200, "isBase64Encoded": True, "body": "***"},
    "v2-cookies": {"statusCode": 200, "cookies": ["a=1; Path=/", "b=2"], "body": "ok"},
    "v2-string": "Hello",
    "v2-object": {"message": "hi"},
    "v2-number": 42,
}


def lookup_pet(event: dict[str, Any], context: Any) -> Any:
    """A Lambda non-proxy handler: the event is what the request template made of the request."""
    pet_id = event.get("petId")
    if pet_id == "missing":
        raise LookupError(f"NotFound: no pet {pet_id}")
    if pet_id == "crash":
        raise RuntimeError("something else broke")
    return {"id": pet_id, "kind": event.get("kind"), "names": ["Rex", "Fido"], "caller": event.get("caller")}


def calc(event: dict[str, Any], context: Any) -> Any:
    """AWS's sample Calc function of the simple-calc API (Node.js in the developer guide), in Python:
    numbers behave like JavaScript's (an integral result prints without a fraction)."""

    def number(value: Any) -> float | int:
        result = float(value)
        return int(result) if result.is_integer() else result

    if event.get("a") is None or event.get("b") is None or event.get("op") is None:
        raise ValueError("400 Invalid Input")
    try:
        a, b = number(event["a"]), number(event["b"])
    except (TypeError, ValueError):
        raise ValueError("400 Invalid Operand") from None
    operations = {"+": lambda: a + b, "add": lambda: a + b, "-": lambda: a - b, "sub": lambda: a - b,
                  "*": lambda: a * b, "mul": lambda: a * b, "/": lambda: number(a / b) if b else None,
                  "div": lambda: number(a / b) if b else None}
    if event["op"] not in operations:
        raise ValueError("400 Invalid Operator")
    return {"a": a, "b": b, "op": event["op"], "c": operations[event["op"]]()}


CALLS: dict[str, int] = {}


def counted(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Counts its invocations (per worker): a cached route calls it once."""
    CALLS["n"] = CALLS.get("n", 0) + 1
    return {"statusCode": 200, "headers": {"content-type": "text/plain"}, "body": f"call {CALLS['n']}"}


HEADER_CASES: dict[str, dict[str, str]] = {
    # fields that frame the response or name the server: AWS remaps or drops them (REST, awsCompat)
    "framing": {"Transfer-Encoding": "chunked", "Content-Length": "5", "Connection": "close", "Keep-Alive": "timeout=1",
                "Upgrade": "h2c", "Trailer": "x-t", "TE": "trailers", "Date": "Mon, 01 Jan 2001 00:00:00 GMT",
                "Server": "lambda", "WWW-Authenticate": "Basic realm=x", "Authorization": "Bearer y",
                "User-Agent": "fn", "X-Ok": "1"},
    # fields that are not valid HTTP: never sent
    "invalid": {"X-Ctl": "a\x01b", "X-Crlf": "a\r\nX-Injected: 1", "X-Nul": "a\x00b", "X-Del": "a\x7fb",
                "X-Wide": "snow \u2603", "Bad Name": "v", "X-Lf": "a\nb", "X-Ok": "1", "X-Latin": "caf\xe9"},
}


def header_result(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A result with the response headers the test asks for: a named case (`?case=`), or the request's
    JSON body as the headers object (the fuzz test)."""
    import json

    case = (event.get("queryStringParameters") or {}).get("case")
    headers = HEADER_CASES[case] if case else json.loads(event.get("body") or "{}")
    return {"statusCode": 200, "headers": headers, "body": "hello"}


async def hold(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Marks its arrival in $FASTGW_TEST_GATE, then holds the request (and its body, in memory) until
    the test creates the file `open` there (at most 30 s); answers the body's length."""
    import os
    import uuid
    from pathlib import Path

    gate = Path(os.environ["FASTGW_TEST_GATE"])
    (gate / f"arrived-{uuid.uuid4().hex}").touch()
    deadline = time.monotonic() + 30
    while not (gate / "open").exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return {"statusCode": 200, "body": str(len(event.get("body") or ""))}
