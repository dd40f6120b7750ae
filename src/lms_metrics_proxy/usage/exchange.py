"""What a request tells us before the server answers: dialect, model, prompt.

`inspect_request` reads the method, the path and the body once per request
and never raises: a body that is not JSON only sets `request_error`.
`inject_usage` rewrites a streaming completion request to ask for a usage
chunk. No I/O here; the relay decides what to do with the answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from lms_metrics_proxy.usage.text import compact, flatten

# Dialects by path, for POST requests. Servers share paths: /v1/chat/completions
# is spoken by LM Studio, Ollama, llama.cpp, vLLM and LocalAI alike.
DIALECTS: dict[str, str] = {
    "/v1/chat/completions": "openai.chat",
    "/chat/completions": "openai.chat",
    "/v1/completions": "openai.completions",
    "/v1/embeddings": "openai.embeddings",
    "/v1/responses": "openai.responses",
    "/v1/messages": "anthropic.messages",
    "/api/chat": "ollama.chat",
    "/api/generate": "ollama.generate",
    "/api/embed": "ollama.embed",
    "/api/embeddings": "ollama.embed",
    "/api/v0/chat/completions": "lmstudio.v0.chat",
    "/api/v0/completions": "lmstudio.v0.completions",
    "/api/v0/embeddings": "lmstudio.v0.embeddings",
    "/api/v1/chat": "lmstudio.v1.chat",
    # llama.cpp's native API; without the /v1 prefix /completions is native too.
    "/completion": "llamacpp.completion",
    "/completions": "llamacpp.completion",
}
EMBEDDINGS = frozenset({"openai.embeddings", "ollama.embed", "lmstudio.v0.embeddings"})
# Ollama's native generation streams unless the body says "stream": false.
_STREAM_BY_DEFAULT = frozenset({"ollama.chat", "ollama.generate"})
_INJECTABLE = frozenset({"/v1/chat/completions", "/v1/completions"})
_TRACKED = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Request keys whose text the model also reads, besides messages or prompt.
_PREAMBLE_KEYS = ("system", "instructions", "system_prompt")


@dataclass(slots=True)
class Exchange:
    """The accounting-relevant facts of one request."""

    method: str
    endpoint: str  # the path without its query string
    dialect: str  # "openai.chat", "anthropic.messages", ..., or "unknown"
    is_tracked: bool  # POST, PUT, PATCH or DELETE: gets a row
    is_stream: bool  # the client asked for a stream (Ollama: unless stream=false)
    # A stream to /v1/chat/completions or /v1/completions without include_usage.
    can_inject: bool
    requested_model: str | None = None
    prompt: str | None = None  # messages as JSON, or the prompt text
    prompt_text: str = ""  # flattened text, for estimating input tokens
    request_error: str | None = None  # the body was meant to be JSON and is not
    message_count: int = 0  # chat messages: the estimator adds a few tokens each


def inspect_request(method: str, path: str, body: bytes) -> Exchange:
    """Read method, path and body into an Exchange; never raises."""
    method = method.upper()
    dialect = DIALECTS.get(path.rstrip("/") or "/", "unknown")
    exchange = Exchange(
        method=method,
        endpoint=path,
        dialect=dialect if method == "POST" else "unknown",
        is_tracked=method in _TRACKED,
        is_stream=dialect in _STREAM_BY_DEFAULT and method == "POST",
        can_inject=False,
    )
    if body.strip():
        try:
            _read_body(exchange, body)
        except (RecursionError, TypeError) as exc:
            # Content nested deeper than Python (or orjson's writer) follows.
            exchange.request_error = f"request body could not be read: {exc}"
    return exchange


def _read_body(exchange: Exchange, body: bytes) -> None:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if exchange.dialect != "unknown":
            exchange.request_error = f"request body is not valid JSON: {exc}"
        return
    if not isinstance(obj, dict):
        if exchange.dialect != "unknown":
            exchange.request_error = "request body is JSON but not an object"
        return
    _read_flags(exchange, obj)
    _read_prompt(exchange, obj)


def _read_flags(exchange: Exchange, obj: dict[str, Any]) -> None:
    model = obj.get("model")
    exchange.requested_model = model if isinstance(model, str) and model else None
    stream = obj.get("stream")
    if exchange.dialect in _STREAM_BY_DEFAULT:
        exchange.is_stream = stream is not False
    else:
        exchange.is_stream = stream is True
    options = obj.get("stream_options")
    asked = isinstance(options, dict) and options.get("include_usage") is True
    exchange.can_inject = (
        exchange.is_stream
        and exchange.method == "POST"
        and exchange.endpoint in _INJECTABLE
        and (options is None or isinstance(options, dict))
        and not asked
    )


def _read_prompt(exchange: Exchange, obj: dict[str, Any]) -> None:
    preamble = [flatten(obj.get(key)) for key in _PREAMBLE_KEYS]
    messages = obj.get("messages")
    if isinstance(messages, list):
        exchange.prompt = compact(messages)
        exchange.message_count = len(messages)
        texts = [_message_text(message) for message in messages]
    else:
        value = next((obj[key] for key in ("prompt", "input") if key in obj), None)
        exchange.prompt = value if isinstance(value, str) else _compact_or_none(value)
        texts = [flatten(value) if not isinstance(value, list) else _items(value)]
    tools = obj.get("tools")
    if tools:
        texts.append(compact(tools))
    exchange.prompt_text = "\n".join(text for text in (*preamble, *texts) if text)


def _message_text(message: Any) -> str:
    if not isinstance(message, dict):
        return flatten(message)
    text = flatten(message.get("content"))
    calls = message.get("tool_calls")
    return f"{text}\n{compact(calls)}" if calls else text


def _items(value: list[Any]) -> str:
    # Prompt or input lists: strings, token ids, or Responses input items.
    texts = [_message_text(item) for item in value if not isinstance(item, int)]
    return "\n".join(text for text in texts if text)


def _compact_or_none(value: Any) -> str | None:
    return None if value is None else compact(value)


def inject_usage(body: bytes) -> bytes | None:
    """Return `body` with stream_options.include_usage set to true, or None.

    None when the body is not a JSON object (or its stream_options is not an
    object). Without stream_options, the key is written into the body's text
    so every other byte stays as the client sent it.
    """
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    options = obj.get("stream_options")
    if options is None and "stream_options" not in obj:
        return _insert_options(body, has_keys=bool(obj))
    if options is not None and not isinstance(options, dict):
        return None
    return _rewrite_options(body)


def _insert_options(body: bytes, *, has_keys: bool) -> bytes:
    brace = body.index(b"{") + 1
    field = b'"stream_options":{"include_usage":true}' + (b"," if has_keys else b"")
    return body[:brace] + field + body[brace:]


def _rewrite_options(body: bytes) -> bytes | None:
    # The standard library keeps integers of any size, which orjson would not.
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None
    options = obj.get("stream_options")
    obj["stream_options"] = {**(options or {}), "include_usage": True}
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return text.encode()
