"""The running state of one response: what the dialect readers found so far.

A `Tally` is written by the dialect readers (openai, anthropic, ollama,
lmstudio, llamacpp) frame by frame and read once by the meter at the end. It
keeps only bounded state: the last usage seen, a few figures, and text capped
at `max_chars`, so its size does not grow with the length of a stream.
"""

from __future__ import annotations

from typing import Any

from lms_metrics_proxy.usage.text import clip_text, compact

# Tool calls kept per response; later ones still count as content.
MAX_TOOL_CALLS = 32


def count(value: Any) -> int | None:
    """Return a token count from JSON, or None when it is not a count."""
    if type(value) is int:
        return value if value >= 0 else None
    if type(value) is float and value.is_integer() and value >= 0:
        return int(value)
    return None


def seconds(value: Any) -> float | None:
    """Return a JSON number as a float, or None when it is not a number."""
    if type(value) is int or type(value) is float:
        return float(value)
    return None


class CappedText:
    """Text built from pieces, kept up to a limit and marked when cut."""

    __slots__ = ("_limit", "_parts", "_size")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[str] = []
        self._size = 0

    def add(self, piece: str) -> None:
        # Keep one character past the limit, so clip_text knows to mark the cut.
        room = self._limit + 1 - self._size
        if room <= 0:
            return
        if len(piece) > room:
            piece = piece[:room]
        self._parts.append(piece)
        self._size += len(piece)

    def value(self) -> str | None:
        """Return the text so far (None when there is none), capped and marked."""
        if not self._parts:
            return None
        return clip_text("".join(self._parts), self._limit)


class ToolCall:
    """One tool call: its name (given once) and its arguments (in pieces)."""

    __slots__ = ("arguments", "name")

    def __init__(self, limit: int) -> None:
        self.name = ""
        self.arguments = CappedText(limit)


class ToolCalls:
    """Tool calls assembled from pieces, keyed by the call's index."""

    __slots__ = ("_calls", "_limit")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._calls: dict[int, ToolCall] = {}

    def add(self, index: int, name: Any, arguments: Any) -> None:
        call = self._calls.get(index)
        if call is None:
            if len(self._calls) >= MAX_TOOL_CALLS:
                return
            call = self._calls[index] = ToolCall(self._limit)
        # The first name counts: some servers repeat it on every piece.
        if isinstance(name, str) and not call.name:
            call.name = name
        if isinstance(arguments, str):
            call.arguments.add(arguments)
        elif arguments is not None:
            call.arguments.add(compact(arguments))

    def value(self) -> str | None:
        """Return the calls as `name(arguments)` lines, or None when there are none."""
        lines = [
            f"{call.name}({call.arguments.value() or ''})"
            for _, call in sorted(self._calls.items())
        ]
        return clip_text("\n".join(lines), self._limit) if lines else None


class Tally:
    """What the response said so far; written by the dialect readers."""

    __slots__ = (
        "_nonzero",
        "cached",
        "content",
        "details",
        "error",
        "finish_reason",
        "input",
        "model",
        "output",
        "reasoning",
        "reported",
        "server_ttft_ms",
        "stop_reason",
        "text",
        "thought",
        "tokens_per_second",
        "tools",
        "total",
    )

    def __init__(self, max_chars: int) -> None:
        self.model: str | None = None
        self.input: int | None = None
        self.output: int | None = None
        self.total: int | None = None
        self.cached: int | None = None
        self.reasoning: int | None = None
        self.reported = False  # some count came from the server
        self._nonzero = False  # some count from the server was not zero
        self.tokens_per_second: float | None = None
        self.server_ttft_ms: int | None = None
        self.finish_reason: str | None = None
        self.stop_reason: str | None = None  # a fallback for finish_reason
        self.error: str | None = None
        self.content = False  # a frame with generated content was seen
        self.text = CappedText(max_chars)
        self.thought = CappedText(max_chars)
        self.tools = ToolCalls(max_chars)
        self.details: dict[str, Any] = {}

    def report(
        self,
        input: int | None = None,
        output: int | None = None,
        total: int | None = None,
        cached: int | None = None,
        reasoning: int | None = None,
    ) -> None:
        """Take one usage report; the fields it has replace earlier ones.

        An all-zero report never replaces one that had a real count (LocalAI
        and Ollama send zeros on every chunk before the real usage).
        """
        values = (input, output, total, cached, reasoning)
        if not any(value is not None for value in values):
            return
        if any(values):
            self._nonzero = True
        elif self._nonzero:
            return
        self.reported = True
        self._merge(values)

    def _merge(self, values: tuple[int | None, ...]) -> None:
        input, output, total, cached, reasoning = values
        if input is not None:
            self.input = input
        if output is not None:
            self.output = output
        if total is not None:
            self.total = total
        if cached is not None:
            self.cached = cached
        if reasoning is not None:
            self.reasoning = reasoning

    def add_text(self, piece: Any, keep: bool = True) -> None:
        """Take generated text; only choice 0's text (`keep`) is stored."""
        if isinstance(piece, str) and piece:
            self.content = True
            if keep:
                self.text.add(piece)

    def add_thought(self, piece: Any, keep: bool = True) -> None:
        """Take generated reasoning text."""
        if isinstance(piece, str) and piece:
            self.content = True
            if keep:
                self.thought.add(piece)

    def add_tool(
        self, index: int, name: Any, arguments: Any, keep: bool = True
    ) -> None:
        """Take a piece of a tool call: its name, its arguments, or both."""
        self.content = True
        if keep:
            self.tools.add(index, name, arguments)

    def set_model(self, model: Any) -> None:
        """Take the model the server names; the first one named wins."""
        if self.model is None and isinstance(model, str) and model:
            self.model = model

    def set_finish(self, reason: Any) -> None:
        """Take the server's reason for stopping; the last one given wins."""
        if isinstance(reason, str) and reason:
            self.finish_reason = reason

    def set_error(self, message: str) -> None:
        """Take an error the server reported; the first one is kept."""
        if self.error is None:
            self.error = message


def error_message(obj: dict[str, Any], *, loose: bool = False) -> str | None:
    """Return the message of an error object, or None when `obj` is no error.

    Reads `{"error": {"message": ...}}`, `{"error": "..."}`, and flat
    `{"object"|"type": "error", "message": ...}` (vLLM, Anthropic, Responses).
    `loose` (for bodies under an error status) also reads a top-level
    `message` or FastAPI's `detail`.
    """
    error = obj.get("error")
    if isinstance(error, dict):
        return _message_of(error) or compact(error)
    if isinstance(error, str) and error:
        return error
    if loose or obj.get("object") == "error" or obj.get("type") == "error":
        return _message_of(obj)
    return None


def _message_of(obj: dict[str, Any]) -> str | None:
    for key in ("message", "detail", "msg"):
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, list | dict) and value:
            return compact(value)
    return None
