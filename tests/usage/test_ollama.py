"""Ollama's native API: final-line counts, nanosecond durations, NDJSON errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .wire import JSON, NDJSON, ndjson, run

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "Hi"}]}


def line(content: str = "", **more: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": content}
    return {"model": "llama3.2", "message": message, "done": False, **more}


FINAL = {
    "done": True,
    "done_reason": "stop",
    "total_duration": 4_353_619_900,
    "load_duration": 63_915_300,
    "prompt_eval_count": 10,
    "prompt_eval_duration": 246_847_000,
    "eval_count": 17,
    "eval_duration": 4_032_296_000,
}


def test_counts_and_server_figures_come_from_the_done_line() -> None:
    body = ndjson(line("Hello"), line(" there!"), line("", **FINAL))

    usage = run("/api/chat", CHAT, body, NDJSON)

    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (10, 17, 27)
    assert usage.tokens_per_second == pytest.approx(17 / 4.032296)
    assert usage.server_ttft_ms == 311  # (63.9153 + 246.847) ms
    assert (usage.finish_reason, usage.response_text) == ("stop", "Hello there!")
    assert usage.details["durations_ns"]["eval_duration"] == 4_032_296_000


def test_error_line_is_an_error_with_the_text_so_far() -> None:
    body = ndjson(line("Hello"), {"error": "model crashed"})

    usage = run("/api/chat", CHAT, body, NDJSON)

    assert (usage.is_error, usage.error_message, usage.response_text) == (
        True,
        "model crashed",
        "Hello",
    )
    assert usage.input_tokens is None


def test_thinking_and_tool_calls_are_read() -> None:
    call = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    body = ndjson(
        {
            "model": "q",
            "message": {"role": "assistant", "content": "", "thinking": "Hm"},
        },
        {
            "model": "q",
            "message": {"role": "assistant", "content": "", "tool_calls": [call]},
        },
    )

    usage = run("/api/chat", CHAT, body, NDJSON)

    assert (usage.reasoning_text, usage.response_text) == (
        "Hm",
        'get_weather({"city":"Paris"})',
    )


def test_generate_stream_reads_response_pieces() -> None:
    body = ndjson(
        {"model": "llama3.2", "response": "Hel", "done": False},
        {"model": "llama3.2", "response": "lo", "done": False},
        {
            "model": "llama3.2",
            "response": "",
            "done": True,
            "prompt_eval_count": 3,
            "eval_count": 2,
        },
    )

    usage = run("/api/generate", {"model": "llama3.2", "prompt": "Hi"}, body, NDJSON)

    assert (usage.response_text, usage.input_tokens, usage.output_tokens) == (
        "Hello",
        3,
        2,
    )


def test_json_error_for_a_streaming_request_is_an_error() -> None:
    body = b'{"error":"model \'llama9\' not found"}'

    usage = run("/api/chat", CHAT, body, JSON, status=404)

    assert (usage.is_error, usage.error_message) == (True, "model 'llama9' not found")


def test_old_embeddings_endpoint_has_zero_output_and_no_counts() -> None:
    body = json.dumps({"embedding": [0.1, 0.2]}).encode()

    usage = run("/api/embeddings", {"model": "e", "prompt": "Hi"}, body, JSON)

    assert (usage.input_tokens, usage.output_tokens, usage.usage_source) == (
        None,
        0,
        "none",
    )


def test_tool_calls_without_a_function_object_are_skipped() -> None:
    message = {
        "role": "assistant",
        "content": "ok",
        "tool_calls": ["x", {"function": 1}],
    }

    usage = run("/api/chat", CHAT, ndjson({"model": "q", "message": message}), NDJSON)

    assert usage.response_text == "ok"
