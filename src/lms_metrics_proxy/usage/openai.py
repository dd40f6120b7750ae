"""The OpenAI dialects: chat and text completions, embeddings, Responses API.

Also what other servers add to OpenAI-shaped bodies: llama.cpp's `timings`
and LM Studio's `stats` (read by their own modules). Usage may sit on any
chunk (vLLM and LocalAI send it on every one, cumulative) or on a final chunk
whose `choices` is empty; the tally keeps the last real one.
"""

from __future__ import annotations

from typing import Any

from lms_metrics_proxy.usage import llamacpp, lmstudio
from lms_metrics_proxy.usage.tally import Tally, count, error_message


def read_usage(tally: Tally, usage: Any) -> None:
    """Report an OpenAI `usage` object (chat, completions or Responses naming)."""
    if not isinstance(usage, dict):
        return
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    prompt_details = usage.get("prompt_tokens_details") or usage.get(
        "input_tokens_details"
    )
    completion_details = usage.get("completion_tokens_details") or usage.get(
        "output_tokens_details"
    )
    tally.report(
        input=count(prompt),
        output=count(completion),
        total=count(usage.get("total_tokens")),
        cached=_detail(prompt_details, "cached_tokens"),
        reasoning=_detail(completion_details, "reasoning_tokens"),
    )


def _detail(details: Any, key: str) -> int | None:
    return count(details.get(key)) if isinstance(details, dict) else None


class ChatReader:
    """Chat and text completions and embeddings, streamed or whole."""

    __slots__ = ()

    def frame(self, tally: Tally, obj: dict[str, Any], event: str | None) -> None:
        """Read one chunk of a stream."""
        if tally.model is None:
            tally.set_model(obj.get("model"))
        choices = obj.get("choices")
        if choices and isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    _read_choice(tally, choice)
        timings = obj.get("timings")
        if timings:
            llamacpp.read_timings(tally, timings)
        usage = obj.get("usage")
        if usage:
            read_usage(tally, usage)
        if "stats" in obj:
            lmstudio.read_stats(tally, obj)

    def body(self, tally: Tally, obj: dict[str, Any]) -> None:
        """Read a whole body: the same fields, with `message` for `delta`."""
        self.frame(tally, obj, None)


def _read_choice(tally: Tally, choice: dict[str, Any]) -> None:
    keep = choice.get("index", 0) in (0, None)
    part = choice.get("delta") or choice.get("message")
    if isinstance(part, dict):
        _read_message(tally, part, keep)
    else:
        tally.add_text(choice.get("text"), keep)
    if keep:
        tally.set_finish(choice.get("finish_reason"))


def _read_message(tally: Tally, part: dict[str, Any], keep: bool) -> None:
    content = part.get("content")
    if content:
        tally.add_text(content if isinstance(content, str) else _parts(content), keep)
    thought = part.get("reasoning_content") or part.get("reasoning")
    if thought:
        tally.add_thought(thought, keep)
    calls = part.get("tool_calls")
    if calls and isinstance(calls, list):
        for position, call in enumerate(calls):
            if isinstance(call, dict):
                _read_tool_call(tally, call, position, keep)


def _read_tool_call(
    tally: Tally, call: dict[str, Any], position: int, keep: bool
) -> None:
    function = call.get("function")
    if not isinstance(function, dict):
        return
    index = call.get("index", position)
    index = index if type(index) is int else position
    tally.add_tool(index, function.get("name"), function.get("arguments"), keep)


def _parts(content: Any) -> str:
    # Some servers send message content as a list of typed parts.
    if not isinstance(content, list):
        return ""
    texts = (part.get("text") for part in content if isinstance(part, dict))
    return "".join(text for text in texts if isinstance(text, str))


class ResponsesReader:
    """The Responses API: named events streamed, or one response object."""

    __slots__ = ()

    def frame(self, tally: Tally, obj: dict[str, Any], event: str | None) -> None:
        """Read one event of a Responses stream."""
        kind = obj.get("type") or event
        if kind == "response.output_text.delta":
            tally.add_text(obj.get("delta"))
        elif kind in _THOUGHT_DELTAS:
            tally.add_thought(obj.get("delta"))
        elif kind == "response.function_call_arguments.delta":
            tally.add_tool(_index(obj), None, obj.get("delta"))
        elif kind == "response.output_item.added":
            _read_item_start(tally, obj)
        elif isinstance(obj.get("response"), dict):
            self.body(tally, obj["response"])

    def body(self, tally: Tally, obj: dict[str, Any]) -> None:
        """Read a response object: whole, or carried by a lifecycle event."""
        tally.set_model(obj.get("model"))
        read_usage(tally, obj.get("usage"))
        _read_status(tally, obj)
        output = obj.get("output")
        # A stream already gave the text in deltas; only a body reads `output`.
        if output and isinstance(output, list) and not tally.content:
            for position, item in enumerate(output):
                if isinstance(item, dict):
                    _read_item(tally, item, position)


_THOUGHT_DELTAS = frozenset(
    {"response.reasoning_text.delta", "response.reasoning_summary_text.delta"}
)


def _index(obj: dict[str, Any]) -> int:
    index = obj.get("output_index", 0)
    return index if type(index) is int else 0


def _read_item_start(tally: Tally, obj: dict[str, Any]) -> None:
    item = obj.get("item")
    if isinstance(item, dict) and item.get("type") == "function_call":
        tally.add_tool(_index(obj), item.get("name"), item.get("arguments") or None)


def _read_status(tally: Tally, obj: dict[str, Any]) -> None:
    status = obj.get("status")
    if status == "failed":
        error = obj.get("error")
        message = error_message({"error": error}) if error else None
        tally.set_error(message or "the response failed")
    elif status == "incomplete":
        details = obj.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        tally.set_finish(reason or status)
    elif status == "completed":
        tally.set_finish(status)


def _read_item(tally: Tally, item: dict[str, Any], position: int) -> None:
    kind = item.get("type")
    if kind == "message":
        tally.add_text(_parts(item.get("content")))
    elif kind == "reasoning":
        tally.add_thought(_parts(item.get("summary")) or _parts(item.get("content")))
    elif kind == "function_call":
        tally.add_tool(position, item.get("name"), item.get("arguments"))
