"""The OpenAPI 3.1 description of /health and /stats/*, served as JSON.

Written by hand beside the handlers in `stats.py`; a schemathesis run
checks that real answers match it, and a test checks that every route is
described. Keep the two in step when a field or parameter changes.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from lms_metrics_proxy import __version__

Schema = dict[str, Any]

INTEGER: Schema = {"type": "integer", "minimum": 0}
AVERAGE: Schema = {"type": "number", "minimum": 0}
TEXT: Schema = {"type": "string"}
MAYBE_TEXT: Schema = {"type": ["string", "null"]}
MAYBE_INTEGER: Schema = {"type": ["integer", "null"]}
TIME: Schema = {
    "type": "string",
    "format": "date-time",
    "description": "UTC, whole seconds: 2026-01-19T10:30:45Z",
}

COST: Schema = {
    "type": ["number", "null"],
    "minimum": 0,
    "description": "USD at the PRICES_FILE rates; only present when one is set",
}
# Present only in some configurations.
OPTIONAL = frozenset({"estimated_cost"})
PROVENANCE = {
    "upstream_usage_requests": INTEGER,
    "estimated_usage_requests": INTEGER,
    "no_usage_requests": INTEGER,
}
GROUP_FIELDS: Schema = {
    "request_count": INTEGER,
    "successful_requests": INTEGER,
    "failed_requests": INTEGER,
    "total_input_tokens": INTEGER,
    "total_output_tokens": INTEGER,
    "total_tokens": INTEGER,
    "avg_input_tokens": AVERAGE,
    "avg_output_tokens": AVERAGE,
    "avg_duration_ms": INTEGER,
    "total_duration_ms": INTEGER,
    **PROVENANCE,
    "estimated_cost": COST,
}
SUMMARY_FIELDS: Schema = {
    "total_requests": INTEGER,
    "successful_requests": INTEGER,
    "failed_requests": INTEGER,
    "total_input_tokens": INTEGER,
    "total_output_tokens": INTEGER,
    "total_tokens": INTEGER,
    "average_input_tokens": AVERAGE,
    "average_output_tokens": AVERAGE,
    "total_duration_ms": INTEGER,
    "average_duration_ms": AVERAGE,
    **PROVENANCE,
    "estimated_cost": COST,
}
POINT_FIELDS: Schema = {
    "time": TIME,
    "requests": INTEGER,
    "errors": INTEGER,
    "input_tokens": INTEGER,
    "output_tokens": INTEGER,
    "total_tokens": INTEGER,
    "duration_ms": INTEGER,
    "avg_duration_ms": INTEGER,
    **PROVENANCE,
}
ROW_FIELDS: Schema = {
    "id": {"type": "integer", "minimum": 1},
    "start_time": TIME,
    "end_time": TIME,
    "duration_ms": {"type": "integer"},
    "ttft_ms": MAYBE_INTEGER,
    "method": TEXT,
    "endpoint": TEXT,
    "model": MAYBE_TEXT,
    "requested_model": MAYBE_TEXT,
    "client": MAYBE_TEXT,
    "input_tokens": MAYBE_INTEGER,
    "output_tokens": MAYBE_INTEGER,
    "total_tokens": MAYBE_INTEGER,
    "cached_input_tokens": MAYBE_INTEGER,
    "reasoning_tokens": MAYBE_INTEGER,
    "usage_source": {"type": "string", "enum": ["upstream", "estimated", "none"]},
    "tokens_per_second": {"type": ["number", "null"]},
    "http_status": {"type": "integer"},
    "is_error": {"type": "boolean"},
    "error_message": MAYBE_TEXT,
    "was_streamed": {"type": "boolean"},
    "finish_reason": MAYBE_TEXT,
    "request_bytes": INTEGER,
    "response_bytes": INTEGER,
    "details": {"description": "Dialect extras as a JSON object, or null"},
}
TEXT_FIELDS: Schema = {"prompt": MAYBE_TEXT, "response": MAYBE_TEXT}


NO_TOKEN = "STATS_TOKEN is set and no valid token came"


def obj(fields: Schema) -> Schema:
    """An object schema whose listed fields are required, but the OPTIONAL ones."""
    required = [name for name in fields if name not in OPTIONAL]
    return {"type": "object", "required": required, "properties": fields}


def ref(name: str) -> Schema:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: Schema, description: str) -> Schema:
    """A response with a JSON body."""
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


def query(name: str, schema: Schema, description: str) -> Schema:
    """An optional query parameter."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


# What `since` and `until` accept; read_time also takes other ISO 8601 forms.
MOMENT: Schema = {
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "pattern": "^[0-9]{1,11}([.][0-9]+)?$"},
        {"type": "string", "maxLength": 0, "description": "empty: no filter"},
    ]
}
# Any text but NUL, which no database stores; empty means no filter.
LABEL: Schema = {"type": "string", "pattern": "^[^\\x00]*$"}
FILTERS = [
    query(
        "since",
        MOMENT,
        "Only requests that started at or after this time: "
        "ISO 8601 (UTC when no offset is given) or Unix seconds",
    ),
    query(
        "until",
        MOMENT,
        "Only requests that started before this time: "
        "ISO 8601 (UTC when no offset is given) or Unix seconds",
    ),
    query("model", LABEL, "Only requests of this model (empty: no filter)"),
    query("endpoint", LABEL, "Only requests to this path, e.g. /v1/chat/completions"),
    query("client", LABEL, "Only requests whose X-Client-Name was this"),
]
LIMIT = query(
    "limit",
    {"type": "integer", "minimum": 1, "default": 100},
    "How many requests, 1 to 1000; more is cut to 1000",
)
BUCKET = query(
    "bucket",
    {"type": "string", "enum": ["minute", "hour", "day"], "default": "hour"},
    "The length of each point",
)
REQUEST_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}


def stats_operation(summary: str, schema: Schema, extra: list[Schema]) -> Schema:
    """A GET under /stats/: filters, bearer token, and its error answers."""
    responses = {
        "200": json_body(schema, summary),
        "400": json_body(ref("Error"), "A parameter is invalid; the message names it"),
        "401": json_body(ref("Error"), NO_TOKEN),
        "503": json_body(ref("Error"), "The database cannot be read"),
    }
    return {
        "get": {
            "summary": summary,
            "parameters": [*extra, *FILTERS],
            "security": [{"bearer": []}, {}],
            "responses": responses,
        }
    }


def components() -> Schema:
    """The schemas that several answers share."""
    error = obj({"message": TEXT, "type": TEXT, "code": {"type": "integer"}})
    health_fields = {
        "status": {"type": "string", "enum": ["ok", "degraded"]},
        "service": {"type": "string", "const": "token_counter_proxy"},
        "queued": INTEGER,
        "dropped": INTEGER,
        "written": INTEGER,
        "refused": INTEGER,
    }
    health = obj(health_fields)
    health["required"] = ["status", "service"]
    health["properties"]["reason"] = {"type": "string", "description": "If degraded"}
    return {
        "Error": obj({"error": error}),
        "Health": health,
        "Summary": obj(SUMMARY_FIELDS),
        "ModelStats": obj({"model": MAYBE_TEXT, **GROUP_FIELDS}),
        "ClientStats": obj({"client": MAYBE_TEXT, **GROUP_FIELDS}),
        "Point": obj(POINT_FIELDS),
        "RecentRequest": obj({k: v for k, v in ROW_FIELDS.items() if k != "details"}),
        "Request": obj({**ROW_FIELDS, **TEXT_FIELDS}),
    }


def paths() -> Schema:
    """Every route that `setup_api` adds."""
    timeseries = obj({"bucket": BUCKET["schema"], "points": array("Point")})
    detail = stats_operation(
        "One whole request, text included", ref("Request"), [REQUEST_ID]
    )
    detail["get"]["responses"]["404"] = json_body(ref("Error"), "No such request")
    return {
        "/health": {
            "get": {
                "summary": "Whether the proxy runs and rows are being written",
                "responses": {"200": json_body(ref("Health"), "The proxy's state")},
            }
        },
        "/stats/summary": stats_operation("Totals", ref("Summary"), []),
        "/stats/by-model": stats_operation(
            "Totals per model, most tokens first",
            obj({"models": array("ModelStats")}),
            [],
        ),
        "/stats/by-client": stats_operation(
            "Totals per client, most tokens first",
            obj({"clients": array("ClientStats")}),
            [],
        ),
        "/stats/recent": stats_operation(
            "The newest requests, without their text",
            obj({"requests": array("RecentRequest")}),
            [LIMIT],
        ),
        "/stats/timeseries": stats_operation(
            "Totals per minute, hour or day that has requests", timeseries, [BUCKET]
        ),
        "/stats/requests/{id}": detail,
        "/stats/openapi.json": {
            "get": {
                "summary": "This description",
                "security": [{"bearer": []}, {}],
                "responses": {
                    "200": json_body({"type": "object"}, "OpenAPI 3.1"),
                    "401": json_body(ref("Error"), NO_TOKEN),
                },
            }
        },
    }


def array(name: str) -> Schema:
    """An array of a component schema."""
    return {"type": "array", "items": ref(name)}


@cache
def openapi_document() -> Schema:
    """Return the whole OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "LMS Metrics Proxy statistics",
            "version": __version__,
            "description": (
                "Token usage recorded by the proxy: totals, per model, "
                "per client, over time, and each request."
            ),
        },
        "paths": paths(),
        "components": {
            "schemas": components(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
