"""inspect_request and inject_usage: dialects, flags, prompts, odd bodies."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lms_metrics_proxy.usage import Exchange, inject_usage, inspect_request


def inspect(path: str, body: object, method: str = "POST") -> Exchange:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return inspect_request(method, path, raw)


@pytest.mark.parametrize(
    ("path", "dialect"),
    [
        ("/v1/chat/completions", "openai.chat"),
        ("/v1/chat/completions/", "openai.chat"),
        ("/chat/completions", "openai.chat"),
        ("/v1/completions", "openai.completions"),
        ("/v1/embeddings", "openai.embeddings"),
        ("/v1/responses", "openai.responses"),
        ("/v1/messages", "anthropic.messages"),
        ("/api/chat", "ollama.chat"),
        ("/api/generate", "ollama.generate"),
        ("/api/embed", "ollama.embed"),
        ("/api/embeddings", "ollama.embed"),
        ("/api/v0/chat/completions", "lmstudio.v0.chat"),
        ("/api/v0/completions", "lmstudio.v0.completions"),
        ("/api/v0/embeddings", "lmstudio.v0.embeddings"),
        ("/api/v1/chat", "lmstudio.v1.chat"),
        ("/completion", "llamacpp.completion"),
        ("/completions", "llamacpp.completion"),
        ("/v1/models", "unknown"),
        ("/v1/responses/resp_abc123", "unknown"),
        ("/", "unknown"),
        ("", "unknown"),
    ],
)
def test_dialect_follows_the_path(path: str, dialect: str) -> None:
    assert inspect(path, {"model": "m"}).dialect == dialect


@pytest.mark.parametrize(
    ("method", "tracked"),
    [
        ("POST", True),
        ("put", True),
        ("PATCH", True),
        ("DELETE", True),
        ("GET", False),
        ("HEAD", False),
        ("OPTIONS", False),
    ],
)
def test_requests_with_a_body_and_deletes_are_tracked(
    method: str, tracked: bool
) -> None:
    exchange = inspect_request(method, "/v1/chat/completions", b"")

    assert exchange.is_tracked is tracked
    assert exchange.method == method.upper()


def test_only_post_has_a_dialect() -> None:
    exchange = inspect_request("DELETE", "/v1/responses", b"")

    assert (exchange.dialect, exchange.requested_model, exchange.prompt) == (
        "unknown",
        None,
        None,
    )


@pytest.mark.parametrize(
    ("path", "body", "stream"),
    [
        ("/v1/chat/completions", {"stream": True}, True),
        ("/v1/chat/completions", {"stream": False}, False),
        ("/v1/chat/completions", {}, False),
        ("/v1/chat/completions", {"stream": "true"}, False),
        ("/api/chat", {}, True),
        ("/api/generate", {"stream": None}, True),
        ("/api/chat", {"stream": False}, False),
        ("/api/chat", b"{not json", True),
        ("/api/embed", {}, False),
        ("/api/v1/chat", {}, False),
    ],
)
def test_stream_flag_follows_the_body_and_ollama_default(
    path: str, body: object, stream: bool
) -> None:
    assert inspect(path, body).is_stream is stream


@pytest.mark.parametrize(
    ("path", "body", "can_inject"),
    [
        ("/v1/chat/completions", {"stream": True}, True),
        ("/v1/completions", {"stream": True}, True),
        ("/v1/chat/completions", {"stream": True, "stream_options": None}, True),
        ("/v1/chat/completions", {"stream": True, "stream_options": {"x": 1}}, True),
        (
            "/v1/chat/completions",
            {"stream": True, "stream_options": {"include_usage": False}},
            True,
        ),
        (
            "/v1/chat/completions",
            {"stream": True, "stream_options": {"include_usage": True}},
            False,
        ),
        ("/v1/chat/completions", {"stream": True, "stream_options": "yes"}, False),
        ("/v1/chat/completions", {"stream_options": {"include_usage": False}}, False),
        ("/chat/completions", {"stream": True}, False),
        ("/api/v0/chat/completions", {"stream": True}, False),
        ("/v1/responses", {"stream": True}, False),
        ("/v1/messages", {"stream": True}, False),
        ("/api/chat", {}, False),
    ],
)
def test_injection_only_for_openai_streams_without_include_usage(
    path: str, body: object, can_inject: bool
) -> None:
    assert inspect(path, body).can_inject is can_inject


def test_chat_prompt_is_compact_messages_and_text_is_flattened() -> None:
    body = {
        "model": "qwen",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe the image."},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AAAA"},
                    },
                ],
            },
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather"}}],
    }

    exchange = inspect("/v1/chat/completions", body)

    assert exchange.requested_model == "qwen"
    assert exchange.prompt == json.dumps(body["messages"], separators=(",", ":"))
    assert exchange.prompt_text == (
        'Be brief.\nDescribe the image.\n[{"type":"function","function":'
        '{"name":"get_weather"}}]'
    )
    assert exchange.message_count == 2
    assert exchange.request_error is None


def test_anthropic_system_prompt_is_counted_but_not_stored() -> None:
    body = {
        "model": "c",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hi"}],
    }

    exchange = inspect("/v1/messages", body)

    assert exchange.prompt == '[{"role":"user","content":"Hi"}]'
    assert exchange.prompt_text == "Be brief.\nHi"


@pytest.mark.parametrize(
    ("path", "body", "prompt", "text"),
    [
        ("/v1/completions", {"prompt": "The capital"}, "The capital", "The capital"),
        ("/v1/completions", {"prompt": ["a", "b"]}, '["a","b"]', "a\nb"),
        ("/completion", {"prompt": [1, 2, 3]}, "[1,2,3]", ""),
        ("/v1/embeddings", {"input": "Hello world!"}, "Hello world!", "Hello world!"),
        ("/api/generate", {"prompt": "Hi", "system": "Sys"}, "Hi", "Sys\nHi"),
        (
            "/v1/responses",
            {"input": "Say hello", "instructions": "Be nice"},
            "Say hello",
            "Be nice\nSay hello",
        ),
        (
            "/v1/responses",
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
                ]
            },
            '[{"role":"user","content":[{"type":"input_text","text":"Hi"}]}]',
            "Hi",
        ),
        (
            "/api/v1/chat",
            {"input": "Hello!", "system_prompt": "S"},
            "Hello!",
            "S\nHello!",
        ),
        ("/v1/chat/completions", {"model": "m"}, None, ""),
    ],
)
def test_prompt_and_prompt_text_for_each_request_shape(
    path: str, body: dict[str, object], prompt: str | None, text: str
) -> None:
    exchange = inspect(path, body)

    assert (exchange.prompt, exchange.prompt_text) == (prompt, text)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff\xfe", b'{"a":1', b"nan", b"{}}"],
)
def test_malformed_body_sets_request_error_and_keeps_the_dialect(body: bytes) -> None:
    exchange = inspect_request("POST", "/v1/chat/completions", body)

    assert exchange.dialect == "openai.chat"
    assert exchange.request_error is not None
    assert exchange.request_error.startswith("request body is not valid JSON")
    assert (exchange.prompt, exchange.requested_model) == (None, None)


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"3"])
def test_json_that_is_not_an_object_is_a_request_error(body: bytes) -> None:
    exchange = inspect_request("POST", "/v1/chat/completions", body)

    assert exchange.request_error == "request body is JSON but not an object"
    assert exchange.prompt is None


def test_unknown_path_with_a_non_json_body_is_no_request_error() -> None:
    exchange = inspect_request("POST", "/v1/audio/transcriptions", b"--boundary\r\n")

    assert (exchange.dialect, exchange.request_error) == ("unknown", None)


def test_empty_body_is_no_request_error() -> None:
    exchange = inspect_request("POST", "/v1/chat/completions", b"  ")

    assert exchange.request_error is None


def test_huge_body_is_read_whole() -> None:
    image = "A" * 3_200_000
    body = {
        "model": "vl",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe the image."},
                    {
                        "type": "image_url",
                        "image_url": {"url": f"data:;base64,{image}"},
                    },
                ],
            }
        ],
    }

    exchange = inspect("/v1/chat/completions", body)

    assert exchange.prompt is not None
    assert len(exchange.prompt) > 3_200_000
    assert exchange.prompt_text == "Describe the image."


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["POST", "GET", "DELETE", "patch"]),
    path=st.sampled_from(["/v1/chat/completions", "/api/chat", "/v1/responses", "/x"]),
    body=st.binary(max_size=200)
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "model",
                        "messages",
                        "prompt",
                        "input",
                        "stream",
                        "stream_options",
                        "content",
                        "system",
                        "tools",
                    ]
                ),
                inner,
                max_size=4,
            )
        ),
    ).map(lambda value: json.dumps(value).encode()),
)
def test_inspect_request_never_raises(method: str, path: str, body: bytes) -> None:
    exchange = inspect_request(method, path, body)

    assert isinstance(exchange.prompt_text, str)


# inject_usage


def test_inject_adds_stream_options_and_keeps_every_other_byte() -> None:
    body = b'  {"model": "m", "stream": true, "seed": 123456789012345678901234567890}'

    injected = inject_usage(body)

    assert injected == (
        b'  {"stream_options":{"include_usage":true},"model": "m", "stream": true, '
        b'"seed": 123456789012345678901234567890}'
    )


def test_inject_into_an_empty_object() -> None:
    assert inject_usage(b"{}") == b'{"stream_options":{"include_usage":true}}'


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {"continuous_usage_stats": True},
            {"continuous_usage_stats": True, "include_usage": True},
        ),
        ({"include_usage": False}, {"include_usage": True}),
        (None, {"include_usage": True}),
    ],
)
def test_inject_sets_include_usage_and_keeps_other_options(
    options: object, expected: dict[str, bool]
) -> None:
    body = {"model": "m", "stream": True, "stream_options": options, "big": 2**70}

    injected = inject_usage(json.dumps(body).encode())

    assert injected is not None
    assert json.loads(injected) == {**body, "stream_options": expected}


@pytest.mark.parametrize(
    "body", [b"[1]", b"not json", b"", b'"s"', b'{"stream_options": "x"}']
)
def test_inject_refuses_what_it_cannot_change(body: bytes) -> None:
    assert inject_usage(body) is None


def test_injected_body_parses_as_json() -> None:
    body = b'{"messages":[{"role":"user","content":"caf\xc3\xa9"}],"stream":true}'

    injected = inject_usage(body)

    assert injected is not None
    assert orjson.loads(injected)["stream_options"] == {"include_usage": True}


def test_content_nested_too_deep_is_a_request_error() -> None:
    content = "[" * 900 + '"x"' + "]" * 900
    body = b'{"messages":[{"role":"user","content":%s}]}' % content.encode()

    exchange = inspect_request("POST", "/v1/chat/completions", body)

    assert exchange.request_error is not None
    assert exchange.request_error.startswith("request body could not be read")


def test_inject_refuses_a_body_nested_too_deep_to_rewrite() -> None:
    body = b'{"stream_options":{},"a":' + b"[" * 1000 + b"]" * 1000 + b"}"

    assert inject_usage(body) is None
