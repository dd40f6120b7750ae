"""The recorded upstream fixtures, with what each must give (from INDEX.md).

Every number below is copied by hand from tests/fixtures/upstream/INDEX.md
(or read off the fixture by eye), never from the code under test.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lms_metrics_proxy.usage import Exchange, Meter, Usage, inspect_request

UPSTREAM = Path(__file__).resolve().parents[1] / "fixtures" / "upstream"
CASES = Path(__file__).resolve().parents[1] / "fixtures" / "cases" / "cases.jsonl"
MAX_CHARS = 100_000

HELLO = [{"role": "user", "content": "Hello!"}]
HELLO_TEXT = "Hello! How can I help?"
SSE = "text/event-stream"
JSON = "application/json"
JSON_UTF8 = "application/json; charset=utf-8"
NDJSON = "application/x-ndjson"


@dataclass(frozen=True)
class Wire:
    """One fixture file, the request that produced it, and what it must give."""

    name: str
    path: str
    request: dict[str, Any]
    status: int
    content_type: str
    expect: dict[str, Any] = field(default_factory=dict)

    @property
    def body(self) -> bytes:
        return (UPSTREAM / self.name).read_bytes()

    @property
    def is_stream_file(self) -> bool:
        return self.name.endswith((".sse", ".ndjson"))

    def exchange(self) -> Exchange:
        return inspect_request("POST", self.path, json.dumps(self.request).encode())

    def meter(self, encoding: str | None = None) -> Meter:
        return Meter(
            self.exchange(), self.status, self.content_type, encoding, MAX_CHARS
        )


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": HELLO, **extra}


def streamed(model: str, **extra: Any) -> dict[str, Any]:
    return chat(model, stream=True, **extra)


def usage_of(wire: Wire, pieces: list[bytes], **finish: bool) -> Usage:
    meter = wire.meter()
    for piece in pieces:
        meter.feed(piece)
    return meter.finish(**finish)


def split_at(data: bytes, offsets: list[int]) -> list[bytes]:
    bounds = [0, *sorted(offsets), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def mismatches(usage: Usage, expect: dict[str, Any]) -> dict[str, Any]:
    """Return {field: (expected, got)} for every field that differs."""
    wrong = {}
    for key, value in expect.items():
        got = getattr(usage, key)
        if isinstance(value, float):
            same = got is not None and abs(got - value) < 0.01
        else:
            same = got == value
        if not same:
            wrong[key] = (value, got)
    return wrong


def _counts(
    input_tokens: int | None, output_tokens: int | None, total: int | None
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": total,
    }


def _error(message: str) -> dict[str, Any]:
    return {
        **_counts(None, None, None),
        "usage_source": "none",
        "is_error": True,
        "error_message": message,
        "response_text": None,
    }


def _ok(
    counts: tuple[int | None, int | None, int | None], model: str, **more: Any
) -> dict[str, Any]:
    return {
        **_counts(*counts),
        "usage_source": "upstream",
        "model": model,
        "is_error": False,
        "error_message": None,
        **more,
    }


QWEN = "qwen2.5-7b-instruct"
GEMMA = "gemma-3-4b-it-Q4_K_M.gguf"
VLLM = "Qwen/Qwen2.5-1.5B-Instruct"
CLAUDE = "claude-sonnet-4-5-20250929"

WIRES = [
    Wire(
        "lmstudio-chat-nonstream.json",
        "/v1/chat/completions",
        chat(QWEN, stream=False),
        200,
        JSON,
        _ok((21, 7, 28), QWEN, response_text=HELLO_TEXT, finish_reason="stop"),
    ),
    Wire(
        "lmstudio-chat-stream-usage.sse",
        "/v1/chat/completions",
        streamed(QWEN, stream_options={"include_usage": True}),
        200,
        SSE,
        _ok((21, 7, 28), QWEN, response_text=HELLO_TEXT, finish_reason="stop"),
    ),
    Wire(
        "lmstudio-chat-stream-nousage.sse",
        "/v1/chat/completions",
        streamed(QWEN),
        200,
        SSE,
        {
            **_counts(None, None, None),
            "usage_source": "none",
            "model": QWEN,
            "response_text": HELLO_TEXT,
            "is_error": False,
        },
    ),
    Wire(
        "lmstudio-api-v0-chat-nonstream.json",
        "/api/v0/chat/completions",
        chat("granite-3.0-2b-instruct", stream=False),
        200,
        JSON,
        _ok(
            (12, 7, 19),
            "granite-3.0-2b-instruct",
            response_text=HELLO_TEXT,
            tokens_per_second=51.47,
            server_ttft_ms=94,
            finish_reason="stop",
        ),
    ),
    Wire(
        "lmstudio-api-v1-chat-stream.sse",
        "/api/v1/chat",
        {"model": "qwen/qwen3-4b-2507", "input": "Hello!", "stream": True},
        200,
        SSE,
        _ok(
            (11, 7, 18),
            "qwen/qwen3-4b-2507",
            reasoning_tokens=0,
            response_text=HELLO_TEXT,
            tokens_per_second=48.27,
            server_ttft_ms=112,
        ),
    ),
    Wire(
        "lmstudio-error-no-models.json",
        "/v1/chat/completions",
        chat(QWEN),
        404,
        JSON,
        _error(
            "No models loaded. Please load a model in the developer page or use "
            "the 'lms load' command."
        ),
    ),
    Wire(
        "lmstudio-error-unknown-endpoint-200.json",
        "/chat/completions",
        chat(QWEN),
        200,
        JSON_UTF8,
        _error("Unexpected endpoint or method. (POST /chat/completions)"),
    ),
    Wire(
        "ollama-api-chat-stream.ndjson",
        "/api/chat",
        {"model": "llama3.2", "messages": HELLO},
        200,
        NDJSON,
        _ok(
            (27, 8, 35),
            "llama3.2",
            response_text=HELLO_TEXT,
            tokens_per_second=27.81,
            server_ttft_ms=111,
            finish_reason="stop",
        ),
    ),
    Wire(
        "ollama-api-chat-stream-error.ndjson",
        "/api/chat",
        {"model": "llama3.2", "messages": HELLO},
        200,
        NDJSON,
        {
            **_error("an error was encountered while running the model"),
            "response_text": "Hello! How",
        },
    ),
    Wire(
        "ollama-api-generate-nonstream.json",
        "/api/generate",
        {"model": "llama3.2", "prompt": "Hello!", "stream": False},
        200,
        JSON_UTF8,
        _ok((27, 8, 35), "llama3.2", response_text=HELLO_TEXT, finish_reason="stop"),
    ),
    Wire(
        "ollama-api-embed.json",
        "/api/embed",
        {"model": "all-minilm", "input": "Hello!"},
        200,
        JSON_UTF8,
        _ok((4, 0, 4), "all-minilm", response_text=None),
    ),
    Wire(
        "ollama-v1-chat-stream-usage.sse",
        "/v1/chat/completions",
        streamed("llama3.2", stream_options={"include_usage": True}),
        200,
        SSE,
        _ok((27, 8, 35), "llama3.2", response_text=HELLO_TEXT, finish_reason="stop"),
    ),
    Wire(
        "ollama-v1-completions-stream-usage.sse",
        "/v1/completions",
        {
            "model": "llama3.2",
            "prompt": "Say hello.",
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        200,
        SSE,
        _ok((30, 5, 35), "llama3.2", response_text=" Hello, world!"),
    ),
    Wire(
        "ollama-v1-error-model-not-found.json",
        "/v1/chat/completions",
        chat("llama9"),
        404,
        JSON,
        _error("model 'llama9' not found"),
    ),
    Wire(
        "ollama-anthropic-messages-stream.sse",
        "/v1/messages",
        {"model": "qwen3-coder", "max_tokens": 1024, "stream": True, "messages": HELLO},
        200,
        SSE,
        _ok(
            (14, 8, 22),
            "qwen3-coder",
            response_text=HELLO_TEXT,
            finish_reason="end_turn",
        ),
    ),
    Wire(
        "llamacpp-chat-stream-timings.sse",
        "/v1/chat/completions",
        streamed("x"),
        200,
        SSE,
        _ok(
            (14, 8, 22),
            GEMMA,
            cached_input_tokens=0,
            tokens_per_second=57.28,
            server_ttft_ms=62,
            response_text=HELLO_TEXT,
            finish_reason="stop",
        ),
    ),
    Wire(
        "llamacpp-chat-stream-usage.sse",
        "/v1/chat/completions",
        streamed("x", stream_options={"include_usage": True}),
        200,
        SSE,
        _ok(
            (21, 8, 29),
            GEMMA,
            cached_input_tokens=12,
            response_text=HELLO_TEXT,
            finish_reason="stop",
        ),
    ),
    Wire(
        "llamacpp-chat-nonstream.json",
        "/v1/chat/completions",
        chat("x", stream=False),
        200,
        JSON_UTF8,
        _ok(
            (14, 8, 22),
            GEMMA,
            tokens_per_second=58.16,
            server_ttft_ms=61,
            response_text=HELLO_TEXT,
        ),
    ),
    Wire(
        "llamacpp-completion-native-stream.sse",
        "/completion",
        {"prompt": "The capital of France is", "n_predict": 4, "stream": True},
        200,
        SSE,
        _ok((6, 4, 10), GEMMA, response_text=" Paris. It is"),
    ),
    Wire(
        "llamacpp-chat-stream-error.sse",
        "/v1/chat/completions",
        streamed("x"),
        200,
        SSE,
        {**_error("context shift is disabled"), "response_text": "Hello! How"},
    ),
    Wire(
        "llamacpp-error-exceed-context.json",
        "/v1/chat/completions",
        streamed("x"),
        400,
        JSON_UTF8,
        {
            **_counts(5210, 0, 5210),
            "usage_source": "upstream",
            "is_error": True,
            "error_message": "request (5210 tokens) exceeds the available context "
            "size (4096 tokens), try increasing it",
        },
    ),
    Wire(
        "vllm-chat-stream-continuous-usage.sse",
        "/v1/chat/completions",
        streamed(
            VLLM,
            stream_options={"include_usage": True, "continuous_usage_stats": True},
        ),
        200,
        SSE,
        _ok((30, 8, 38), VLLM, response_text=HELLO_TEXT, finish_reason="stop"),
    ),
    Wire(
        "vllm-chat-nonstream.json",
        "/v1/chat/completions",
        chat(VLLM, stream=False),
        200,
        JSON,
        _ok((30, 8, 38), VLLM, cached_input_tokens=None, response_text=HELLO_TEXT),
    ),
    Wire(
        "vllm-error-model-not-found.json",
        "/v1/chat/completions",
        chat("gpt-4o"),
        404,
        JSON,
        _error("The model `gpt-4o` does not exist."),
    ),
    Wire(
        "openai-chat-nonstream.json",
        "/v1/chat/completions",
        chat("o4-mini"),
        200,
        JSON,
        _ok(
            (1290, 71, 1361),
            "o4-mini-2025-04-16",
            cached_input_tokens=1152,
            reasoning_tokens=64,
            response_text=HELLO_TEXT,
        ),
    ),
    Wire(
        "openai-chat-stream-usage.sse",
        "/v1/chat/completions",
        streamed("gpt-4.1-mini", stream_options={"include_usage": True}),
        200,
        SSE,
        _ok((11, 7, 18), "gpt-4.1-mini-2025-04-14", response_text=HELLO_TEXT),
    ),
    Wire(
        "openai-completions-nonstream.json",
        "/v1/completions",
        {"model": "gpt-3.5-turbo-instruct", "prompt": "The capital of France is"},
        200,
        JSON,
        _ok((5, 2, 7), "gpt-3.5-turbo-instruct:20230824-v2", response_text=" Paris."),
    ),
    Wire(
        "openai-embeddings.json",
        "/v1/embeddings",
        {"model": "text-embedding-3-small", "input": "Hello world!"},
        200,
        JSON,
        _ok((3, 0, 3), "text-embedding-3-small", response_text=None),
    ),
    Wire(
        "openai-error-context-length.json",
        "/v1/chat/completions",
        chat("gpt-4o"),
        400,
        JSON,
        _error(
            "This model's maximum context length is 128000 tokens. However, your "
            "messages resulted in 131072 tokens. Please reduce the length of the "
            "messages."
        ),
    ),
    Wire(
        "openai-responses-stream.sse",
        "/v1/responses",
        {"model": "gpt-4.1-mini", "input": "Hello!", "stream": True},
        200,
        SSE,
        _ok(
            (12, 7, 19),
            "gpt-4.1-mini-2025-04-14",
            cached_input_tokens=0,
            reasoning_tokens=0,
            response_text=HELLO_TEXT,
        ),
    ),
    Wire(
        "anthropic-messages-stream.sse",
        "/v1/messages",
        {"model": CLAUDE, "max_tokens": 256, "stream": True, "messages": HELLO},
        200,
        SSE,
        _ok(
            (2060, 10, 2070),
            CLAUDE,
            cached_input_tokens=2048,
            response_text=HELLO_TEXT,
            finish_reason="end_turn",
        ),
    ),
    Wire(
        "anthropic-messages-nonstream.json",
        "/v1/messages",
        {"model": CLAUDE, "max_tokens": 256, "messages": HELLO},
        200,
        JSON,
        _ok(
            (2060, 10, 2070),
            CLAUDE,
            cached_input_tokens=0,
            response_text=HELLO_TEXT,
            finish_reason="end_turn",
        ),
    ),
    Wire(
        "anthropic-messages-stream-error.sse",
        "/v1/messages",
        {"model": CLAUDE, "max_tokens": 256, "stream": True, "messages": HELLO},
        200,
        SSE,
        {
            **_counts(12, None, None),
            "usage_source": "upstream",
            "is_error": True,
            "error_message": "Overloaded",
            "response_text": "Hello! How",
        },
    ),
    Wire(
        "localai-chat-stream-usage-every-chunk.sse",
        "/v1/chat/completions",
        streamed("llama-3.2-1b-instruct"),
        200,
        SSE,
        _ok((25, 7, 32), "llama-3.2-1b-instruct", response_text=HELLO_TEXT),
    ),
    Wire(
        "openai-compat-chat-stream-crlf-nousage.sse",
        "/v1/chat/completions",
        streamed("local-model"),
        200,
        SSE,
        {
            **_counts(None, None, None),
            "usage_source": "none",
            "model": "local-model",
            "response_text": HELLO_TEXT,
            "finish_reason": "stop",
        },
    ),
]
BY_NAME = {wire.name: wire for wire in WIRES}


def wires(*prefixes: str) -> list[Wire]:
    """Return the fixtures whose file name starts with one of `prefixes`."""
    return [wire for wire in WIRES if wire.name.startswith(prefixes)]


def run(
    path: str,
    request: dict[str, Any],
    body: bytes | list[bytes],
    content_type: str | None = SSE,
    status: int = 200,
    **finish: bool,
) -> Usage:
    """Feed `body` (one chunk, or a list of chunks) for a request; return the usage."""
    exchange = inspect_request("POST", path, json.dumps(request).encode())
    meter = Meter(exchange, status, content_type, None, MAX_CHARS)
    for piece in [body] if isinstance(body, bytes) else body:
        meter.feed(piece)
    return meter.finish(**finish)


def sse(*frames: dict[str, Any] | str, event: str | None = None) -> bytes:
    """Return SSE bytes: one `data:` event per frame (dicts as compact JSON)."""
    out = []
    for frame in frames:
        data = frame if isinstance(frame, str) else json.dumps(frame)
        named = f"event: {event}\n" if event else ""
        out.append(f"{named}data: {data}\n\n")
    return "".join(out).encode()


def ndjson(*frames: dict[str, Any]) -> bytes:
    """Return NDJSON bytes, one line per frame."""
    return "".join(json.dumps(frame) + "\n" for frame in frames).encode()
