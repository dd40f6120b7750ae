"""The estimator: fills what the server did not count, with or without a tokenizer.

Expected counts are cl100k_base tokens worked out by hand: "Hello!" is
`Hello` `!` (2); "Hello! How can I help?" is `Hello` `!` ` How` ` can` ` I`
` help` `?` (7); "Hello! How" is 3. A chat request adds 3 per message and 3
for the reply.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from lms_metrics_proxy.usage import Usage, inspect_request
from lms_metrics_proxy.usage import estimate as estimate_module
from lms_metrics_proxy.usage.estimate import count_tokens, estimate, load_tokenizer

from .wire import BY_NAME, usage_of

LOGGER = "lms_metrics_proxy.usage.estimate"


@pytest.fixture
def tokenizer() -> Iterator[None]:
    pytest.importorskip("bpe_openai")
    estimate_module._TOKENIZER.forget()
    yield
    estimate_module._TOKENIZER.forget()


@pytest.fixture
def no_tokenizer(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(sys.modules, "bpe_openai", None)
    monkeypatch.setitem(sys.modules, "bpe_openai._bindings", None)
    estimate_module._TOKENIZER.forget()
    yield
    estimate_module._TOKENIZER.forget()


def chat_exchange(text: str = "Hello!") -> Any:
    body = b'{"model":"m","messages":[{"role":"user","content":"%s"}]}' % text.encode()
    return inspect_request("POST", "/v1/chat/completions", body)


@pytest.mark.usefixtures("tokenizer")
def test_stream_without_usage_is_estimated_from_prompt_and_answer() -> None:
    wire = BY_NAME["lmstudio-chat-stream-nousage.sse"]
    usage = usage_of(wire, [wire.body])

    estimated = estimate(wire.exchange(), usage)

    assert (estimated.input_tokens, estimated.output_tokens) == (2 + 3 + 3, 7)
    assert estimated.total_tokens == 15
    assert estimated.usage_source == "estimated"
    assert estimated.response_text == usage.response_text


@pytest.mark.usefixtures("tokenizer")
def test_missing_output_is_estimated_and_server_input_kept_upstream() -> None:
    wire = BY_NAME["anthropic-messages-stream-error.sse"]
    usage = usage_of(wire, [wire.body])

    estimated = estimate(wire.exchange(), usage)

    assert (estimated.input_tokens, estimated.output_tokens) == (12, 3)
    assert estimated.total_tokens == 15
    assert estimated.usage_source == "upstream"


@pytest.mark.usefixtures("tokenizer")
def test_zero_usage_from_the_server_is_estimated_keeping_output_zero() -> None:
    usage = Usage(output_tokens=0, usage_source="upstream", response_text="Hi!")

    estimated = estimate(chat_exchange(), usage)

    assert (estimated.input_tokens, estimated.output_tokens) == (8, 0)
    assert (estimated.total_tokens, estimated.usage_source) == (8, "estimated")


@pytest.mark.usefixtures("tokenizer")
def test_reasoning_text_counts_as_output() -> None:
    usage = Usage(
        input_tokens=5,
        usage_source="upstream",
        response_text="Hello!",
        reasoning_text="Hello! How",
    )

    estimated = estimate(chat_exchange(), usage)

    assert (estimated.output_tokens, estimated.total_tokens) == (2 + 3, 10)
    assert estimated.usage_source == "upstream"


@pytest.mark.usefixtures("tokenizer")
def test_complete_usage_is_returned_unchanged() -> None:
    usage = Usage(
        input_tokens=1, output_tokens=2, total_tokens=3, usage_source="upstream"
    )

    assert estimate(chat_exchange(), usage) is usage


@pytest.mark.usefixtures("tokenizer")
def test_nothing_to_count_is_returned_unchanged() -> None:
    exchange = inspect_request("DELETE", "/v1/responses/resp_1", b"")
    usage = Usage()

    assert estimate(exchange, usage) is usage


@pytest.mark.usefixtures("tokenizer")
def test_long_text_is_counted_in_pieces_and_scaled_past_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(estimate_module, "PIECE_CHARS", 12)
    monkeypatch.setattr(estimate_module, "MAX_COUNTED_CHARS", 120)

    counted = count_tokens(" hello" * 20)  # 120 chars, ten pieces of two words
    scaled = count_tokens(" hello" * 40)

    assert counted == 20
    assert scaled == 40


@pytest.mark.usefixtures("tokenizer")
def test_a_failing_count_leaves_usage_unchanged_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(text: str) -> int:
        raise ValueError("Input too long to encode safely")

    monkeypatch.setattr(estimate_module, "count_tokens", refuse)
    usage = Usage(response_text="Hi")

    first = estimate(chat_exchange(), usage)
    second = estimate(chat_exchange(), usage)

    assert first is usage
    assert second is usage
    assert [(r.name, r.levelno) for r in caplog.records] == [(LOGGER, logging.WARNING)]


@pytest.mark.usefixtures("no_tokenizer")
def test_without_the_tokenizer_usage_is_unchanged_and_nothing_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    usage = Usage(response_text="Hello! How can I help?")

    estimated = estimate(chat_exchange(), usage)

    assert estimated is usage
    assert load_tokenizer() is False
    assert count_tokens("Hello") is None
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_tokenizer_that_fails_to_load_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        @staticmethod
        def tokenizer_for_encoding(name: str) -> object:
            raise RuntimeError(f"no data for {name}")

    monkeypatch.setattr(estimate_module, "_bindings", lambda: Broken)
    estimate_module._TOKENIZER.forget()
    usage = Usage(response_text="Hi")

    results = [estimate(chat_exchange(), usage) for _ in range(3)]
    estimate_module._TOKENIZER.forget()

    assert all(result is usage for result in results)
    assert [(r.name, r.levelno) for r in caplog.records] == [(LOGGER, logging.WARNING)]
    assert "cl100k_base" in caplog.records[0].getMessage()


def test_importing_the_package_does_not_load_the_tokenizer() -> None:
    code = (
        "import sys, lms_metrics_proxy.usage as u; "
        "u.inspect_request('POST', '/v1/chat/completions', b'{}'); "
        "print('bpe_openai' in sys.modules)"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "False"


@pytest.mark.usefixtures("tokenizer")
def test_a_text_prompt_has_no_message_overhead_and_server_total_is_kept() -> None:
    exchange = inspect_request("POST", "/v1/completions", b'{"prompt":"Hello!"}')
    usage = Usage(output_tokens=7, total_tokens=9, usage_source="upstream")

    estimated = estimate(exchange, usage)

    assert (estimated.input_tokens, estimated.total_tokens) == (2, 9)
    assert estimated.usage_source == "upstream"


@pytest.mark.usefixtures("no_tokenizer")
def test_without_the_tokenizer_a_missing_output_stays_missing() -> None:
    usage = Usage(input_tokens=5, usage_source="upstream", response_text="Hi")

    assert estimate(chat_exchange(), usage) is usage


def test_the_tokenizer_loads_without_decoding_the_packages_vocabularies() -> None:
    pytest.importorskip("bpe_openai")
    code = (
        "import sys, lms_metrics_proxy.usage.estimate as e; "
        "print(e.count_tokens('Hello world'), 'bpe_openai.compat' in sys.modules)"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert result.stdout.split() == ["2", "False"]


@pytest.mark.usefixtures("tokenizer")
def test_counts_equal_the_packages_own_encoding() -> None:
    bpe_openai = pytest.importorskip("bpe_openai")
    encoding = bpe_openai.get_encoding("cl100k_base")
    texts = ["Hello <|endoftext|> world", "ünïcödé 1234567\n\n  f(x) => y;", " " * 9]

    assert [count_tokens(t) for t in texts] == [
        len(encoding.encode_ordinary(t)) for t in texts
    ]
