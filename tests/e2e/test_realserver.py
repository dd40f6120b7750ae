"""A real llama.cpp server with a real model, through the proxy.

Needs `scripts/real-upstream/start.sh install` (cached; .ci/run does it).
Without it these tests skip, unless REQUIRE_REAL_SERVER=1 makes that a
failure (CI sets it, so a broken build cannot pass silently).
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from tests.conftest import ROOT, Proxy, free_port, start_proxy, stop_proxy

pytestmark = [pytest.mark.realserver, pytest.mark.slow]

START = ROOT / "scripts" / "real-upstream" / "start.sh"
HOME = Path(
    os.environ.get("REALUP_HOME")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "real-upstream"
)
MODEL = "smollm2-135m-instruct"
PARAMS = {"temperature": 0, "max_tokens": 12, "seed": 7}


def installed() -> bool:
    return (HOME / "bin" / "llama-server").exists() and any(
        (HOME / "models").glob("*.gguf")
    )


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    if not installed():
        if os.environ.get("REQUIRE_REAL_SERVER") == "1":
            pytest.fail("REQUIRE_REAL_SERVER=1 but the real server is not installed")
        pytest.skip(
            "real llama.cpp server not installed: "
            "scripts/real-upstream/start.sh install"
        )
    port = free_port()
    out = subprocess.run(
        ["bash", str(START), "start", str(port)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    yield out.stdout.strip().splitlines()[-1]
    subprocess.run(["bash", str(START), "stop", str(port)], timeout=60)


@pytest.fixture(scope="module")
def real_proxy(
    server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    running = start_proxy(tmp_path_factory.mktemp("real"), server)
    yield running
    stop_proxy(running)


def client(base: str, name: str = "direct") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{base}/v1",
        api_key="none",
        max_retries=0,
        default_headers={"X-Client-Name": name},
        timeout=120,
    )


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


MESSAGES = [{"role": "user", "content": "Name three colours."}]


def test_chat_tokens_equal_the_servers_own_usage(
    server: str, real_proxy: Proxy
) -> None:
    name = unique("chat")

    direct = client(server).chat.completions.create(
        model=MODEL, messages=MESSAGES, **PARAMS
    )
    proxied = client(real_proxy.url, name).chat.completions.create(
        model=MODEL, messages=MESSAGES, **PARAMS
    )

    row = real_proxy.row(name)
    assert proxied.choices[0].message.content == direct.choices[0].message.content
    assert proxied.usage is not None
    assert row["input_tokens"] == proxied.usage.prompt_tokens
    assert row["output_tokens"] == proxied.usage.completion_tokens
    assert row["total_tokens"] == proxied.usage.total_tokens
    assert row["usage_source"] == "upstream"


@pytest.mark.parametrize("asks_for_usage", [True, False])
def test_streamed_chat_tokens_equal_the_servers_own_usage(
    server: str, real_proxy: Proxy, asks_for_usage: bool
) -> None:
    name = unique("stream")
    options = {"stream_options": {"include_usage": True}} if asks_for_usage else {}

    direct = list(
        client(server).chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            **PARAMS,
        )
    )
    proxied = list(
        client(real_proxy.url, name).chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, **options, **PARAMS
        )
    )

    row = real_proxy.row(name)
    truth = direct[-1].usage
    assert truth is not None
    text = "".join(c.choices[0].delta.content or "" for c in proxied if c.choices)
    assert text == "".join(
        c.choices[0].delta.content or "" for c in direct if c.choices
    )
    assert (row["input_tokens"], row["output_tokens"]) == (
        truth.prompt_tokens,
        truth.completion_tokens,
    )
    assert row["usage_source"] == "upstream"
    assert row["response"] == text
    assert row["ttft_ms"] is not None
    assert row["ttft_ms"] <= row["duration_ms"]
    if asks_for_usage:
        assert proxied[-1].usage is not None
    else:
        assert all(c.usage is None for c in proxied), "the injected usage chunk leaked"


@pytest.mark.parametrize("stream", [False, True])
def test_text_completion_tokens_equal_the_servers_own_usage(
    server: str, real_proxy: Proxy, stream: bool
) -> None:
    name = unique("completion")
    prompt = "The capital of France is"

    direct = client(server).completions.create(model=MODEL, prompt=prompt, **PARAMS)
    result = client(real_proxy.url, name).completions.create(
        model=MODEL, prompt=prompt, stream=stream, **PARAMS
    )
    text = (
        "".join(c.choices[0].text for c in result if c.choices)
        if stream
        else result.choices[0].text
    )

    row = real_proxy.row(name)
    assert direct.usage is not None
    assert text == direct.choices[0].text
    assert (row["input_tokens"], row["output_tokens"]) == (
        direct.usage.prompt_tokens,
        direct.usage.completion_tokens,
    )


def test_embeddings_tokens_equal_the_servers_own_usage(
    server: str, real_proxy: Proxy
) -> None:
    name = unique("embed")

    direct = client(server).embeddings.create(model=MODEL, input="Hello world")
    proxied = client(real_proxy.url, name).embeddings.create(
        model=MODEL, input="Hello world"
    )

    row = real_proxy.row(name)
    assert proxied.data[0].embedding == direct.data[0].embedding
    assert row["input_tokens"] == direct.usage.prompt_tokens
    assert row["output_tokens"] == 0


def test_native_completion_tokens_equal_the_servers_own_figures(
    server: str, real_proxy: Proxy
) -> None:
    name = unique("native")
    body = json.dumps(
        {"prompt": "The capital of France is", "n_predict": 6, "temperature": 0}
    ).encode()
    request = urllib.request.Request(
        f"{real_proxy.url}/completion",
        data=body,
        headers={"Content-Type": "application/json", "X-Client-Name": name},
    )

    with urllib.request.urlopen(request, timeout=120) as response:
        answer = json.loads(response.read())

    row = real_proxy.row(name)
    assert row["input_tokens"] == answer["tokens_evaluated"]
    assert row["output_tokens"] == answer["tokens_predicted"]


def test_cancelled_stream_is_counted_with_the_servers_tokenizer(
    server: str, real_proxy: Proxy
) -> None:
    name = unique("cancel")
    truth = client(server).chat.completions.create(
        model=MODEL, messages=MESSAGES, **PARAMS
    )
    body = json.dumps(
        {"model": MODEL, "messages": MESSAGES, "stream": True, "max_tokens": 64}
    ).encode()
    request = urllib.request.Request(
        f"{real_proxy.url}/v1/chat/completions",
        data=body,
        headers={"Content-Type": "application/json", "X-Client-Name": name},
    )

    with urllib.request.urlopen(request, timeout=120) as response:
        response.read1(300)

    row = real_proxy.row(name)
    assert row["finish_reason"] == "cancelled"
    assert row["usage_source"] == "estimated"
    assert row["details"]["estimated_by"] == "server /tokenize"
    assert truth.usage is not None
    assert row["input_tokens"] == truth.usage.prompt_tokens


def test_anthropic_messages_tokens_equal_the_servers_own(
    server: str, real_proxy: Proxy
) -> None:
    name = unique("messages")
    body = {"model": MODEL, "max_tokens": 8, "messages": MESSAGES, "temperature": 0}

    direct = post_json(f"{server}/v1/messages", body)
    proxied = post_json(f"{real_proxy.url}/v1/messages", body, name)

    row = real_proxy.row(name)
    usage = direct["usage"]
    expected_input = (
        usage["input_tokens"]
        + usage.get("cache_read_input_tokens", 0)
        + usage.get("cache_creation_input_tokens", 0)
    )
    assert proxied["content"] == direct["content"]
    assert row["input_tokens"] == expected_input
    assert row["output_tokens"] == usage["output_tokens"]


def test_responses_api_tokens_equal_the_servers_own(
    server: str, real_proxy: Proxy
) -> None:
    name = unique("responses")
    body = {
        "model": MODEL,
        "input": "Name three colours.",
        "max_output_tokens": 8,
        "temperature": 0,
    }

    direct = post_json(f"{server}/v1/responses", body)
    post_json(f"{real_proxy.url}/v1/responses", body, name)

    row = real_proxy.row(name)
    assert row["input_tokens"] == direct["usage"]["input_tokens"]
    assert row["output_tokens"] == direct["usage"]["output_tokens"]
    assert row["total_tokens"] == direct["usage"]["total_tokens"]


def post_json(url: str, body: dict, name: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if name:
        headers["X-Client-Name"] = name
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers=headers
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())
