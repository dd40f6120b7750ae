"""Anthropic Messages: usage merged from message_start and message_delta."""

from __future__ import annotations

import json
from typing import Any

from .wire import JSON, run, sse

MESSAGES = "/v1/messages"
ASK = {
    "model": "c",
    "max_tokens": 64,
    "stream": True,
    "messages": [{"role": "user", "content": "Hi"}],
}


def event(kind: str, **fields: Any) -> bytes:
    return sse({"type": kind, **fields}, event=kind)


def start(**usage: int) -> bytes:
    message = {
        "id": "m1",
        "type": "message",
        "model": "claude-x",
        "content": [],
        "usage": usage,
    }
    return event("message_start", message=message)


def text(piece: str) -> bytes:
    return event(
        "content_block_delta", index=0, delta={"type": "text_delta", "text": piece}
    )


def delta(stop: str | None = "end_turn", **usage: int) -> bytes:
    return event("message_delta", delta={"stop_reason": stop}, usage=usage)


def test_start_placeholder_output_is_replaced_by_the_delta() -> None:
    body = (
        start(input_tokens=25, output_tokens=1)
        + text("Hello")
        + delta(output_tokens=15)
    )

    usage = run(MESSAGES, ASK, body)

    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (25, 15, 40)
    assert (usage.finish_reason, usage.model, usage.response_text) == (
        "end_turn",
        "claude-x",
        "Hello",
    )


def test_start_placeholder_is_never_an_output_count() -> None:
    body = start(input_tokens=12, output_tokens=1) + text("Hello! How")

    usage = run(MESSAGES, ASK, body, cut_short=True)

    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (
        12,
        None,
        None,
    )


def test_input_adds_both_cache_counts_and_cached_is_the_cache_read() -> None:
    body = start(
        input_tokens=12,
        cache_creation_input_tokens=100,
        cache_read_input_tokens=2048,
        output_tokens=1,
    ) + delta(output_tokens=10)

    usage = run(MESSAGES, ASK, body)

    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (
        2160,
        10,
        2170,
    )
    assert usage.cached_input_tokens == 2048


def test_delta_input_overrides_the_start_estimate_field_by_field() -> None:
    body = start(input_tokens=9, cache_read_input_tokens=4, output_tokens=0) + delta(
        input_tokens=14, output_tokens=8
    )

    usage = run(MESSAGES, ASK, body)

    assert (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens) == (
        18,
        8,
        4,
    )


def test_all_zero_start_is_replaced_by_the_delta() -> None:
    body = start(
        input_tokens=0,
        output_tokens=0,
        cache_creation_input_tokens=0,
        cache_read_input_tokens=0,
    ) + delta(input_tokens=11, output_tokens=5)

    usage = run(MESSAGES, ASK, body)

    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (11, 5, 16)
    assert usage.cached_input_tokens == 0


def test_ping_and_block_start_are_not_content_and_thinking_is_reasoning() -> None:
    body = (
        start(input_tokens=5)
        + event(
            "content_block_start",
            index=0,
            content_block={"type": "thinking", "thinking": ""},
        )
        + event("ping")
        + event(
            "content_block_delta",
            index=0,
            delta={"type": "thinking_delta", "thinking": "Hm"},
        )
        + text("Yes")
    )

    usage = run(MESSAGES, ASK, body)

    assert (usage.reasoning_text, usage.response_text) == ("Hm", "Yes")


def test_tool_use_stream_is_assembled() -> None:
    block = {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}
    body = (
        start(input_tokens=5)
        + event("content_block_start", index=1, content_block=block)
        + event(
            "content_block_delta",
            index=1,
            delta={"type": "input_json_delta", "partial_json": '{"city":'},
        )
        + event(
            "content_block_delta",
            index=1,
            delta={"type": "input_json_delta", "partial_json": '"Paris"}'},
        )
        + delta(stop="tool_use", output_tokens=9)
    )

    usage = run(MESSAGES, ASK, body)

    assert (usage.response_text, usage.finish_reason) == (
        'get_weather({"city":"Paris"})',
        "tool_use",
    )


def test_error_event_is_an_error_and_keeps_the_text_so_far() -> None:
    error = {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    body = start(input_tokens=12) + text("Hi") + sse(error, event="error")

    usage = run(MESSAGES, ASK, body)

    assert (usage.is_error, usage.error_message, usage.response_text) == (
        True,
        "Overloaded",
        "Hi",
    )


def test_whole_message_with_text_and_tool_use() -> None:
    message = {
        "model": "claude-x",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "name": "f", "input": {"a": 1}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 7, "output_tokens": 3},
    }

    usage = run(MESSAGES, {"model": "c"}, json.dumps(message).encode(), JSON)

    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (7, 3, 10)
    assert (usage.response_text, usage.finish_reason) == ("Let me check.", "tool_use")


def test_odd_event_shapes_are_skipped() -> None:
    body = (
        start(input_tokens=5)
        + event("content_block_start", index=0, content_block="x")
        + event(
            "content_block_start", index=1, content_block={"type": "server_tool_use"}
        )
        + event("content_block_delta", index=0, delta="x")
        + event("content_block_delta", index=0, delta={"type": "signature_delta"})
        + event("message_delta", delta="x", usage={"output_tokens": 2})
        + text("ok")
    )

    usage = run(MESSAGES, ASK, body)

    assert (usage.response_text, usage.output_tokens, usage.finish_reason) == (
        "ok",
        2,
        None,
    )
