"""The hot path: forward one request, stream the answer back, meter it.

Each body chunk goes to the client first and to the meter second; the only
bytes ever held back are those of an unfinished SSE event while the proxy
removes a usage event it asked for itself. At the end one Record is handed to
the observers (the writer's queue, the metrics); nothing here waits for the
database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp
import orjson
from aiohttp import web
from yarl import URL

from lms_metrics_proxy.config import Settings
from lms_metrics_proxy.errors import (
    ProxyError,
    RequestTooLarge,
    UpstreamError,
    UpstreamTimeout,
)
from lms_metrics_proxy.relay.headers import (
    RESPONSE_DROPPED,
    forward_headers,
)
from lms_metrics_proxy.relay.recorder import (
    Outcome,
    Timeline,
    build_record,
    needs_estimate,
    now_utc,
)
from lms_metrics_proxy.relay.tokenize import ServerTokenizer
from lms_metrics_proxy.relay.upstream import (
    Answer,
    ConnectTimeout,
    Pool,
    Unreachable,
    UpstreamInvalid,
)
from lms_metrics_proxy.store.record import Record
from lms_metrics_proxy.tasks import spawn
from lms_metrics_proxy.usage import (
    Exchange,
    Meter,
    Usage,
    inject_usage,
    inspect_request,
)
from lms_metrics_proxy.usage.estimate import estimate

logger = logging.getLogger(__name__)

Observer = Callable[[Record, bool], None]

# Headers aiohttp's client would add on its own; the server must get only
# what the client sent.
SKIP_AUTO_HEADERS = frozenset(
    {"Accept", "Accept-Encoding", "User-Agent", "Content-Type"}
)
# A JSON answer up to this size is read whole and sent in one write with its
# headers: one system call instead of three, for most non-streamed answers.
WHOLE_BODY_MAX = 2**20
STREAM_TYPES = ("text/event-stream", "application/x-ndjson")
# Error bodies read to decide on the stream_options retry are small.
MAX_REJECTION_BYTES = 2**16
# How a body can stop early: the server (or the client, through aiohttp's
# ClientConnectionResetError) hung up, sent junk, or went silent.
UPSTREAM_FAULTS = (aiohttp.ClientError, OSError, UpstreamInvalid, TimeoutError)


class Relay:
    """Forward requests to the model server and account for every one."""

    def __init__(self, settings: Settings, observe: Observer) -> None:
        self.settings = settings
        self.observe = observe
        self.upstream = URL(settings.upstream_url)
        self.inject = settings.inject_stream_usage
        self.pool: Pool | None = None
        # aiohttp's client only asks the server to count tokens, off the path.
        self.session: aiohttp.ClientSession | None = None
        self.estimating: set[asyncio.Task[None]] = set()
        self.server_tokenizer = ServerTokenizer(self.upstream)
        self.in_flight = 0  # requests being relayed now
        self.stopping = False  # set when shutdown begins
        self.cut_at_shutdown = 0  # requests cancelled once it had begun

    async def start(self) -> None:
        """Open the pooled upstream connections."""
        self.pool = Pool(
            self.upstream,
            self.settings.upstream_connect_timeout,
            self.settings.upstream_read_timeout,
        )
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self.settings.upstream_connect_timeout,
            sock_read=self.settings.upstream_read_timeout,
        )
        connector = aiohttp.TCPConnector(
            limit=0, keepalive_timeout=30, ttl_dns_cache=300
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=SKIP_AUTO_HEADERS,
        )

    async def stop(self) -> None:
        """Record what is still being estimated, then close the connections."""
        if self.estimating:
            await asyncio.gather(*self.estimating, return_exceptions=True)
        if self.pool is not None:
            await self.pool.close()
        if self.session is not None:
            await self.session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Relay one request; the aiohttp handler for every proxied path."""
        self.in_flight += 1
        try:
            return await self._handle(request)
        except asyncio.CancelledError:
            if self.stopping:
                self.cut_at_shutdown += 1
            raise
        finally:
            self.in_flight -= 1

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        timeline = Timeline(
            wall_start=now_utc(), start=asyncio.get_running_loop().time()
        )
        try:
            body = await self._read_body(request)
        except RequestTooLarge:
            return self._refuse_large(request, timeline)
        except asyncio.CancelledError:
            # The client left while sending its body: nothing was forwarded,
            # but the request still gets its row.
            self._record_unread(request, timeline)
            raise
        exchange = inspect_request(request.method, request.path, body)
        outcome = Outcome(
            status=0,
            request_bytes=len(body),
            client=request.headers.get("X-Client-Name"),
        )
        try:
            return await self._relay(request, body, exchange, timeline, outcome)
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client hangs up.
            outcome.cancelled = True
            if outcome.status == 0:
                outcome.status = 499
            raise
        finally:
            self._finish(exchange, timeline, outcome)

    async def _relay(
        self,
        request: web.Request,
        body: bytes,
        exchange: Exchange,
        timeline: Timeline,
        outcome: Outcome,
    ) -> web.StreamResponse:
        sent_body, injected = self._maybe_inject(body, exchange)
        try:
            upstream, injected, prefix = await self._open_checked(
                request, body, sent_body, injected
            )
        except UpstreamError as error:
            outcome.status = error.status
            outcome.proxy_error = str(error)
            # Nothing was sent: no prompt tokens to estimate.
            never_sent = isinstance(error.__cause__, (Unreachable, ConnectTimeout))
            outcome.reached_server = not never_sent
            logger.warning(
                "Model server failed status=%s path=%s cause=%s",
                error.status,
                exchange.endpoint,
                error,
            )
            return error_response(error)
        try:
            return await self._stream(
                request, upstream, exchange, timeline, outcome, injected, prefix
            )
        finally:
            upstream.close()

    async def _open_checked(
        self, request: web.Request, body: bytes, sent_body: bytes, injected: bool
    ) -> tuple[Answer, bool, bytes]:
        """Open the answer; if the server refused the stream_options the relay
        added, open it again without. Return it, whether usage was injected,
        and the body bytes already read from it."""
        upstream = await self._open(request, sent_body)
        if not (injected and upstream.status in (400, 422)):
            return upstream, injected, b""
        try:
            prefix = await _read_some(upstream)
        except BaseException:
            upstream.close()  # a client leaving here must not leave it open
            raise
        if b"stream_options" not in prefix:
            return upstream, True, prefix
        self._stop_injecting(upstream)
        return await self._open(request, body), False, b""

    def _maybe_inject(self, body: bytes, exchange: Exchange) -> tuple[bytes, bool]:
        if not (self.inject and exchange.can_inject):
            return body, False
        changed = inject_usage(body)
        if changed is None:
            return body, False
        return changed, True

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.settings.max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            raise RequestTooLarge
        if not request.body_exists:
            return b""
        content = request.content
        if content.is_eof():
            # The whole body came with the head, as most do: nothing to await.
            body = content.read_nowait()
            if len(body) > limit:
                raise RequestTooLarge
            return body
        parts: list[bytes] = []
        size = 0
        async for chunk in content.iter_any():
            size += len(chunk)
            if size > limit:
                raise RequestTooLarge
            parts.append(chunk)
        return b"".join(parts)

    async def _open(self, request: web.Request, body: bytes) -> Answer:
        assert self.pool is not None, "Relay.start() was not awaited"
        try:
            return await self.pool.request(
                request.method,
                request.raw_path,
                request.raw_headers,
                body,
                request.body_exists,
            )
        except TimeoutError as error:
            raise UpstreamTimeout(timeout_message(self.settings)) from error
        except UpstreamInvalid as error:
            raise UpstreamError(invalid_message(self.settings, error)) from error
        except OSError as error:
            raise UpstreamError(unreachable_message(self.settings, error)) from error

    def _stop_injecting(self, upstream: Answer) -> None:
        upstream.close()
        self.inject = False
        logger.warning(
            "Model server refused stream_options; streams go unchanged until "
            "restart upstream=%s",
            self.settings.upstream_url,
        )

    async def _stream(
        self,
        request: web.Request,
        upstream: Answer,
        exchange: Exchange,
        timeline: Timeline,
        outcome: Outcome,
        injected: bool,
        prefix: bytes,
    ) -> web.StreamResponse:
        encoding = upstream.headers.get("Content-Encoding")
        meter = Meter(
            exchange,
            upstream.status,
            upstream.headers.get("Content-Type"),
            encoding,
            self.settings.max_content_chars,
        )
        # Only an event stream we asked for usage can hold an event to hide.
        filtering = injected and not encoding and upstream.status < 400
        outcome.status = upstream.status
        if not prefix and not filtering and _is_small_whole(request, upstream):
            return await _send_whole(request, upstream, exchange, meter, outcome)
        response = _response(upstream, filtering)
        try:
            await response.prepare(request)
            await _pump(response, upstream, meter, timeline, outcome, filtering, prefix)
        except asyncio.CancelledError:
            outcome.usage = meter.finish(cancelled=True)
            raise
        except UPSTREAM_FAULTS as error:
            _end_early(request, exchange, meter, outcome, error)
        return response

    def _refuse_large(self, request: web.Request, timeline: Timeline) -> web.Response:
        limit = self.settings.max_request_bytes
        error = RequestTooLarge(
            f"Request body is larger than MAX_REQUEST_BYTES ({limit} bytes); "
            "raise MAX_REQUEST_BYTES to allow it"
        )
        self._record_unread(
            request,
            timeline,
            status=413,
            request_bytes=request.content_length or 0,
            proxy_error=str(error),
        )
        response = error_response(error)
        response.force_close()
        return response

    def _record_unread(
        self,
        request: web.Request,
        timeline: Timeline,
        *,
        status: int = 499,
        request_bytes: int = 0,
        proxy_error: str | None = None,
    ) -> None:
        """Record a request whose body was never forwarded."""
        outcome = Outcome(
            status=status,
            request_bytes=request_bytes,
            client=request.headers.get("X-Client-Name"),
            cancelled=proxy_error is None,
            proxy_error=proxy_error,
        )
        exchange = inspect_request(request.method, request.path, b"")
        self._finish(exchange, timeline, outcome)

    def _finish(self, exchange: Exchange, timeline: Timeline, outcome: Outcome) -> None:
        timeline.end = asyncio.get_running_loop().time()
        usage = outcome.usage
        if outcome.reached_server and needs_estimate(exchange, usage):
            # Tokenizing can take milliseconds: do it on a thread, after the
            # client already has its answer.
            task = spawn(self._estimate(exchange, usage, timeline, outcome), "estimate")
            self.estimating.add(task)
            task.add_done_callback(self.estimating.discard)
            return
        self._record(exchange, usage, timeline, outcome)

    async def _estimate(
        self, exchange: Exchange, usage: Usage, timeline: Timeline, outcome: Outcome
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self.session is not None:
                usage = await self.server_tokenizer.fill(self.session, exchange, usage)
            usage = await loop.run_in_executor(None, estimate, exchange, usage)
        finally:
            self._record(exchange, usage, timeline, outcome)

    def _record(
        self, exchange: Exchange, usage: Usage, timeline: Timeline, outcome: Outcome
    ) -> None:
        try:
            record = build_record(
                exchange,
                usage,
                timeline,
                outcome,
                store_content=self.settings.store_content,
                max_chars=self.settings.max_content_chars,
            )
            self.observe(record, exchange.is_tracked)
        except Exception:  # the request entry: accounting must never break it
            logger.exception(
                "Could not record request method=%s path=%s",
                exchange.method,
                exchange.endpoint,
            )


async def _read_some(upstream: Answer) -> bytes:
    """Read MAX_REJECTION_BYTES or more of an error body, to look into it."""
    buffer = bytearray()
    try:
        while len(buffer) < MAX_REJECTION_BYTES:
            chunk = await upstream.read_chunk()
            if not chunk:
                break
            buffer += chunk
    except UPSTREAM_FAULTS:
        pass  # whatever came is passed on; the stream below sees the fault
    return bytes(buffer)


def _is_small_whole(request: web.Request, upstream: Answer) -> bool:
    length = upstream.content_length
    return (
        length is not None
        and length <= WHOLE_BODY_MAX
        and request.method != "HEAD"
        and upstream.status >= 200
        and upstream.status not in (204, 304)
        and not upstream.content_type.startswith(STREAM_TYPES)
    )


async def _send_whole(
    request: web.Request,
    upstream: Answer,
    exchange: Exchange,
    meter: Meter,
    outcome: Outcome,
) -> web.StreamResponse:
    """Read a small answer whole, then send headers and body in one write."""
    parts: list[bytes] = []
    try:
        while chunk := await upstream.read_chunk():
            parts.append(chunk)
    except UPSTREAM_FAULTS as error:
        return await _send_broken(
            request, upstream, exchange, meter, outcome, parts, error
        )
    body = b"".join(parts)
    headers = forward_headers(
        upstream.headers.items(), RESPONSE_DROPPED, upstream.headers.get("Connection")
    )
    headers.popall("Content-Length", None)
    response = web.Response(
        status=upstream.status, reason=upstream.reason, headers=headers, body=body
    )
    meter.feed(body)
    outcome.response_bytes = len(body)
    outcome.usage = meter.finish()
    return response


async def _send_broken(
    request: web.Request,
    upstream: Answer,
    exchange: Exchange,
    meter: Meter,
    outcome: Outcome,
    parts: list[bytes],
    error: BaseException,
) -> web.StreamResponse:
    """Pass on what a server sent before it broke off, then end as it did."""
    response = _response(upstream, False)
    try:
        await response.prepare(request)
        for part in parts:
            await response.write(part)
            outcome.response_bytes += len(part)
            meter.feed(part)
    except (aiohttp.ClientError, ConnectionResetError) as gone:
        error = gone
    _end_early(request, exchange, meter, outcome, error)
    return response


def _response(upstream: Answer, filtering: bool) -> web.StreamResponse:
    """Build the client's response with the server's status and headers."""
    headers = forward_headers(
        upstream.headers.items(), RESPONSE_DROPPED, upstream.headers.get("Connection")
    )
    if filtering:
        headers.popall("Content-Length", None)
    return web.StreamResponse(
        status=upstream.status, reason=upstream.reason, headers=headers
    )


async def _pump(
    response: web.StreamResponse,
    upstream: Answer,
    meter: Meter,
    timeline: Timeline,
    outcome: Outcome,
    filtering: bool,
    prefix: bytes,
) -> None:
    """Pass the body on chunk by chunk: to the client first, then the meter."""
    loop = asyncio.get_running_loop()
    if prefix:
        await response.write(prefix)
        outcome.response_bytes += len(prefix)
        meter.feed(prefix)
    while chunk := await upstream.read_chunk():
        if filtering:
            chunk = meter.filter(chunk)
            if chunk:
                await response.write(chunk)
        else:
            await response.write(chunk)
            meter.feed(chunk)
        outcome.response_bytes += len(chunk)
        if timeline.first_content is None and meter.has_content:
            timeline.first_content = loop.time()
    if filtering:
        rest = meter.flush()
        await response.write(rest)
        outcome.response_bytes += len(rest)
    await response.write_eof()
    outcome.usage = meter.finish()


def _end_early(
    request: web.Request,
    exchange: Exchange,
    meter: Meter,
    outcome: Outcome,
    error: BaseException,
) -> None:
    """Account for a body that stopped: the client left, or the server did."""
    if isinstance(error, ConnectionResetError) or _client_gone(request):
        outcome.cancelled = True
        outcome.usage = meter.finish(cancelled=True)
        return
    outcome.cut_short = True
    outcome.proxy_error = cut_message(error)
    logger.warning(
        "Model server ended the answer early path=%s cause=%s",
        exchange.endpoint,
        outcome.proxy_error,
    )
    outcome.usage = meter.finish(cut_short=True)
    _abort(request)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _abort(request: web.Request) -> None:
    """End the client's body without its last chunk, as the server did."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def error_response(error: ProxyError) -> web.Response:
    """Render a proxy error as an OpenAI-style JSON body."""
    body = {"error": {"message": str(error), "type": error.kind, "code": error.status}}
    return web.Response(
        status=error.status, body=orjson.dumps(body), content_type="application/json"
    )


def describe_cause(error: BaseException) -> str:
    """Say what went wrong in a few words: no URL, header or body bytes in it.

    The text of aiohttp's ClientResponseError holds the request URL, whose
    query may carry a key, and for a malformed answer the server's bytes
    (response text that STORE_CONTENT=false must keep out of the database).
    """
    if isinstance(error, aiohttp.ClientResponseError):
        return error.message.split(":", 1)[0].strip() or type(error).__name__
    if isinstance(error, aiohttp.InvalidURL):
        return type(error).__name__
    return str(error) or type(error).__name__


def unreachable_message(settings: Settings, error: BaseException) -> str:
    """Say which server could not be reached and what to check."""
    cause = describe_cause(error)
    return (
        f"Cannot reach the model server at {settings.upstream_url} ({cause}). "
        "Check that it is running and that LM_STUDIO_URL points to it."
    )


def invalid_message(settings: Settings, error: BaseException) -> str:
    """Say which server sent an answer that is not HTTP."""
    return (
        f"The model server at {settings.upstream_url} sent an answer that is "
        f"not valid HTTP ({describe_cause(error)})."
    )


def timeout_message(settings: Settings) -> str:
    """Say which server did not answer in time and which setting applies."""
    return (
        f"The model server at {settings.upstream_url} did not answer within "
        f"{settings.upstream_read_timeout:g} s (UPSTREAM_READ_TIMEOUT) or did not "
        f"accept the connection within {settings.upstream_connect_timeout:g} s "
        "(UPSTREAM_CONNECT_TIMEOUT)."
    )


def cut_message(error: BaseException) -> str:
    """Describe why an answer ended before the server finished it."""
    if isinstance(error, TimeoutError):
        return "The model server stopped sending mid-answer (UPSTREAM_READ_TIMEOUT)"
    cause = describe_cause(error)
    return f"The model server closed the connection mid-answer: {cause}"
