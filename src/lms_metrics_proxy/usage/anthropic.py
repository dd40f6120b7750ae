"""The Anthropic Messages dialect (/v1/messages), streamed or whole.

Usage comes in two parts: `message_start` carries the input counts (its
`output_tokens` is a placeholder, never a count), then `message_delta`
carries cumulative counts that override it field by field; Ollama's delta
also carries the real input, replacing its start estimate. Input is
`input_tokens + cache_creation_input_tokens + cache_read_input_tokens`.
"""

from __future__ import annotations

from typing import Any

from lms_metrics_proxy.usage.tally import Tally, count

_INPUT_KEYS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


class MessagesReader:
    """Anthropic Messages: named events, or one message object."""

    __slots__ = ("_usage",)

    def __init__(self) -> None:
        self._usage: dict[str, int] = {}  # the merged counts, Anthropic's names

    def frame(self, tally: Tally, obj: dict[str, Any], event: str | None) -> None:
        """Read one event of a Messages stream."""
        kind = obj.get("type") or event
        if kind == "content_block_delta":
            _read_delta(tally, obj)
        elif kind == "content_block_start":
            _read_block(tally, obj.get("content_block"), obj.get("index", 0))
        elif kind == "message_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                tally.set_finish(delta.get("stop_reason"))
            self._merge(tally, obj.get("usage"), start=False)
        elif kind == "message_start" and isinstance(obj.get("message"), dict):
            message = obj["message"]
            tally.set_model(message.get("model"))
            self._merge(tally, message.get("usage"), start=True)

    def body(self, tally: Tally, obj: dict[str, Any]) -> None:
        """Read a whole message."""
        tally.set_model(obj.get("model"))
        content = obj.get("content")
        if isinstance(content, list):
            for index, block in enumerate(content):
                _read_block(tally, block, index)
        tally.set_finish(obj.get("stop_reason"))
        self._merge(tally, obj.get("usage"), start=False)

    def _merge(self, tally: Tally, usage: Any, *, start: bool) -> None:
        if not isinstance(usage, dict):
            return
        keys = _INPUT_KEYS if start else (*_INPUT_KEYS, "output_tokens")
        for key in keys:
            value = count(usage.get(key))
            if value is not None:
                self._usage[key] = value
        parts = [self._usage[key] for key in _INPUT_KEYS if key in self._usage]
        tally.report(
            input=sum(parts) if parts else None,
            output=self._usage.get("output_tokens"),
            cached=self._usage.get("cache_read_input_tokens"),
        )


def _read_delta(tally: Tally, obj: dict[str, Any]) -> None:
    delta = obj.get("delta")
    if not isinstance(delta, dict):
        return
    kind = delta.get("type")
    if kind == "text_delta":
        tally.add_text(delta.get("text"))
    elif kind == "thinking_delta":
        tally.add_thought(delta.get("thinking"))
    elif kind == "input_json_delta":
        index = obj.get("index", 0)
        tally.add_tool(
            index if type(index) is int else 0, None, delta.get("partial_json")
        )


def _read_block(tally: Tally, block: Any, index: Any) -> None:
    if not isinstance(block, dict):
        return
    kind = block.get("type")
    if kind == "text":
        tally.add_text(block.get("text"))
    elif kind == "thinking":
        tally.add_thought(block.get("thinking"))
    elif kind == "tool_use":
        position = index if type(index) is int else 0
        arguments = block.get("input") or None
        tally.add_tool(position, block.get("name"), arguments)
