"""What a request tells us before the server answers: dialect, model, prompt."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Exchange:
    """The accounting-relevant facts of one request."""

    method: str
    endpoint: str  # the path without its query string
    dialect: str  # e.g. "openai.chat", "anthropic.messages", "ollama.chat", "unknown"
    is_tracked: bool  # POST, PUT, PATCH or DELETE: gets a row
    is_stream: bool  # the client asked for a stream (Ollama: unless stream=false)
    can_inject: bool  # a stream to /v1/chat/completions or /v1/completions without include_usage
    requested_model: str | None = None
    prompt: str | None = None  # messages as JSON, or the prompt text
    prompt_text: str = ""  # flattened text, for estimating input tokens
    request_error: str | None = None  # the body was meant to be JSON and is not


def inspect_request(method: str, path: str, body: bytes) -> Exchange:
    """Read method, path and body into an Exchange; never raises."""
    raise NotImplementedError


def inject_usage(body: bytes) -> bytes | None:
    """Return `body` with stream_options.include_usage set to true, or None."""
    raise NotImplementedError
