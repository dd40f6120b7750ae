"""OpenAI dialects: chat and text completions, embeddings, the Responses API."""

from __future__ import annotations

import json
from typing import Any

from .wire import JSON, run, sse

CHAT = "/v1/chat/completions"
STREAM = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": True}


def chunk(index: int = 0, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    choice = {"index": index, "delta": delta, "finish_reason": finish}
    return {"object": "chat.completion.chunk", "model": "m", "choices": [choice]}


def usage_chunk(
    prompt: int, completion: int, total: int, **more: Any
) -> dict[str, Any]:
    counts = {"prompt_tokens": prompt, "completion_tokens": completion}
    return {
        "model": "m",
        "choices": [],
        "usage": {**counts, "total_tokens": total, **more},
    }


def test_usage_null_never_overwrites_a_captured_usage() -> None:
    body = sse(usage_chunk(27, 3, 30), {**chunk(content="x"), "usage": None})

    usage = run(CHAT, STREAM, body)

    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (27, 3, 30)


def test_cumulative_usage_on_every_chunk_is_never_summed() -> None:
    body = sse(
        {**chunk(content="Blue"), "usage": usage_chunk(16, 1, 17)["usage"]},
        {**chunk(content=" sky"), "usage": usage_chunk(16, 2, 18)["usage"]},
        usage_chunk(16, 3, 19),
    )

    usage = run(CHAT, STREAM, body)

    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (16, 3, 19)


def test_explicit_zero_output_stays_and_zero_input_is_unreported() -> None:
    body = sse(
        {**chunk(content="Hi", finish="stop"), "usage": usage_chunk(0, 0, 0)["usage"]}
    )

    usage = run(CHAT, STREAM, body)

    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (
        None,
        0,
        None,
    )
    assert usage.usage_source == "upstream"


def test_zero_input_for_an_empty_prompt_stays_zero() -> None:
    body = sse(usage_chunk(0, 2, 2))

    usage = run(CHAT, {"model": "m", "stream": True}, body)

    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (0, 2, 2)


def test_total_is_the_sum_when_the_server_gives_none() -> None:
    body = sse({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 5}})

    usage = run(CHAT, STREAM, body)

    assert usage.total_tokens == 9


def test_cached_and_reasoning_tokens_are_parts_never_added() -> None:
    details = {
        "prompt_tokens_details": {"cached_tokens": 1152},
        "completion_tokens_details": {"reasoning_tokens": 64},
    }
    body = sse(usage_chunk(1290, 71, 1361, **details))

    usage = run(CHAT, STREAM, body)

    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (
        1290,
        71,
        1361,
    )
    assert (usage.cached_input_tokens, usage.reasoning_tokens) == (1152, 64)


def test_only_choice_zero_text_is_kept_but_any_choice_is_content() -> None:
    body = sse(
        chunk(index=1, content="Blue"),
        chunk(index=0, content="Red"),
        chunk(index=1, content="!", finish="length"),
        chunk(index=0, content=".", finish="stop"),
    )

    usage = run(CHAT, {**STREAM, "n": 2}, body)

    assert (usage.response_text, usage.finish_reason) == ("Red.", "stop")


def test_tool_call_arguments_are_assembled_when_there_is_no_text() -> None:
    call = {"index": 0, "id": "c1", "type": "function"}
    body = sse(
        chunk(role="assistant", content=""),
        chunk(
            tool_calls=[{**call, "function": {"name": "get_weather", "arguments": ""}}]
        ),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"city": "Pa'}}]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": 'ris"}'}}]),
        chunk(finish="tool_calls"),
    )

    usage = run(CHAT, STREAM, body)

    assert usage.response_text == 'get_weather({"city": "Paris"})'
    assert usage.finish_reason == "tool_calls"


def test_reasoning_text_is_kept_apart_from_the_answer() -> None:
    body = sse(
        chunk(reasoning="Two plus two"),
        chunk(reasoning_content=" is four."),
        chunk(content="4", finish="stop"),
    )

    usage = run(CHAT, STREAM, body)

    assert (usage.response_text, usage.reasoning_text) == ("4", "Two plus two is four.")


def test_text_completion_chunks_give_their_text() -> None:
    body = sse(
        {
            "model": "m",
            "choices": [{"index": 0, "text": " Paris", "finish_reason": None}],
        },
        {
            "model": "m",
            "choices": [{"index": 0, "text": ".", "finish_reason": "length"}],
        },
    )

    usage = run("/v1/completions", {"prompt": "Capital", "stream": True}, body)

    assert (usage.response_text, usage.finish_reason) == (" Paris.", "length")


def test_content_given_as_parts_is_read_as_text() -> None:
    message = {"role": "assistant", "content": [{"type": "text", "text": "Hi"}]}
    body = b'{"model":"m","choices":[{"index":0,"message":%s}]}' % (
        json.dumps(message).encode()
    )

    usage = run(CHAT, {"model": "m"}, body, JSON)

    assert usage.response_text == "Hi"


def test_embeddings_without_usage_have_zero_output_but_no_source() -> None:
    body = b'{"object":"list","data":[{"embedding":[0.1]}],"model":"e"}'

    usage = run("/v1/embeddings", {"input": "Hi"}, body, JSON)

    assert (usage.input_tokens, usage.output_tokens, usage.usage_source) == (
        None,
        0,
        "none",
    )


def test_embeddings_error_has_no_output_count() -> None:
    body = b'{"error":{"message":"bad input"}}'

    usage = run("/v1/embeddings", {"input": "Hi"}, body, JSON, status=400)

    assert (usage.output_tokens, usage.error_message) == (None, "bad input")


# Responses API

RESPONSES = "/v1/responses"
ASK = {"model": "gpt", "input": "Say hello", "stream": True}


def event(kind: str, **fields: Any) -> bytes:
    return sse({"type": kind, **fields}, event=kind)


def response(status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": "r",
        "object": "response",
        "model": "gpt-x",
        "status": status,
        **fields,
    }


def test_responses_stream_reads_deltas_and_final_usage() -> None:
    final_usage = {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 3},
        "total_tokens": 17,
    }
    body = b"".join(
        [
            event("response.created", response=response("in_progress", usage=None)),
            event("response.reasoning_summary_text.delta", delta="Think"),
            event("response.output_text.delta", delta="Hello"),
            event("response.output_text.delta", delta=" there"),
            event(
                "response.completed",
                response=response(
                    "completed",
                    usage=final_usage,
                    output=[{"type": "message", "content": [{"text": "Hello there"}]}],
                ),
            ),
        ]
    )

    usage = run(RESPONSES, ASK, body)

    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (12, 5, 17)
    assert (usage.cached_input_tokens, usage.reasoning_tokens) == (0, 3)
    assert (usage.response_text, usage.reasoning_text) == ("Hello there", "Think")
    assert (usage.model, usage.is_error) == ("gpt-x", False)


def test_responses_failed_is_an_error_with_its_message() -> None:
    failed = response("failed", error={"code": "server_error", "message": "Boom"})
    body = event("response.output_text.delta", delta="Hi") + event(
        "response.failed", response=failed
    )

    usage = run(RESPONSES, ASK, body)

    assert (usage.is_error, usage.error_message, usage.response_text) == (
        True,
        "Boom",
        "Hi",
    )


def test_responses_error_event_is_an_error() -> None:
    body = event("error", code="ERR", message="Something went wrong", param=None)

    usage = run(RESPONSES, ASK, body)

    assert (usage.is_error, usage.error_message) == (True, "Something went wrong")


def test_responses_incomplete_gives_its_reason() -> None:
    incomplete = response(
        "incomplete", incomplete_details={"reason": "max_output_tokens"}
    )

    usage = run(RESPONSES, ASK, event("response.incomplete", response=incomplete))

    assert usage.finish_reason == "max_output_tokens"


def test_responses_function_call_stream_is_assembled() -> None:
    item = {"type": "function_call", "name": "lookup", "arguments": ""}
    body = b"".join(
        [
            event("response.output_item.added", output_index=0, item=item),
            event(
                "response.function_call_arguments.delta", output_index=0, delta='{"q"'
            ),
            event(
                "response.function_call_arguments.delta", output_index=0, delta=":1}"
            ),
        ]
    )

    usage = run(RESPONSES, ASK, body)

    assert usage.response_text == 'lookup({"q":1})'


def test_responses_whole_body_reads_its_output() -> None:
    body = response(
        "completed",
        usage={"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
        output=[
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Hm"}]},
            {"type": "message", "content": [{"type": "output_text", "text": "Hi"}]},
        ],
        error=None,
    )

    usage = run(RESPONSES, {"input": "x"}, json.dumps(body).encode(), JSON)

    assert (usage.input_tokens, usage.output_tokens) == (3, 2)
    assert (usage.response_text, usage.reasoning_text, usage.is_error) == (
        "Hi",
        "Hm",
        False,
    )


def test_odd_chunk_shapes_are_skipped() -> None:
    body = sse(
        {"model": "m", "choices": ["x", None, {"index": 0, "delta": {"content": 5}}]},
        chunk(tool_calls=["x", {"index": 0, "function": "not an object"}]),
        chunk(index=1, reasoning="r", tool_calls=[{"function": {"name": "f"}}]),
        chunk(content="ok"),
    )

    usage = run(CHAT, STREAM, body)

    assert (usage.response_text, usage.reasoning_text, usage.is_error) == (
        "ok",
        None,
        False,
    )


def test_responses_whole_body_function_call_and_odd_items() -> None:
    body = response(
        "completed",
        output=[
            "x",
            {"type": "web_search_call", "status": "completed"},
            {"type": "function_call", "name": "f", "arguments": "{}"},
        ],
    )

    usage = run(RESPONSES, {"input": "x"}, json.dumps(body).encode(), JSON)

    assert usage.response_text == "f({})"
