"""The meter: one per response, fed every chunk, reports the usage at the end.

It picks the framing (SSE, NDJSON, or one JSON body) from the Content-Type,
or from the first bytes when the type says neither; undoes Content-Encoding
for its own reading; and hands each frame to the reader of the request's
dialect. Memory stays bounded: the current incomplete event, the tally, and
a non-stream body up to `MAX_HELD`. Nothing here raises to the relay: a body
that cannot be read is logged once and leaves the usage unknown.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from lms_metrics_proxy.errors import UsageError
from lms_metrics_proxy.usage import llamacpp
from lms_metrics_proxy.usage.anthropic import MessagesReader
from lms_metrics_proxy.usage.decoder import Decoder, make_decoder
from lms_metrics_proxy.usage.exchange import EMBEDDINGS, Exchange
from lms_metrics_proxy.usage.lmstudio import RestChatReader
from lms_metrics_proxy.usage.ndjson import LineSplitter
from lms_metrics_proxy.usage.ollama import NativeReader
from lms_metrics_proxy.usage.openai import ChatReader, ResponsesReader
from lms_metrics_proxy.usage.sse import EventSplitter, complete_lines, parse_event
from lms_metrics_proxy.usage.tally import Tally, error_message
from lms_metrics_proxy.usage.text import clip_text, compact

logger = logging.getLogger(__name__)

# The most the meter holds: a whole non-stream body, or one incomplete event
# or line of a stream. Beyond it, accounting gives up for that response.
MAX_HELD = 32 << 20
CUT_SHORT = "upstream closed the connection before the end of the body"
MAX_ERROR_CHARS = 1000

_SSE, _NDJSON, _JSON = "sse", "ndjson", "json"
_NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl"}
)
_SSE_FIELDS = (b"data:", b":", b"event:", b"id:", b"retry:", b"error:")
_BRACKET = 0x5B  # "[", as in "[DONE]"
# What reading a malformed or surprising body can raise; all are caught.
_FAILURES = (
    ValueError,  # orjson.JSONDecodeError and UnicodeDecodeError are ValueErrors
    TypeError,
    KeyError,
    AttributeError,
    IndexError,
    RecursionError,
    zlib.error,
    UsageError,
)


@dataclass(slots=True)
class Usage:
    """What a response said about its own cost and outcome."""

    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cached_input_tokens: int | None = None
    reasoning_tokens: int | None = None
    usage_source: str = "none"  # "upstream" or "none"; the relay may estimate
    tokens_per_second: float | None = None  # the server's own figure
    server_ttft_ms: int | None = None  # the server's own figure
    finish_reason: str | None = None
    response_text: str | None = None
    is_error: bool = False
    error_message: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    reasoning_text: str | None = None  # reasoning output, kept apart from the answer


class Reader(Protocol):
    """Reads one dialect's frames and bodies into a tally."""

    def frame(self, tally: Tally, obj: dict[str, Any], event: str | None) -> None: ...

    def body(self, tally: Tally, obj: dict[str, Any]) -> None: ...


READERS: dict[str, Callable[[], Reader]] = {
    "openai.responses": ResponsesReader,
    "anthropic.messages": MessagesReader,
    "ollama.chat": NativeReader,
    "ollama.generate": NativeReader,
    "ollama.embed": NativeReader,
    "lmstudio.v1.chat": RestChatReader,
    "llamacpp.completion": llamacpp.CompletionReader,
}


def framing_of(content_type: str | None) -> str | None:
    """Return the framing a Content-Type names, or None to sniff the body."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind == "text/event-stream":
        return _SSE
    return _NDJSON if kind in _NDJSON_TYPES else None


class Meter:
    """Incremental accounting of one response body."""

    has_content: bool  # becomes True at the first frame with generated content

    def __init__(
        self,
        exchange: Exchange,
        status: int,
        content_type: str | None,
        content_encoding: str | None,
        max_chars: int,
    ) -> None:
        self.has_content = False
        self._exchange = exchange
        self._status = status
        self._tally = Tally(max(max_chars, 0))
        self._reader = READERS.get(exchange.dialect, ChatReader)()
        self._framing = framing_of(content_type)
        self._events = EventSplitter()
        self._lines = LineSplitter()
        self._body = bytearray()  # a non-stream body, read at the end
        self._head = b""  # first bytes, while sniffing the framing
        self._tail = b""  # an unterminated last event that flush left unread
        self._decoder: Decoder | None = None
        self._stopped = False  # accounting gave up: later bytes are not read
        self._ended = False  # the end of the body was read
        self._quiet = False  # a body cut short: parse errors are expected
        self._warned = False
        self._filtering = False  # filter holds back incomplete events
        self._passthrough = False  # filter forwards bytes as they come
        self._dropped = False  # filter: the last event was removed
        try:
            self._decoder = make_decoder(content_encoding)
        except UsageError as exc:
            self._give_up(exc)

    def feed(self, data: bytes) -> None:
        """Account for one chunk of the body as it came off the wire."""
        self._passthrough = True  # bytes fed were sent: filter must not hold any
        if data and not self._stopped:
            try:
                self._take(data)
            except _FAILURES as exc:
                self._give_up(exc)
        self.has_content = self._tally.content

    def filter(self, data: bytes) -> bytes:
        """Feed a chunk and return the whole events to forward, minus usage-only ones.

        Only an SSE body with no Content-Encoding is filtered; anything else
        passes through unchanged (and is still accounted for), as does all
        of a body whose first bytes went to `feed` (they were sent already).
        """
        if self._passthrough or self._framing is not _SSE or self._decoder:
            self.feed(data)
            return data
        self._filtering = True
        kept = [block for block in self._events.split(data) if not self._drop(block)]
        if self._events.held > MAX_HELD:
            kept.append(self._events.take_rest())
            self._filtering = False
            self._passthrough = True
            self._give_up(UsageError("an event is larger than the meter holds"))
        self.has_content = self._tally.content
        return b"".join(kept)

    def flush(self) -> bytes:
        """Return what `filter` still holds when the body ends (b"" after `feed`)."""
        if not self._filtering:
            return b""
        rest = self._events.take_rest()
        # An event the body ended without its blank line: removed if it is the
        # usage chunk. A last line without its line ending waits for finish,
        # which knows whether the body was cut short.
        if rest and complete_lines(rest) == rest:
            return b"" if self._read_event(rest) else rest
        self._tail = rest
        return rest

    def finish(self, *, cut_short: bool = False, cancelled: bool = False) -> Usage:
        """Return the usage of the whole body; call once, at the end."""
        self._quiet = cut_short or cancelled
        if not self._ended:
            self._ended = True
            try:
                self._end()
            except _FAILURES as exc:
                self._give_up(exc)
        return self._usage(cut_short=cut_short, cancelled=cancelled)

    # Reading bytes

    def _take(self, data: bytes) -> None:
        if self._decoder is None:
            self._route(data)
            return
        for piece in self._decoder.decode(data):
            self._route(piece)

    def _route(self, data: bytes) -> None:
        framing = self._framing
        if framing is None:
            data = self._sniff(data)
            framing = self._framing
        if framing is _SSE:
            for block in self._events.split(data):
                self._read_event(block)
            self._check_held(self._events.held, self._events.take_rest)
        elif framing is _NDJSON:
            for line in self._lines.split(data):
                self._read_line(line)
            self._check_held(self._lines.held, self._lines.take_rest)
        elif framing is _JSON:
            self._body += data
            self._check_held(len(self._body), self._body.clear)

    def _sniff(self, data: bytes) -> bytes:
        head = self._head + data
        start = head.lstrip()
        if not start:
            self._head = b""
            return b""
        if len(start) < 6 and any(name.startswith(start) for name in _SSE_FIELDS):
            self._head = head
            return b""
        self._head = b""
        self._framing = _SSE if start.startswith(_SSE_FIELDS) else _JSON
        return head

    def _check_held(self, held: int, drop: Callable[[], object]) -> None:
        if held > MAX_HELD:
            drop()
            raise UsageError(f"more than {MAX_HELD} bytes in one frame or body")

    def _end(self) -> None:
        if self._decoder is not None and not self._stopped:
            self._route(self._decoder.flush())
        if self._head:
            self._framing = _JSON
            self._route(self._head)
        if self._framing is _SSE:
            rest = self._tail or self._events.take_rest()
            if rest:
                self._read_tail(rest)
        elif self._framing is _NDJSON:
            rest = self._lines.take_rest()
            if rest.strip():
                self._read_line(rest)
        elif self._framing is _JSON:
            self._read_json()

    # Reading frames

    def _drop(self, block: bytes) -> bool:
        # The LF of a CR LF that ended a removed event goes with it.
        if block == b"\n" and self._dropped:
            self._dropped = False
            return True
        self._dropped = not self._stopped and self._read_event(block)
        return self._dropped

    def _read_tail(self, rest: bytes) -> bool:
        # An event the body ended without a blank line. A body cut short
        # may end mid-line: only its complete lines are read.
        return self._read_event(complete_lines(rest) if self._quiet else rest)

    def _read_event(self, block: bytes) -> bool:
        """Read one SSE event; return whether it is a usage-only chunk."""
        event, data = parse_event(block)
        if not data or (data[0] == _BRACKET and data.strip() == b"[DONE]"):
            return False
        name = event.decode("utf-8", "replace") if event else None
        try:
            obj = orjson.loads(data)
            if not isinstance(obj, dict):
                return False
            self._read(obj, name)
        except _FAILURES as exc:
            if name == "error":
                self._tally.set_error(_excerpt(data))
            else:
                self._warn(exc)
            return False
        return obj.get("choices") == [] and isinstance(obj.get("usage"), dict)

    def _read_line(self, line: bytes) -> None:
        try:
            obj = orjson.loads(line)
            if isinstance(obj, dict):
                self._read(obj, None)
        except _FAILURES as exc:
            self._warn(exc)

    def _read(self, obj: dict[str, Any], event: str | None) -> None:
        if (
            "error" in obj
            or event == "error"
            or obj.get("type") == "error"
            or obj.get("object") == "error"
        ):
            message = error_message(obj, loose=event == "error")
            if message is None and event == "error":
                message = compact(obj)
            if message is not None:
                self._tally.set_error(message)
                llamacpp.read_error_counts(self._tally, obj.get("error"))
                return
        self._reader.frame(self._tally, obj, event)

    def _read_json(self) -> None:
        body = self._body
        if not body or body.isspace():
            return
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            self._read_unparsed(exc)
            return
        if not isinstance(obj, dict):
            return
        message = error_message(obj, loose=self._status >= 400)
        if message is not None:
            self._tally.set_error(message)
            llamacpp.read_error_counts(self._tally, obj.get("error"))
        elif self._status < 400:
            self._reader.body(self._tally, obj)

    def _read_unparsed(self, exc: ValueError) -> None:
        if self._status >= 400:
            self._tally.set_error(_excerpt(bytes(self._body)))
            return
        lines = [bytes(line) for line in self._body.split(b"\n") if line.strip()]
        if len(lines) < 2:
            self._warn(exc)
            return
        # NDJSON sent without its Content-Type.
        for line in lines:
            self._read_line(line)

    # Reporting

    def _usage(self, *, cut_short: bool, cancelled: bool) -> Usage:
        tally, exchange = self._tally, self._exchange
        error = tally.error
        if error is None and self._status >= 400:
            error = f"upstream answered HTTP {self._status}"
        if error is None and cut_short:
            error = CUT_SHORT
        input_tokens = tally.input
        if input_tokens == 0 and (exchange.prompt_text or exchange.prompt):
            input_tokens = None  # a server that did not count the prompt
        output_tokens = tally.output
        if output_tokens is None and exchange.dialect in EMBEDDINGS and not error:
            output_tokens = 0
        total = tally.total or _sum(input_tokens, output_tokens)
        return Usage(
            model=tally.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=total,
            cached_input_tokens=tally.cached,
            reasoning_tokens=tally.reasoning,
            usage_source="upstream" if tally.reported else "none",
            tokens_per_second=tally.tokens_per_second,
            server_ttft_ms=tally.server_ttft_ms,
            finish_reason="cancelled" if cancelled else _finish(tally),
            response_text=tally.text.value() or tally.tools.value(),
            is_error=error is not None,
            error_message=error,
            details=tally.details,
            reasoning_text=tally.thought.value(),
        )

    def _give_up(self, cause: BaseException) -> None:
        self._stopped = True
        self._warn(cause)

    def _warn(self, cause: BaseException) -> None:
        if self._warned or self._quiet:
            return
        self._warned = True
        logger.warning(
            "Usage unreadable in response body, counts may be missing "
            "dialect=%s endpoint=%s status=%s cause=%s",
            self._exchange.dialect,
            self._exchange.endpoint,
            self._status,
            cause,
        )


def _sum(first: int | None, second: int | None) -> int | None:
    return None if first is None or second is None else first + second


def _finish(tally: Tally) -> str | None:
    return tally.finish_reason or tally.stop_reason


def _excerpt(data: bytes) -> str:
    return clip_text(data.decode("utf-8", "replace").strip(), MAX_ERROR_CHARS)
