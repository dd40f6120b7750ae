"""Turn what the relay saw into one Record: timings, usage and text.

Runs once per request, after the client has its last byte; it never touches
the database, it only builds the value the writer will store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from lms_metrics_proxy.store.record import Record
from lms_metrics_proxy.usage import Exchange, Usage
from lms_metrics_proxy.usage.estimate import clip_text

logger = logging.getLogger(__name__)
access = logging.getLogger("lms_metrics_proxy.access")


@dataclass(slots=True)
class Timeline:
    """Clock readings of one request, in seconds of the event loop's clock."""

    wall_start: datetime
    start: float
    first_content: float | None = None
    end: float = 0.0


@dataclass(slots=True)
class Outcome:
    """How the exchange ended, as the relay saw it."""

    status: int
    request_bytes: int
    response_bytes: int = 0
    client: str | None = None
    cut_short: bool = False
    cancelled: bool = False
    reached_server: bool = True  # False: no connection to the server opened
    proxy_error: str | None = None
    usage: Usage = field(default_factory=Usage)


def build_record(
    exchange: Exchange,
    usage: Usage,
    timeline: Timeline,
    outcome: Outcome,
    *,
    store_content: bool,
    max_chars: int,
) -> Record:
    """Combine request facts, response usage and timings into a Record."""
    duration = max(0.0, timeline.end - timeline.start)
    ttft_ms = _ttft_ms(exchange, usage, timeline)
    error_message = outcome.proxy_error or usage.error_message
    record = Record(
        start_time=timeline.wall_start,
        end_time=timeline.wall_start + timedelta(seconds=duration),
        duration_ms=round(duration * 1000),
        ttft_ms=ttft_ms,
        method=exchange.method,
        endpoint=exchange.endpoint,
        http_status=outcome.status,
        usage_source=usage.usage_source,
        model=usage.model or exchange.requested_model,
        requested_model=exchange.requested_model,
        client=outcome.client,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        tokens_per_second=_tokens_per_second(usage, timeline),
        is_error=_is_error(usage, outcome),
        error_message=None
        if outcome.cancelled and not usage.is_error
        else error_message,
        was_streamed=exchange.is_stream,
        finish_reason="cancelled" if outcome.cancelled else usage.finish_reason,
        request_bytes=outcome.request_bytes,
        response_bytes=outcome.response_bytes,
        details=usage.details or None,
    )
    if store_content:
        record.prompt = clip_text(exchange.prompt, max_chars)
        record.response = clip_text(usage.response_text, max_chars)
    _log_access(record)
    return record


def needs_estimate(exchange: Exchange, usage: Usage) -> bool:
    """Whether a tracked request lacks a count that some text could give."""
    has_text = bool(exchange.prompt_text or usage.response_text or usage.reasoning_text)
    return (
        exchange.is_tracked
        and has_text
        and (usage.input_tokens is None or usage.output_tokens is None)
    )


def now_utc() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def _is_error(usage: Usage, outcome: Outcome) -> bool:
    if outcome.cancelled:
        return usage.is_error
    return (
        outcome.status >= 400
        or usage.is_error
        or outcome.cut_short
        or outcome.proxy_error is not None
    )


def _ttft_ms(exchange: Exchange, usage: Usage, timeline: Timeline) -> int | None:
    if exchange.is_stream and timeline.first_content is not None:
        return round((timeline.first_content - timeline.start) * 1000)
    return usage.server_ttft_ms


def _tokens_per_second(usage: Usage, timeline: Timeline) -> float | None:
    if usage.tokens_per_second is not None:
        return usage.tokens_per_second
    if not usage.output_tokens:
        return None
    # From the first token when we saw it, else over the whole exchange.
    began = timeline.first_content or timeline.start
    seconds = timeline.end - began
    if seconds <= 0:
        return None
    return round(usage.output_tokens / seconds, 2)


def _log_access(record: Record) -> None:
    if not access.isEnabledFor(logging.DEBUG):
        return
    access.debug(
        "%s %s status=%s model=%s input_tokens=%s output_tokens=%s "
        "usage_source=%s duration_ms=%s streamed=%s",
        record.method,
        record.endpoint,
        record.http_status,
        record.model,
        record.input_tokens,
        record.output_tokens,
        record.usage_source,
        record.duration_ms,
        record.was_streamed,
    )
