"""Ollama's native API: /api/chat, /api/generate (NDJSON streams) and /api/embed.

Counts come on the last line (`"done": true`): `prompt_eval_count` and
`eval_count`. Durations are nanoseconds: the server's speed is
`eval_count / eval_duration`, its time to first token about
`load_duration + prompt_eval_duration`. /api/embed gives only
`prompt_eval_count`, with no `done`.
"""

from __future__ import annotations

from typing import Any

from lms_metrics_proxy.usage.tally import Tally, count

_NANOSECONDS = 1e9
_DURATIONS = (
    "total_duration",
    "load_duration",
    "prompt_eval_duration",
    "eval_duration",
)


class NativeReader:
    """Ollama's native chat, generate and embed answers, streamed or whole."""

    __slots__ = ()

    def frame(self, tally: Tally, obj: dict[str, Any], event: str | None) -> None:
        """Read one line of a stream."""
        message = obj.get("message")
        if isinstance(message, dict):
            _read_message(tally, message)
        else:
            tally.add_text(obj.get("response"))
            tally.add_thought(obj.get("thinking"))
        tally.set_model(obj.get("model"))
        if "prompt_eval_count" in obj or "eval_count" in obj:
            _read_counts(tally, obj)
        if obj.get("done") is True:
            tally.set_finish(obj.get("done_reason"))

    def body(self, tally: Tally, obj: dict[str, Any]) -> None:
        """Read a whole answer: the same fields as a stream's last line."""
        self.frame(tally, obj, None)


def _read_message(tally: Tally, message: dict[str, Any]) -> None:
    tally.add_text(message.get("content"))
    tally.add_thought(message.get("thinking"))
    calls = message.get("tool_calls")
    if calls and isinstance(calls, list):
        for position, call in enumerate(calls):
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                name, arguments = function.get("name"), function.get("arguments")
                tally.add_tool(position, name, arguments)


def _read_counts(tally: Tally, obj: dict[str, Any]) -> None:
    output = count(obj.get("eval_count"))
    tally.report(input=count(obj.get("prompt_eval_count")), output=output)
    durations = {key: count(obj.get(key)) for key in _DURATIONS}
    generating = durations["eval_duration"]
    if output is not None and generating:
        tally.tokens_per_second = output / generating * _NANOSECONDS
    load, prompt = durations["load_duration"], durations["prompt_eval_duration"]
    if prompt is not None:
        tally.server_ttft_ms = round(((load or 0) + prompt) / 1e6)
    tally.details["durations_ns"] = {
        key: value for key, value in durations.items() if value is not None
    }
