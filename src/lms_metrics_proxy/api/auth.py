"""The bearer token that guards /stats/* (and /metrics and the dashboard).

When `STATS_TOKEN` is set, a guarded handler answers 401 unless the request
carries `Authorization: Bearer <token>`. The comparison takes the same time
whatever the first wrong byte, and the token is never logged or echoed.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from lms_metrics_proxy.api.responses import Handler, error_response


def guard(handler: Handler, token: str | None) -> Handler:
    """Return `handler` behind the bearer token, or unchanged when it is None."""
    if token is None:
        return handler
    expected = token.encode()

    async def guarded(request: web.Request) -> web.StreamResponse:
        if not is_authorized(request, expected):
            return unauthorized()
        return await handler(request)

    return guarded


def is_authorized(request: web.Request, expected: bytes) -> bool:
    """Whether the request's Authorization header carries the token."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Header text may hold undecodable bytes (kept as surrogates); compare bytes.
    given = credentials.strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given, expected)


def unauthorized() -> web.Response:
    """Return the 401 answer, with the challenge RFC 6750 asks for."""
    response = error_response(
        401,
        "Missing or wrong bearer token: send Authorization: Bearer <STATS_TOKEN>",
        "authentication_error",
    )
    response.headers["WWW-Authenticate"] = 'Bearer realm="lms-metrics-proxy"'
    return response
