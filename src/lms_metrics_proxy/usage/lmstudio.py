"""LM Studio's REST APIs: v0 `stats` on OpenAI-shaped bodies, and v1 chat.

v0 (`/api/v0/*`) adds `stats` (seconds, not milliseconds), `model_info` and
`runtime` to an OpenAI body. v1 (`/api/v1/chat`) streams named events
(`chat.start`, `model_load.*`, `prompt_processing.*`, `reasoning.delta`,
`message.delta`, `tool_call.*`, `chat.end`) with no `[DONE]`; the counts come
only in `chat.end`'s `result.stats`, which is also the whole non-stream body.
"""

from __future__ import annotations

from typing import Any

from lms_metrics_proxy.usage.tally import Tally, count, seconds


def read_stats(tally: Tally, obj: dict[str, Any]) -> None:
    """Read `stats` (v0 or v1 naming), and v0's `model_info` and `runtime`."""
    stats = obj.get("stats")
    if isinstance(stats, dict) and stats:
        _read_counts(tally, stats)
        _read_speed(tally, stats)
        tally.details["stats"] = stats
    for key in ("model_info", "runtime"):
        value = obj.get(key)
        if isinstance(value, dict):
            tally.details[key] = value


def _read_counts(tally: Tally, stats: dict[str, Any]) -> None:
    tally.report(
        input=count(stats.get("input_tokens")),
        output=count(stats.get("total_output_tokens")),
        reasoning=count(stats.get("reasoning_output_tokens")),
    )
    reason = stats.get("stop_reason")
    if isinstance(reason, str) and reason:
        tally.stop_reason = reason


def _read_speed(tally: Tally, stats: dict[str, Any]) -> None:
    speed = seconds(stats.get("tokens_per_second"))
    if speed is not None:
        tally.tokens_per_second = speed
    first = seconds(
        stats.get("time_to_first_token", stats.get("time_to_first_token_seconds"))
    )
    if first is not None:
        tally.server_ttft_ms = round(first * 1000)


class RestChatReader:
    """LM Studio's /api/v1/chat, streamed as named events or whole."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls = 0  # tool calls started so far

    def frame(self, tally: Tally, obj: dict[str, Any], event: str | None) -> None:
        """Read one named event."""
        kind = obj.get("type") or event
        if kind == "message.delta":
            tally.add_text(obj.get("content"))
        elif kind == "reasoning.delta":
            tally.add_thought(obj.get("content"))
        elif kind == "chat.end" and isinstance(obj.get("result"), dict):
            self.body(tally, obj["result"])
        elif kind == "chat.start":
            tally.set_model(obj.get("model_instance_id"))
        elif kind == "tool_call.start":
            self._calls += 1
            tally.add_tool(self._calls, obj.get("tool"), None)
        elif kind == "tool_call.arguments":
            tally.add_tool(self._calls, None, obj.get("arguments"))

    def body(self, tally: Tally, obj: dict[str, Any]) -> None:
        """Read a chat result: whole body, or `chat.end`'s `result`."""
        tally.set_model(obj.get("model_instance_id"))
        read_stats(tally, obj)
        output = obj.get("output")
        # A stream already gave the text in deltas; only a body reads `output`.
        if isinstance(output, list) and not tally.content:
            for position, item in enumerate(output):
                if isinstance(item, dict):
                    _read_output(tally, item, position)


def _read_output(tally: Tally, item: dict[str, Any], position: int) -> None:
    kind = item.get("type")
    if kind == "message":
        tally.add_text(item.get("content"))
    elif kind == "reasoning":
        tally.add_thought(item.get("content"))
    elif kind == "tool_call":
        tally.add_tool(position, item.get("tool"), item.get("arguments"))
