"""LM Studio's REST APIs: v0 stats on OpenAI bodies, v1 chat named events."""

from __future__ import annotations

import json
from typing import Any

from .wire import JSON, run, sse

V1 = "/api/v1/chat"
ASK = {"model": "qwen/qwen3-4b-2507", "input": "Hello!", "stream": True}


def named(*events: tuple[str, dict[str, Any]]) -> bytes:
    """Return SSE bytes of named events whose data repeats the name as `type`."""
    return b"".join(
        sse({"type": kind, **fields}, event=kind) for kind, fields in events
    )


def test_v0_stats_give_speed_ttft_and_details() -> None:
    body = {
        "model": "granite",
        "choices": [
            {"index": 0, "message": {"content": "Hi"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
        "stats": {
            "tokens_per_second": 51.5,
            "time_to_first_token": 0.094,
            "stop_reason": "eosFound",
        },
        "model_info": {"arch": "granite"},
        "runtime": {"name": "llama.cpp"},
    }

    usage = run(
        "/api/v0/chat/completions",
        {"model": "granite"},
        json.dumps(body).encode(),
        JSON,
    )

    assert (usage.tokens_per_second, usage.server_ttft_ms) == (51.5, 94)
    assert usage.finish_reason == "stop"  # the choice's word wins over stop_reason
    assert usage.details["model_info"] == {"arch": "granite"}
    assert usage.details["runtime"] == {"name": "llama.cpp"}


def test_stop_reason_is_the_finish_reason_when_no_choice_gives_one() -> None:
    body = {
        "model": "g",
        "choices": [],
        "stats": {"stop_reason": "maxPredictedTokensReached"},
    }

    usage = run(
        "/api/v0/chat/completions", {"model": "g"}, json.dumps(body).encode(), JSON
    )

    assert usage.finish_reason == "maxPredictedTokensReached"


def test_empty_v1_stats_add_nothing() -> None:
    body = {"model": "g", "choices": [], "stats": {}}

    usage = run("/v1/chat/completions", {"model": "g"}, json.dumps(body).encode(), JSON)

    assert (usage.tokens_per_second, usage.details) == (None, {})


def test_v1_stream_reads_reasoning_message_and_chat_end_stats() -> None:
    stats = {
        "input_tokens": 11,
        "total_output_tokens": 9,
        "reasoning_output_tokens": 2,
        "tokens_per_second": 48.3,
        "time_to_first_token_seconds": 0.112,
        "model_load_time_seconds": 2.41,
    }
    result = {"model_instance_id": "qwen/qwen3-4b-2507", "output": [], "stats": stats}
    body = named(
        ("chat.start", {"model_instance_id": "qwen/qwen3-4b-2507"}),
        ("reasoning.delta", {"content": "Hm"}),
        ("message.delta", {"content": "Hi"}),
        ("chat.end", {"result": result}),
    )

    usage = run(V1, ASK, body)

    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (11, 9, 20)
    assert usage.reasoning_tokens == 2
    assert (usage.tokens_per_second, usage.server_ttft_ms) == (48.3, 112)
    assert (usage.response_text, usage.reasoning_text) == ("Hi", "Hm")
    assert usage.details["stats"]["model_load_time_seconds"] == 2.41


def test_v1_tool_call_events_are_assembled() -> None:
    body = named(
        ("tool_call.start", {"tool": "search"}),
        ("tool_call.arguments", {"tool": "search", "arguments": {"q": "x"}}),
    )

    usage = run(V1, ASK, body)

    assert usage.response_text == 'search({"q":"x"})'


def test_v1_whole_body_reads_its_output() -> None:
    body = {
        "model_instance_id": "q",
        "output": [
            {"type": "reasoning", "content": "Hm"},
            {"type": "message", "content": "Hello!"},
        ],
        "stats": {"input_tokens": 3, "total_output_tokens": 4},
    }

    usage = run(V1, {"model": "q", "input": "x"}, json.dumps(body).encode(), JSON)

    assert (usage.response_text, usage.reasoning_text, usage.total_tokens) == (
        "Hello!",
        "Hm",
        7,
    )


def test_v1_error_event_is_an_error() -> None:
    error = {
        "type": "error",
        "error": {"type": "model_not_found", "message": "No such model"},
    }

    usage = run(V1, ASK, sse(error, event="error"))

    assert (usage.is_error, usage.error_message) == (True, "No such model")


def test_v1_whole_body_tool_call_and_odd_items() -> None:
    body = {
        "output": [
            "x",
            {"type": "invalid_tool_call", "reason": "bad"},
            {"type": "tool_call", "tool": "f", "arguments": {"a": 1}},
        ]
    }

    usage = run(V1, {"model": "q", "input": "x"}, json.dumps(body).encode(), JSON)

    assert usage.response_text == 'f({"a":1})'
