"""Bare pass-through: aiohttp server and client, recording nothing.

The floor for a Python proxy: every request is forwarded as it came (less
hop-by-hop headers), and the answer comes back chunk by chunk when it has no
Content-Length. Our proxy does the same plus accounting, so the benchmark's
"x bare" column prices the accounting.
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    )
)


def end_to_end(headers: object) -> list[tuple[str, str]]:
    """Return the headers a proxy passes on."""
    return [(k, v) for k, v in headers.items() if k.lower() not in HOP]  # type: ignore[attr-defined]


def build_app(upstream: str) -> web.Application:
    """Return the pass-through app, with its client session in the app's life."""

    async def forward(request: web.Request) -> web.StreamResponse:
        session: aiohttp.ClientSession = request.app["session"]
        body = await request.read()
        async with session.request(
            request.method,
            upstream + request.raw_path,
            headers=end_to_end(request.headers),
            data=body,
            allow_redirects=False,
        ) as answer:
            headers = end_to_end(answer.headers)
            if answer.content_length is not None:
                data = await answer.read()
                return web.Response(status=answer.status, body=data, headers=headers)
            response = web.StreamResponse(status=answer.status, headers=headers)
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def session_context(app: web.Application):  # type: ignore[no-untyped-def]
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
        app["session"] = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=600),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )
        yield
        await app["session"].close()

    app = web.Application(client_max_size=100 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", forward)
    app.cleanup_ctx.append(session_context)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", default="http://127.0.0.1:1234")
    args = parser.parse_args()
    app = build_app(args.upstream.rstrip("/"))
    loop = uvloop.new_event_loop() if uvloop else None
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        backlog=4096,
        loop=loop,
    )


if __name__ == "__main__":
    main()
