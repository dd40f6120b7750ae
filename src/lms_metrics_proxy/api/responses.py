"""JSON responses of the API, errors included, always through orjson.

Errors have the OpenAI shape that the proxy's own errors use:
`{"error": {"message": ..., "type": ..., "code": <status>}}`. This module
knows nothing of the store; it only renders values and ProxyErrors.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from lms_metrics_proxy.errors import ProxyError, StoreError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class InvalidParameter(ProxyError):
    """A query or path parameter has a value the API cannot use (status 400)."""

    status = 400
    kind = "invalid_request_error"


class NotFound(ProxyError):
    """The thing a path names does not exist (status 404)."""

    status = 404
    kind = "not_found_error"


def json_response(data: Any, status: int = 200) -> web.Response:
    """Return `data` as a JSON response."""
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json"
    )


def error_response(status: int, message: str, kind: str) -> web.Response:
    """Return an error in the OpenAI shape."""
    error = {"message": message, "type": kind, "code": status}
    return json_response({"error": error}, status)


def render_error(error: ProxyError) -> web.Response:
    """Return a ProxyError as JSON, a store failure as 503."""
    if isinstance(error, StoreError):
        # The proxy still runs; only its statistics are out of reach.
        return error_response(503, str(error), "store_unavailable")
    return error_response(error.status, str(error), error.kind)


def json_errors(handler: Handler) -> Handler:
    """Wrap a handler so that every ProxyError it raises becomes JSON."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ProxyError as error:
            return render_error(error)

    return wrapped
