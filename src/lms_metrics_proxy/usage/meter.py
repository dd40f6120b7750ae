"""The meter: one per response, fed every chunk, reports the usage at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lms_metrics_proxy.usage.exchange import Exchange


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
        raise NotImplementedError

    def feed(self, data: bytes) -> None:
        """Account for one chunk of the body as it came off the wire."""
        raise NotImplementedError

    def filter(self, data: bytes) -> bytes:
        """Feed a chunk and return the whole events to forward, minus usage-only ones."""
        raise NotImplementedError

    def flush(self) -> bytes:
        """Return what `filter` still holds when the body ends."""
        raise NotImplementedError

    def finish(self, *, cut_short: bool = False, cancelled: bool = False) -> Usage:
        """Return the usage of the whole body; call once, at the end."""
        raise NotImplementedError
