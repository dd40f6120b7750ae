"""The official openai client, through the proxy, against a replaying server."""

from __future__ import annotations

import base64
import json
import urllib.request
import uuid

import openai
import pytest
from tests.conftest import Proxy, Upstream


def client_for(proxy: Proxy, fixture: str, name: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{proxy.url}/v1",
        api_key="sk-test-not-stored",
        default_headers={"X-Replay": fixture, "X-Client-Name": name},
        max_retries=0,
    )


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def last_body(upstream: Upstream) -> dict:
    return json.loads(base64.b64decode(upstream.received()[-1]["body"]))


def test_chat_completion_is_recorded_with_server_usage(proxy: Proxy) -> None:
    name = unique("chat")
    client = client_for(proxy, "lmstudio-chat-nonstream.json", name)

    answer = client.chat.completions.create(
        model="qwen2.5-7b-instruct", messages=[{"role": "user", "content": "Hello!"}]
    )

    row = proxy.row(name)
    assert answer.usage is not None
    assert answer.usage.total_tokens == 28
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (
        21,
        7,
        28,
    )
    assert row["usage_source"] == "upstream"
    assert row["was_streamed"] is False
    assert row["response"] == answer.choices[0].message.content
    assert "Hello!" in row["prompt"]


def test_stream_gets_usage_injected_and_the_extra_chunk_hidden(
    proxy: Proxy, upstream: Upstream
) -> None:
    name = unique("inject")
    client = client_for(proxy, "lmstudio-chat-stream-usage.sse", name)

    chunks = list(
        client.chat.completions.create(
            model="qwen2.5-7b-instruct",
            messages=[{"role": "user", "content": "Hello!"}],
            stream=True,
        )
    )

    sent = last_body(upstream)
    row = proxy.row(name)
    assert sent["stream_options"] == {"include_usage": True}
    assert all(chunk.choices for chunk in chunks), "the usage-only chunk leaked"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert row["response"] == text
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (
        21,
        7,
        28,
    )
    assert row["was_streamed"] is True
    assert row["ttft_ms"] is not None


def test_stream_that_asked_for_usage_gets_it(proxy: Proxy, upstream: Upstream) -> None:
    name = unique("asked")
    client = client_for(proxy, "lmstudio-chat-stream-usage.sse", name)

    chunks = list(
        client.chat.completions.create(
            model="qwen2.5-7b-instruct",
            messages=[{"role": "user", "content": "Hello!"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    row = proxy.row(name)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 28
    assert last_body(upstream)["stream_options"] == {"include_usage": True}
    assert row["total_tokens"] == 28


def test_text_completion_is_recorded(proxy: Proxy) -> None:
    name = unique("completion")
    client = client_for(proxy, "openai-completions-nonstream.json", name)

    answer = client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="The capital of France is"
    )

    row = proxy.row(name)
    assert answer.choices[0].text
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (5, 2, 7)
    assert row["endpoint"] == "/v1/completions"


def test_embeddings_have_no_output_tokens(proxy: Proxy) -> None:
    name = unique("embed")
    client = client_for(proxy, "openai-embeddings.json", name)

    answer = client.embeddings.create(
        model="text-embedding-3-small", input="Hello world!"
    )

    row = proxy.row(name)
    assert len(answer.data[0].embedding) == 8
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (3, 0, 3)


def test_server_error_reaches_the_client_and_is_recorded(proxy: Proxy) -> None:
    name = unique("error")
    client = client_for(proxy, "vllm-error-model-not-found.json", name)

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}]
        )

    row = proxy.row(name)
    assert row["http_status"] == 404
    assert row["is_error"] is True
    assert "gpt-4o" in row["error_message"]


def test_api_key_is_never_stored(proxy: Proxy) -> None:
    name = unique("secret")
    client = client_for(proxy, "lmstudio-chat-nonstream.json", name)
    client.api_key = "sk-planted-secret-4242"

    client.chat.completions.create(
        model="qwen2.5-7b-instruct", messages=[{"role": "user", "content": "Hello!"}]
    )

    row = proxy.row(name)
    assert "sk-planted-secret-4242" not in json.dumps(row)
    assert "sk-planted-secret-4242" not in proxy.log_text()


def test_metrics_count_the_request_and_its_tokens(proxy: Proxy) -> None:
    def scrape() -> str:
        with urllib.request.urlopen(f"{proxy.url}/metrics", timeout=10) as answer:
            return answer.read().decode()

    def value(text: str, prefix: str) -> float:
        lines = [line for line in text.splitlines() if line.startswith(prefix)]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    requests = 'lms_proxy_requests_total{endpoint="/v1/chat/completions",'
    requests += 'method="POST",model="qwen2.5-7b-instruct",status="200"}'
    tokens = 'lms_proxy_tokens_total{direction="output",'
    tokens += 'model="qwen2.5-7b-instruct",source="upstream"}'
    before = scrape()
    client = client_for(proxy, "lmstudio-chat-nonstream.json", unique("metrics"))

    client.chat.completions.create(
        model="qwen2.5-7b-instruct", messages=[{"role": "user", "content": "Hello!"}]
    )
    after = scrape()

    assert value(after, requests) == value(before, requests) + 1
    assert value(after, tokens) == value(before, tokens) + 7
