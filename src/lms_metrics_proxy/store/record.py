"""The Record: one row of table `requests`, as the relay hands it to the writer.

A plain value with no database code, so the relay can build one without
importing the storage engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class Record:
    """One tracked request, with every column of SPEC §3 but `id`."""

    start_time: datetime
    end_time: datetime
    duration_ms: int
    method: str
    endpoint: str
    http_status: int
    usage_source: str = "none"
    ttft_ms: int | None = None
    model: str | None = None
    requested_model: str | None = None
    client: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cached_input_tokens: int | None = None
    reasoning_tokens: int | None = None
    tokens_per_second: float | None = None
    prompt: str | None = None
    response: str | None = None
    is_error: bool = False
    error_message: str | None = None
    was_streamed: bool = False
    finish_reason: str | None = None
    request_bytes: int = 0
    response_bytes: int = 0
    # Dialect extras that have no column of their own (LM Studio's model_info
    # and runtime, server timings); stored as JSON in `details`.
    details: dict[str, Any] | None = None
