"""The OpenAPI document describes every route, and real answers fit it.

A full schemathesis run is the stronger check (see the report in the store
notes); this file keeps the cheap part of it in the suite: a small checker
for the JSON Schema subset the document uses, run on real answers.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from tests.store.helpers import make_record

from lms_metrics_proxy.api import setup_api
from lms_metrics_proxy.api.openapi import openapi_document
from lms_metrics_proxy.config import Settings

from .conftest import Client, Parts

JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def problems(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Where `value` breaks `schema` (type, required, enum, items, $ref)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = openapi_document()["components"]["schemas"][name]
    found = type_problems(value, schema, where)
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, dict):
        missing = set(schema.get("required", [])) - set(value)
        found += [f"{where}: missing {name}" for name in sorted(missing)]
        for name, inner in schema.get("properties", {}).items():
            if name in value:
                found += problems(value[name], inner, f"{where}.{name}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += problems(item, schema["items"], f"{where}[{index}]")
    return found


def type_problems(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    if "type" not in schema:
        return []
    names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    for name in names:
        is_bool = isinstance(value, bool)
        if isinstance(value, JSON_TYPES[name]) and (name == "boolean" or not is_bool):
            return []
    return [f"{where}: {value!r} is not {names}"]


def answer_schema(path: str, status: int) -> dict[str, Any]:
    operation = openapi_document()["paths"][path]["get"]
    response = operation["responses"][str(status)]
    return dict(response["content"]["application/json"]["schema"])


def test_every_route_is_described_and_nothing_more() -> None:
    app = web.Application()
    setup_api(app, Parts(None, None), Settings())

    routes = {resource.canonical for resource in app.router.resources()}

    assert routes == set(openapi_document()["paths"])
    assert openapi_document()["openapi"] == "3.1.0"


async def test_answers_fit_the_document(client: Client, parts: Parts) -> None:
    await parts.write(
        make_record(details={"runtime": "x"}, tokens_per_second=41.5, ttft_ms=12),
        make_record(model=None, client="cli", input_tokens=None, is_error=True),
    )
    [first, _] = (await (await client.get("/stats/recent")).json())["requests"]
    paths = {
        "/health": "/health",
        "/stats/summary": "/stats/summary",
        "/stats/by-model": "/stats/by-model",
        "/stats/by-client": "/stats/by-client",
        "/stats/recent": "/stats/recent",
        "/stats/timeseries": "/stats/timeseries?bucket=minute",
        "/stats/requests/{id}": f"/stats/requests/{first['id']}",
    }

    for documented, path in paths.items():
        response = await client.get(path)
        body = await response.json()

        assert response.status == 200
        assert problems(body, answer_schema(documented, 200)) == [], path


async def test_errors_fit_the_document(client: Client) -> None:
    cases = [
        ("/stats/recent", "/stats/recent?limit=0", 400),
        ("/stats/requests/{id}", "/stats/requests/5", 404),
    ]

    for documented, path, status in cases:
        response = await client.get(path)
        body = await response.json()

        assert response.status == status
        assert problems(body, answer_schema(documented, status)) == []


def test_checker_finds_what_is_wrong() -> None:
    schema = {"$ref": "#/components/schemas/Error"}

    found = problems({"error": {"message": 1, "type": "x"}}, schema)

    assert found == ["$.error: missing code", "$.error.message: 1 is not ['string']"]
