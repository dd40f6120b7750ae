"""llama.cpp's own fields: timings, the native /completion stream, error counts."""

from __future__ import annotations

import json
from typing import Any

from .wire import JSON, run, sse

CHAT = "/v1/chat/completions"
ASK = {"model": "x", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
TIMINGS = {
    "cache_n": 236,
    "prompt_n": 14,
    "prompt_ms": 35.2,
    "predicted_n": 20,
    "predicted_ms": 401.0,
    "predicted_per_second": 49.88,
}


def test_timings_alone_give_input_output_speed_and_prompt_time() -> None:
    body = sse(
        {"model": "g.gguf", "choices": [{"index": 0, "delta": {"content": "Hi"}}]},
        {
            "model": "g.gguf",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "timings": TIMINGS,
        },
    )

    usage = run(CHAT, ASK, body)

    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (
        250,
        20,
        270,
    )
    assert usage.cached_input_tokens == 236
    assert (usage.tokens_per_second, usage.server_ttft_ms) == (49.88, 35)
    assert usage.details["timings"] == TIMINGS


def test_usage_wins_over_timings_on_the_same_chunk() -> None:
    usage_counts = {"prompt_tokens": 250, "completion_tokens": 20, "total_tokens": 270}
    body = sse(
        {
            "model": "g",
            "choices": [],
            "usage": usage_counts,
            "timings": {**TIMINGS, "prompt_n": 1},
        }
    )

    usage = run(CHAT, ASK, body)

    assert (usage.input_tokens, usage.cached_input_tokens) == (250, 236)


def native(content: str, predicted: int, **more: Any) -> dict[str, Any]:
    frame = {
        "index": 0,
        "content": content,
        "stop": False,
        "tokens_predicted": predicted,
    }
    return {**frame, "tokens_evaluated": 6, **more}


def test_native_stream_counts_run_so_a_cut_stream_keeps_the_last() -> None:
    body = sse(native(" Paris", 1), native(".", 2))

    usage = run(
        "/completion",
        {"prompt": "The capital of France is", "stream": True},
        body,
        cut_short=True,
    )

    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (6, 2, 8)
    assert (usage.response_text, usage.is_error) == (" Paris.", True)


def test_native_final_frame_gives_model_and_stop_type() -> None:
    body = sse(
        native(" Paris", 1), native("", 1, stop=True, model="g.gguf", stop_type="eos")
    )

    usage = run("/completion", {"prompt": "The capital", "stream": True}, body)

    assert (usage.model, usage.finish_reason) == ("g.gguf", "eos")


def test_native_whole_body() -> None:
    body = native(" Paris", 4, stop=True, model="g.gguf", stop_type="limit")

    usage = run(
        "/completion", {"prompt": "The capital"}, json.dumps(body).encode(), JSON
    )

    assert (usage.input_tokens, usage.output_tokens, usage.response_text) == (
        6,
        4,
        " Paris",
    )


def test_exceed_context_error_gives_the_prompt_size_as_input() -> None:
    error = {
        "error": {
            "code": 400,
            "message": "too big",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 4390,
            "n_ctx": 4096,
        }
    }

    usage = run(CHAT, ASK, json.dumps(error).encode(), JSON, status=400)

    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (
        4390,
        0,
        4390,
    )
    assert (usage.usage_source, usage.is_error, usage.error_message) == (
        "upstream",
        True,
        "too big",
    )


def test_error_field_mid_stream_is_an_error() -> None:
    body = (
        b'error: {"code":400,"message":"the request exceeds the available context'
        b' size"}\n\ndata: [DONE]\n\n'
    )

    usage = run(CHAT, ASK, body)

    assert (usage.is_error, usage.error_message, usage.response_text) == (
        True,
        "the request exceeds the available context size",
        None,
    )


def test_older_timings_without_cache_or_speed_give_the_counts_they_have() -> None:
    body = sse(
        {"model": "g", "choices": [], "timings": {"prompt_n": 5, "predicted_n": 2}}
    )

    usage = run(CHAT, ASK, body)

    assert (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens) == (
        5,
        2,
        None,
    )
    assert (usage.tokens_per_second, usage.server_ttft_ms) == (None, None)
