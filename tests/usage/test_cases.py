"""Replay the 50 proxy cases through inspect_request and the meter, no sockets.

Each case's upstream body is fed as the relay would (its segments, gzip as the
case says, an abort as `cut_short`, a client hang-up as `cancelled`), and the
record fields that depend only on the usage package are compared with the
case's `expected_record`, operators included. Timing, byte counts and HTTP
details belong to the relay's own tests.
"""

from __future__ import annotations

import base64
import gzip
import itertools
import json
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from lms_metrics_proxy.usage import Exchange, Meter, Usage, inspect_request
from lms_metrics_proxy.usage.estimate import estimate
from lms_metrics_proxy.usage.text import clip_text

from .wire import CASES, MAX_CHARS

ALL_CASES = [json.loads(line) for line in CASES.read_text().splitlines() if line]
# Record columns this package decides; the rest belong to the relay and store.
COMPUTED = {
    "model",
    "requested_model",
    "was_streamed",
    "endpoint",
    "method",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "usage_source",
    "tokens_per_second",
    "finish_reason",
    "prompt",
    "response",
    "is_error",
    "error_message",
    "ttft_ms",
}


def substitute(value: Any) -> Any:
    """Replace `{i}` with 0, as the checker does for a concurrent case's copy 0."""
    if isinstance(value, str):
        return value.replace("{i}", "0")
    if isinstance(value, list):
        return [substitute(item) for item in value]
    if isinstance(value, dict):
        return {key: substitute(item) for key, item in value.items()}
    return value


def request_body(request: dict[str, Any]) -> bytes:
    """The exact bytes the checker's client sends."""
    if "json" in request:
        return json.dumps(substitute(request["json"])).encode()
    if "json_template" in request:
        text = json.dumps(request["json_template"])
        for name, spec in request["fill"].items():
            size = spec["base64_of_byte_ramp"]
            ramp = (bytes(range(256)) * (size // 256 + 1))[:size]
            text = text.replace(name, base64.b64encode(ramp).decode())
        return text.encode()
    return b""


def segments(answer: dict[str, Any], close_after: int | None) -> list[bytes]:
    """The chunks the relay reads: split, encoded, cut where the client left."""
    body = substitute(answer["body"]).encode()
    if close_after is not None:
        body = body[:close_after]
    cuts = [cut for cut in answer.get("split_at_bytes", []) if cut < len(body)]
    bounds = [0, *cuts, len(body)]
    parts = [body[a:b] for a, b in itertools.pairwise(bounds)]
    encoding = answer.get("body_encoding")
    if encoding == "gzip":
        return [gzip.compress(body, mtime=0)]
    if encoding == "gzip-sync-flush-per-segment":
        packer = zlib.compressobj(wbits=31)
        out = [
            packer.compress(part) + packer.flush(zlib.Z_SYNC_FLUSH) for part in parts
        ]
        out[-1] += packer.flush(zlib.Z_FINISH)
        return out
    return parts


def replay(case: dict[str, Any]) -> tuple[Exchange, Usage, bytes, dict[str, str]]:
    request = case["request"]
    path = request["path"].split("?", 1)[0]
    exchange = inspect_request(request["method"], path, request_body(request))
    answer = (case.get("upstream_responses") or [case.get("upstream_response")])[-1]
    headers = {key.lower(): value for key, value in answer["headers"].items()}
    meter = Meter(
        exchange,
        answer["status"],
        headers.get("content-type"),
        headers.get("content-encoding"),
        MAX_CHARS,
    )
    close_after = (case.get("client_actions") or {}).get("close_after_bytes")
    injected = exchange.can_inject and len(case.get("upstream_responses", [0])) == 1
    out = []
    for piece in segments(answer, close_after):
        out.append(meter.filter(piece) if injected else piece)
        if not injected:
            meter.feed(piece)
    out.append(meter.flush() if injected else b"")
    usage = meter.finish(
        cut_short=answer.get("ending") == "abort", cancelled=close_after is not None
    )
    return exchange, usage, b"".join(out), headers


def record(exchange: Exchange, usage: Usage) -> dict[str, Any]:
    """The row the relay would write, for the columns this package decides."""
    return {
        "model": usage.model or exchange.requested_model,
        "requested_model": exchange.requested_model,
        "was_streamed": exchange.is_stream,
        "endpoint": exchange.endpoint,
        "method": exchange.method,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "usage_source": usage.usage_source,
        "tokens_per_second": usage.tokens_per_second,
        "finish_reason": usage.finish_reason,
        "prompt": None
        if exchange.prompt is None
        else clip_text(exchange.prompt, MAX_CHARS),
        "response": usage.response_text,
        "is_error": usage.is_error,
        "error_message": usage.error_message,
        # Only a non-stream's ttft is the server's own figure.
        "ttft_ms": None if exchange.is_stream else usage.server_ttft_ms,
    }


def holds(expected: Any, value: Any) -> bool:
    """Whether `value` satisfies a case's literal or operator object."""
    if not isinstance(expected, dict):
        if isinstance(expected, bool) or isinstance(value, bool):
            return value is expected
        return bool(value == expected)
    checks: dict[str, Callable[[Any], bool]] = {
        "one_of": lambda arg: any(holds(item, value) for item in arg),
        "contains": lambda arg: (
            isinstance(value, str)
            and all(
                piece in value for piece in ([arg] if isinstance(arg, str) else arg)
            )
        ),
        "starts_with": lambda arg: isinstance(value, str) and value.startswith(arg),
        "not_null": lambda arg: (value is not None) is arg,
        "min": lambda arg: isinstance(value, int | float) and value >= arg,
        "max": lambda arg: isinstance(value, int | float) and value <= arg,
    }
    return all(checks[op](arg) for op, arg in expected.items())


def failures(expected: dict[str, Any], row: dict[str, Any]) -> list[str]:
    wrong = [
        f"{key}: expected {want!r}, got {row[key]!r}"
        for key, want in expected.items()
        if key in COMPUTED
        and not (key == "ttft_ms" and row["was_streamed"])
        and not holds(want, row[key])
    ]
    groups = expected.get("one_of")
    if groups and not any(failures(group, row) == [] for group in groups):
        wrong.append(f"no one_of group holds for {row}")
    return wrong


RECORDED = [case for case in ALL_CASES if case.get("expected_record")]


@pytest.mark.parametrize("case", RECORDED, ids=[case["id"] for case in RECORDED])
def test_case_record_without_a_tokenizer(case: dict[str, Any]) -> None:
    exchange, usage, _, _ = replay(case)

    assert exchange.is_tracked is True
    assert failures(substitute(case["expected_record"]), record(exchange, usage)) == []


@pytest.mark.parametrize("case", RECORDED, ids=[case["id"] for case in RECORDED])
def test_case_record_with_the_tokenizer(case: dict[str, Any]) -> None:
    pytest.importorskip("bpe_openai")
    exchange, usage, _, _ = replay(case)

    estimated = estimate(exchange, usage)

    assert (
        failures(substitute(case["expected_record"]), record(exchange, estimated)) == []
    )


def test_untracked_case_writes_no_row() -> None:
    untracked = [case for case in ALL_CASES if case.get("expected_record") is None]
    exchanges = [replay(case)[0] for case in untracked]

    assert [exchange.is_tracked for exchange in exchanges] == [False]


@pytest.mark.parametrize("case", ALL_CASES, ids=[case["id"] for case in ALL_CASES])
def test_case_client_body(case: dict[str, Any]) -> None:
    _, _, body, _ = replay(case)
    expectation = case["client_expectation"]
    answer = (case.get("upstream_responses") or [case.get("upstream_response")])[-1]
    if expectation["body"] == "usage-chunk-removed":
        wanted = expectation["expected_body"].encode()
    elif expectation["body"] == "prefix":
        wanted = substitute(answer["body"]).encode()[: len(body)]
    else:
        wanted = b"".join(segments(answer, None))

    assert body == wanted
