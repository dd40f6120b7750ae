"""The meter end to end: every fixture, in any split, whole or filtered."""

from __future__ import annotations

import gzip
import json
import logging
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lms_metrics_proxy.usage import Meter, inspect_request, meter
from lms_metrics_proxy.usage.text import TRUNCATION_MARK

from .wire import BY_NAME, MAX_CHARS, SSE, WIRES, Wire, mismatches, split_at, usage_of

STREAMS = [wire for wire in WIRES if wire.is_stream_file]
LF_SSE = [w for w in STREAMS if w.name.endswith(".sse") and b"\r" not in w.body]
LOGGER = "lms_metrics_proxy.usage.meter"
SLOW = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def ids(wire: Wire) -> str:
    return wire.name


def without_usage_chunk(body: bytes) -> bytes:
    """Remove the `"choices":[]` usage event from an LF-framed fixture by hand."""
    *events, last = body.split(b"\n\n")
    kept = [e for e in events if not (b'"choices":[]' in e and b'"usage":{' in e)]
    return b"".join(event + b"\n\n" for event in kept) + last


def filtered(wire: Wire, pieces: list[bytes]) -> tuple[bytes, Meter]:
    meter_ = wire.meter()
    out = [meter_.filter(piece) for piece in pieces]
    out.append(meter_.flush())
    return b"".join(out), meter_


@pytest.mark.parametrize("wire", WIRES, ids=ids)
def test_fixture_gives_its_index_numbers(wire: Wire) -> None:
    usage = usage_of(wire, [wire.body])

    assert mismatches(usage, wire.expect) == {}


@pytest.mark.parametrize("wire", WIRES, ids=ids)
def test_fixture_split_in_two_anywhere_gives_the_same_numbers(wire: Wire) -> None:
    body = wire.body

    wrong = {
        cut: mismatches(usage_of(wire, [body[:cut], body[cut:]]), wire.expect)
        for cut in range(len(body) + 1)
    }

    assert {cut: diff for cut, diff in wrong.items() if diff} == {}


@SLOW
@given(wire=st.sampled_from(WIRES), cuts=st.lists(st.integers(0, 4000), max_size=40))
def test_fixture_cut_into_many_pieces_gives_the_same_numbers(
    wire: Wire, cuts: list[int]
) -> None:
    body = wire.body
    pieces = split_at(body, [cut % (len(body) + 1) for cut in cuts])

    assert mismatches(usage_of(wire, pieces), wire.expect) == {}


@pytest.mark.parametrize("wire", LF_SSE, ids=ids)
def test_filter_removes_only_the_usage_chunk_at_any_split(wire: Wire) -> None:
    body = wire.body
    expected = without_usage_chunk(body)

    outputs = {
        cut: filtered(wire, [body[:cut], body[cut:]])[0] for cut in range(len(body))
    }

    assert {cut: out for cut, out in outputs.items() if out != expected} == {}


@SLOW
@given(wire=st.sampled_from(LF_SSE), cuts=st.lists(st.integers(0, 4000), max_size=40))
def test_filter_output_and_numbers_hold_for_many_pieces(
    wire: Wire, cuts: list[int]
) -> None:
    body = wire.body
    pieces = split_at(body, [cut % (len(body) + 1) for cut in cuts])

    out, meter_ = filtered(wire, pieces)

    assert out == without_usage_chunk(body)
    assert mismatches(meter_.finish(), wire.expect) == {}


def test_filter_passes_a_stream_without_usage_chunk_unchanged() -> None:
    wire = BY_NAME["openai-compat-chat-stream-crlf-nousage.sse"]
    body = wire.body

    outputs = {filtered(wire, [body[:cut], body[cut:]])[0] for cut in range(len(body))}

    assert outputs == {body}


CRLF_WITH_USAGE = (
    b'data: {"model":"m","choices":[{"index":0,"delta":{"content":"Hi"}}]}\r\n\r\n'
    b'data: {"model":"m","choices":[],"usage":{"prompt_tokens":9,'
    b'"completion_tokens":2,"total_tokens":11}}\r\n\r\n'
    b"data: [DONE]\r\n\r\n"
)


def inline_wire() -> Wire:
    request = {"model": "m", "messages": [], "stream": True}
    return Wire("inline", "/v1/chat/completions", request, 200, SSE)


@pytest.mark.parametrize("separator", [b"\r\n", b"\r", b"\n"])
def test_filter_removes_the_usage_chunk_whatever_the_line_endings(
    separator: bytes,
) -> None:
    body = CRLF_WITH_USAGE.replace(b"\r\n", separator)
    wire = inline_wire()
    first, _, rest = body.partition(separator * 2)
    expected = first + separator * 2 + rest.partition(separator * 2)[2]

    outputs = {
        cut: filtered(wire, [body[:cut], body[cut:]])[0] for cut in range(len(body))
    }

    assert {cut: out for cut, out in outputs.items() if out != expected} == {}


def test_filter_holds_only_the_incomplete_event() -> None:
    wire = BY_NAME["openai-chat-stream-usage.sse"]
    body = wire.body
    first_end = body.index(b"\n\n") + 2
    meter_ = wire.meter()

    out = meter_.filter(body[: first_end + 10])

    assert out == body[:first_end]


def test_filter_passes_a_json_error_through() -> None:
    wire = BY_NAME["openai-error-context-length.json"]
    meter_ = wire.meter()

    out = meter_.filter(wire.body) + meter_.flush()

    assert out == wire.body
    assert meter_.finish().is_error is True


def test_filter_removes_a_last_usage_chunk_without_its_blank_line() -> None:
    body = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n'
    meter_ = inline_wire().meter()

    out = meter_.filter(body) + meter_.flush()
    usage = meter_.finish()

    assert out == b""
    assert (usage.input_tokens, usage.output_tokens) == (3, 1)


# Content-Encoding


@pytest.mark.parametrize("wire", WIRES, ids=ids)
def test_gzip_body_gives_the_same_numbers(wire: Wire) -> None:
    packed = gzip.compress(wire.body, mtime=0)
    meter_ = wire.meter("gzip")

    meter_.feed(packed[:10])
    meter_.feed(packed[10:])

    assert mismatches(meter_.finish(), wire.expect) == {}


@pytest.mark.parametrize("wire", STREAMS, ids=ids)
def test_sync_flushed_gzip_stream_is_read_event_by_event(wire: Wire) -> None:
    separator = b"\n\n" if wire.name.endswith(".sse") else b"\n"
    events = [event + separator for event in wire.body.split(separator) if event]
    packer = zlib.compressobj(wbits=31)
    meter_ = wire.meter("gzip")
    content_after = []

    for event in events:
        meter_.feed(packer.compress(event) + packer.flush(zlib.Z_SYNC_FLUSH))
        content_after.append(meter_.has_content)
    meter_.feed(packer.flush(zlib.Z_FINISH))

    assert mismatches(meter_.finish(), wire.expect) == {}
    assert content_after[-1] is (wire.expect.get("response_text") is not None)


@pytest.mark.parametrize(
    ("encoding", "wbits"), [("deflate", zlib.MAX_WBITS), ("deflate", -zlib.MAX_WBITS)]
)
def test_deflate_zlib_wrapped_or_raw_is_read(encoding: str, wbits: int) -> None:
    wire = BY_NAME["vllm-chat-nonstream.json"]
    packer = zlib.compressobj(wbits=wbits)
    packed = packer.compress(wire.body) + packer.flush()
    meter_ = wire.meter(encoding)

    meter_.feed(packed)

    assert mismatches(meter_.finish(), wire.expect) == {}


@pytest.mark.parametrize("encoding", ["zstd", "br", "gzip, br"])
def test_unreadable_encoding_leaves_usage_unknown_with_one_warning(
    encoding: str, caplog: pytest.LogCaptureFixture
) -> None:
    wire = BY_NAME["vllm-chat-nonstream.json"]
    caplog.set_level(logging.WARNING, logger=LOGGER)
    meter_ = wire.meter(encoding)

    meter_.feed(b"\x28\xb5\x2f\xfd whatever")
    meter_.feed(b"more")
    usage = meter_.finish()

    assert (usage.input_tokens, usage.usage_source, usage.is_error) == (
        None,
        "none",
        False,
    )
    assert [(r.name, r.levelno) for r in caplog.records] == [(LOGGER, logging.WARNING)]
    assert encoding.split(",")[0] in caplog.records[0].getMessage()


def test_corrupt_gzip_gives_up_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wire = BY_NAME["openai-chat-stream-usage.sse"]
    caplog.set_level(logging.WARNING, logger=LOGGER)
    meter_ = wire.meter("gzip")

    meter_.feed(b"\x1f\x8b\x08\x00garbage-garbage-garbage")
    meter_.feed(b"more garbage")
    usage = meter_.finish()

    assert usage.input_tokens is None
    assert len(caplog.records) == 1
    assert "endpoint=/v1/chat/completions" in caplog.records[0].getMessage()


# Ends: cut short, cancelled


def test_stream_cut_short_is_an_error_with_the_text_so_far(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wire = BY_NAME["openai-chat-stream-usage.sse"]
    body = wire.body
    cut = body.index(b" How") + 20  # inside the fourth event

    usage = usage_of(wire, [body[:cut]], cut_short=True)

    assert usage.is_error is True
    assert usage.error_message == meter.CUT_SHORT
    assert usage.response_text == "Hello!"
    assert usage.input_tokens is None
    assert caplog.records == []


def test_client_gone_is_cancelled_not_an_error() -> None:
    wire = BY_NAME["ollama-api-chat-stream.ndjson"]
    body = wire.body
    cut = body.index(b'" can"')

    usage = usage_of(wire, [body[:cut]], cancelled=True)

    assert (usage.is_error, usage.error_message) == (False, None)
    assert usage.finish_reason == "cancelled"
    assert usage.response_text == "Hello! How"


def test_non_stream_body_cut_short_is_an_error_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wire = BY_NAME["openai-chat-nonstream.json"]

    usage = usage_of(wire, [wire.body[:100]], cut_short=True)

    assert (usage.is_error, usage.input_tokens) == (True, None)
    assert caplog.records == []


def test_stream_ending_without_blank_line_still_counts_its_last_event() -> None:
    wire = BY_NAME["llamacpp-completion-native-stream.sse"]

    usage = usage_of(wire, [wire.body.rstrip(b"\n")])

    assert mismatches(usage, wire.expect) == {}


# Content and timing


@pytest.mark.parametrize(
    ("name", "events_before_content"),
    [
        ("llamacpp-chat-stream-timings.sse", 1),  # role-only chunk, content null
        ("openai-chat-stream-usage.sse", 1),  # role-only chunk, content ""
        ("anthropic-messages-stream.sse", 3),  # message_start, block start, ping
        ("lmstudio-api-v1-chat-stream.sse", 8),  # chat.start ... message.start
        ("openai-responses-stream.sse", 4),  # created ... content_part.added
        ("ollama-api-chat-stream.ndjson", 0),
        ("lmstudio-chat-stream-usage.sse", 0),  # role and first token together
    ],
)
def test_has_content_turns_true_at_the_first_generated_content(
    name: str, events_before_content: int
) -> None:
    wire = BY_NAME[name]
    separator = b"\n\n" if name.endswith(".sse") else b"\n"
    events = [event + separator for event in wire.body.split(separator) if event]
    meter_ = wire.meter()
    flags = []

    for event in events[: events_before_content + 1]:
        meter_.feed(event)
        flags.append(meter_.has_content)

    assert flags == [False] * events_before_content + [True]


def test_response_text_is_capped_and_marked() -> None:
    exchange = inspect_request("POST", "/api/chat", b'{"model":"m"}')
    meter_ = Meter(exchange, 200, "application/x-ndjson", None, 50)
    line = b'{"model":"m","message":{"role":"assistant","content":"0123456789"}}\n'

    for _ in range(1000):
        meter_.feed(line)
    text = meter_.finish().response_text

    assert text is not None
    assert len(text) == 50
    assert text.endswith(TRUNCATION_MARK)
    assert text.startswith("0123456789" * 3)


def test_memory_stays_bounded_over_a_long_stream() -> None:
    exchange = inspect_request("POST", "/v1/chat/completions", b'{"stream":true}')
    meter_ = Meter(exchange, 200, SSE, None, 100)
    event = (
        b'data: {"model":"m","choices":[{"index":0,"delta":{"content":"abc"}}],'
        b'"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}\n\n'
    )

    for _ in range(20_000):
        meter_.feed(event)
    tally = meter_._tally

    assert meter_._events.held == 0
    assert sum(len(part) for part in tally.text._parts) <= 101


def test_oversized_event_gives_up_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(meter, "MAX_HELD", 1000)
    wire = BY_NAME["openai-chat-stream-usage.sse"]
    meter_ = wire.meter()

    for _ in range(30):
        meter_.feed(b'data: {"choices": "' + b"x" * 100)
    usage = meter_.finish()

    assert meter_._events.held == 0
    assert usage.input_tokens is None
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_oversized_event_in_filter_mode_is_forwarded_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(meter, "MAX_HELD", 1000)
    wire = BY_NAME["openai-chat-stream-usage.sse"]
    meter_ = wire.meter()
    pieces = [b'data: {"choices": "' + b"x" * 100] * 30 + [b'"}\n\ndata: [DONE]\n\n']

    out = b"".join(meter_.filter(piece) for piece in pieces) + meter_.flush()

    assert out == b"".join(pieces)


def test_oversized_json_body_gives_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(meter, "MAX_HELD", 100)
    wire = BY_NAME["openai-chat-nonstream.json"]

    usage = usage_of(wire, [wire.body[:90], wire.body[90:]])

    assert (usage.input_tokens, usage.usage_source) == (None, "none")
    assert len(caplog.records) == 1


# Framing chosen without a Content-Type


@pytest.mark.parametrize("wire", WIRES, ids=ids)
def test_framing_is_sniffed_when_the_content_type_is_missing(wire: Wire) -> None:
    meter_ = Meter(wire.exchange(), wire.status, None, None, MAX_CHARS)
    body = wire.body

    for cut in range(0, len(body), 3):
        meter_.feed(body[cut : cut + 3])

    assert mismatches(meter_.finish(), wire.expect) == {}


# Error bodies


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, b"Internal Server Error", "Internal Server Error"),
        (502, b"", "upstream answered HTTP 502"),
        (422, b'{"detail":[{"msg":"field required"}]}', '[{"msg":"field required"}]'),
        (404, b'{"detail":"Not Found"}', "Not Found"),
        (400, b'{"error":"bad"}', "bad"),
        (400, b'{"object":"error","message":"flat","code":400}', "flat"),
        (
            200,
            b'{"type":"error","error":{"type":"x","message":"anthropic"}}',
            "anthropic",
        ),
    ],
)
def test_error_bodies_give_their_message(
    status: int, body: bytes, message: str
) -> None:
    exchange = inspect_request("POST", "/v1/chat/completions", b'{"model":"m"}')
    meter_ = Meter(exchange, status, "application/json", None, MAX_CHARS)

    meter_.feed(body)
    usage = meter_.finish()

    assert (usage.is_error, usage.error_message) == (True, message)


@pytest.mark.parametrize(
    "body",
    [
        b'error: {"code":400,"message":"too long","type":"x"}\n\ndata: [DONE]\n\n',
        b'event: error\ndata: {"error":{"message":"too long"}}\n\n',
        b'event: error\ndata: {"type":"error","code":"x","message":"too long"}\n\n',
        b"event: error\ndata: too long\n\n",
    ],
)
def test_errors_inside_a_stream_are_errors(body: bytes) -> None:
    exchange = inspect_request("POST", "/v1/chat/completions", b'{"stream":true}')
    meter_ = Meter(exchange, 200, SSE, None, MAX_CHARS)

    meter_.feed(body)
    usage = meter_.finish()

    assert (usage.is_error, usage.error_message) == (True, "too long")


def test_malformed_event_is_skipped_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wire = BY_NAME["openai-chat-stream-usage.sse"]
    junk = b"data: {not json\n\ndata: [1, 2]\n\ndata: {also not\n\n"

    usage = usage_of(wire, [junk, wire.body])

    assert mismatches(usage, wire.expect) == {}
    assert [(r.name, r.levelno) for r in caplog.records] == [(LOGGER, logging.WARNING)]


def test_ndjson_without_content_type_is_read_line_by_line() -> None:
    wire = BY_NAME["ollama-api-chat-stream.ndjson"]
    meter_ = Meter(wire.exchange(), 200, "application/json", None, MAX_CHARS)

    meter_.feed(wire.body)

    assert mismatches(meter_.finish(), wire.expect) == {}


# Arbitrary bytes


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.binary(max_size=300), max_size=8),
    content_type=st.sampled_from(
        [SSE, "application/json", "application/x-ndjson", None]
    ),
    encoding=st.sampled_from([None, "gzip", "deflate"]),
    path=st.sampled_from(["/v1/chat/completions", "/api/chat", "/v1/messages", "/x"]),
    status=st.sampled_from([200, 400, 500]),
    filtering=st.booleans(),
    cut_short=st.booleans(),
)
def test_arbitrary_bytes_never_raise(
    data: list[bytes],
    content_type: str | None,
    encoding: str | None,
    path: str,
    status: int,
    filtering: bool,
    cut_short: bool,
) -> None:
    exchange = inspect_request("POST", path, b'{"stream": true}')
    meter_ = Meter(exchange, status, content_type, encoding, 100)

    for piece in data:
        if filtering:
            meter_.filter(piece)
        else:
            meter_.feed(piece)
    meter_.flush()
    usage = meter_.finish(cut_short=cut_short)

    assert usage.usage_source in ("upstream", "none")
    assert usage.response_text is None or len(usage.response_text) <= 100


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "choices",
                    "usage",
                    "delta",
                    "message",
                    "content",
                    "index",
                    "type",
                    "error",
                    "model",
                    "timings",
                    "stats",
                    "done",
                    "prompt_eval_count",
                    "response",
                    "message_start",
                    "tool_calls",
                    "function",
                    "output",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    frames=st.lists(JSON_VALUES, max_size=6),
    path=st.sampled_from(
        [
            "/v1/chat/completions",
            "/v1/responses",
            "/v1/messages",
            "/api/chat",
            "/api/v1/chat",
            "/completion",
            "/api/v0/chat/completions",
        ]
    ),
)
def test_surprising_json_shapes_never_raise(frames: list[object], path: str) -> None:
    exchange = inspect_request("POST", path, b"{}")
    sse = Meter(exchange, 200, SSE, None, 100)
    whole = Meter(exchange, 200, "application/json", None, 100)

    for frame in frames:
        sse.feed(b"data: " + json.dumps(frame).encode() + b"\n\n")
    whole.feed(json.dumps(frames[0] if frames else {}).encode())

    assert sse.finish().usage_source in ("upstream", "none")
    assert whole.finish().usage_source in ("upstream", "none")


def test_finish_twice_gives_the_same_usage() -> None:
    wire = BY_NAME["vllm-chat-nonstream.json"]
    meter_ = wire.meter()
    meter_.feed(wire.body)

    first, second = meter_.finish(), meter_.finish()

    assert first == second
    assert mismatches(second, wire.expect) == {}


def test_a_failure_while_ending_is_logged_and_usage_still_returned(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wire = BY_NAME["vllm-chat-nonstream.json"]
    meter_ = wire.meter()

    def fail() -> None:
        raise ValueError("surprise")

    monkeypatch.setattr(meter_, "_end", fail)
    usage = meter_.finish()

    assert (usage.input_tokens, usage.is_error) == (None, False)
    assert "surprise" in caplog.records[0].getMessage()


def test_body_too_short_to_sniff_is_read_as_json_at_the_end() -> None:
    exchange = inspect_request("POST", "/v1/chat/completions", b"{}")
    meter_ = Meter(exchange, 500, None, None, MAX_CHARS)

    meter_.feed(b"err")
    usage = meter_.finish()

    assert (usage.is_error, usage.error_message) == (True, "err")


def test_error_status_with_an_unknown_json_body_names_the_status() -> None:
    exchange = inspect_request("POST", "/v1/chat/completions", b"{}")
    meter_ = Meter(exchange, 500, "application/json", None, MAX_CHARS)

    meter_.feed(b'{"foo": 1}')
    usage = meter_.finish()

    assert (usage.is_error, usage.error_message) == (True, "upstream answered HTTP 500")


def test_error_event_without_a_message_keeps_its_json() -> None:
    exchange = inspect_request("POST", "/v1/chat/completions", b"{}")
    meter_ = Meter(exchange, 200, SSE, None, MAX_CHARS)

    meter_.feed(b'event: error\ndata: {"code": 5}\n\n')
    usage = meter_.finish()

    assert usage.error_message == '{"code":5}'


def test_ndjson_lines_that_are_not_objects_are_skipped() -> None:
    wire = BY_NAME["ollama-api-chat-stream.ndjson"]

    usage = usage_of(wire, [b"[1, 2]\n", b'"text"\n', wire.body])

    assert mismatches(usage, wire.expect) == {}


def test_flush_after_feed_returns_nothing_so_nothing_is_sent_twice() -> None:
    wire = BY_NAME["openai-chat-stream-usage.sse"]
    meter_ = wire.meter()

    meter_.feed(wire.body[:-5])

    assert meter_.flush() == b""
    assert meter_.finish().response_text == "Hello! How can I help?"


def test_filter_after_feed_passes_bytes_through_so_nothing_is_sent_twice() -> None:
    wire = BY_NAME["openai-chat-stream-usage.sse"]
    body = wire.body
    meter_ = wire.meter()

    meter_.feed(body[:100])
    out = meter_.filter(body[100:]) + meter_.flush()

    assert out == body[100:]
    assert mismatches(meter_.finish(), wire.expect) == {}
