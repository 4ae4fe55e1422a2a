"""Example Lambda handlers for examples/lambda-api.yaml and examples/pets-http-api.yaml.

Each is a plain AWS Lambda handler: `handler(event, context)` with API Gateway's proxy event
(payload 1.0 for REST APIs, 2.0 for HTTP APIs) and a proxy result.
"""

from __future__ import annotations

import json
import os
from typing import Any

PETS = {"1": {"id": "1", "type": "dog", "price": 249.99}, "2": {"id": "2", "type": "cat", "price": 124.99}}


def list_pets(event: dict[str, Any], context: Any) -> dict[str, Any]:
    kind = (event.get("queryStringParameters") or {}).get("type")
    pets = [p for p in PETS.values() if kind in (None, p["type"])]
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(pets)}


def get_pet(event: dict[str, Any], context: Any) -> dict[str, Any]:
    pet = PETS.get((event.get("pathParameters") or {}).get("petId", ""))
    if pet is None:
        return {"statusCode": 404, "body": json.dumps({"message": "no such pet"})}
    # Stage variables reach the function too (the canary overrides `flavour`).
    flavour = (event.get("stageVariables") or {}).get("flavour", "stable")
    return {"statusCode": 200, "headers": {"x-flavour": flavour}, "body": json.dumps(pet)}


async def get_pet_v2(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """An async handler (awaited on the worker's event loop); payload 2.0 lets it return the object."""
    pet = PETS.get((event.get("pathParameters") or {}).get("petId", ""))
    return pet if pet is not None else {"statusCode": 404, "body": "{}"}


def whoami(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "body": json.dumps({"function": context.function_name, "pid": os.getpid(),
                                                   "requestId": event["requestContext"]["requestId"]})}
