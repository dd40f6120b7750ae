"""SSE framing: events cut at any byte, every line ending, comments, fields."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lms_metrics_proxy.usage.sse import EventSplitter, complete_lines, parse_event

from .wire import split_at

BODY = (
    b": comment\n\n"
    b"event: message_delta\n"
    b'data: {"a":1}\n\n'
    b'data:{"b":"\xf0\x9f\x8c\x8d"}\n\n'
    b'data: {"c":\n'
    b"data: 2}\n\n"
    b"data: [DONE]\n\n"
)
EVENTS = [
    (None, None),
    (b"message_delta", b'{"a":1}'),
    (None, b'{"b":"\xf0\x9f\x8c\x8d"}'),
    (None, b'{"c":\n2}'),
    (None, b"[DONE]"),
]


def feed_all(pieces: list[bytes]) -> tuple[list[bytes], bytes]:
    splitter = EventSplitter()
    blocks = [block for piece in pieces for block in splitter.split(piece)]
    return blocks, splitter.take_rest()


def events_of(blocks: list[bytes]) -> list[tuple[bytes | None, bytes | None]]:
    return [parse_event(block) for block in blocks if block != b"\n"]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_whole_body_gives_every_event_with_any_line_ending(ending: bytes) -> None:
    body = BODY.replace(b"\n", ending)

    blocks, rest = feed_all([body])

    assert events_of(blocks) == EVENTS
    assert (b"".join(blocks), rest) == (body, b"")


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_body_cut_in_two_anywhere_gives_the_same_events(ending: bytes) -> None:
    body = BODY.replace(b"\n", ending)

    results = {cut: feed_all([body[:cut], body[cut:]]) for cut in range(len(body) + 1)}

    assert {cut: events_of(b) for cut, (b, _) in results.items()} == {
        cut: EVENTS for cut in results
    }
    assert {b"".join(blocks) + rest for blocks, rest in results.values()} == {body}


def test_lf_of_a_crlf_split_from_its_cr_comes_back_alone() -> None:
    splitter = EventSplitter()

    first = splitter.split(b"data: 1\r\n\r")
    second = splitter.split(b"\ndata: 2\r\n\r\n")

    assert (first, second) == ([b"data: 1\r\n\r"], [b"\n", b"data: 2\r\n\r\n"])


@pytest.mark.parametrize(
    "body",
    [
        b"data: 1\n\r\ndata: 2\r\n\n",  # LF then CR LF, CR LF then LF
        b"data: 1\r\rdata: 2\r\n\r\n",  # CR CR, then CR LF CR LF
        b"data: 1\r\r\ndata: 2\n\r",  # CR then CR LF; LF then CR
    ],
)
def test_mixed_line_endings_end_events_at_every_blank_line(body: bytes) -> None:
    results = [feed_all([body[:cut], body[cut:]]) for cut in range(len(body) + 1)]

    assert {tuple(events_of(blocks)) for blocks, _ in results} == {
        ((None, b"1"), (None, b"2"))
    }


def test_cr_lf_is_one_line_ending_not_a_blank_line() -> None:
    blocks, rest = feed_all([b"event: x\r", b"\ndata: 1\r", b"\n", b"\r", b"\n"])

    assert events_of(blocks) == [(b"x", b"1")]
    assert rest == b""


def test_incomplete_event_is_held() -> None:
    splitter = EventSplitter()

    blocks = splitter.split(b"data: 1\n\ndata: 2\n")

    assert blocks == [b"data: 1\n\n"]
    assert splitter.held == len(b"data: 2\n")
    assert splitter.take_rest() == b"data: 2\n"
    assert splitter.held == 0


def test_a_big_event_in_many_small_chunks_is_one_event() -> None:
    body = b"data: " + b"x" * 100_000 + b"\n\n"

    blocks, rest = feed_all([body[i : i + 7] for i in range(0, len(body), 7)])

    assert blocks == [body]
    assert rest == b""


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (b": ping - 2025-01-01\n\n", (None, None)),
        (b":\n\n", (None, None)),
        (b"data:{}\n\n", (None, b"{}")),
        (b"data:  two spaces\n\n", (None, b" two spaces")),
        (b"data\n\n", (None, b"")),
        (b"event: error\ndata: {}\n\n", (b"error", b"{}")),
        (b'error: {"message":"x"}\n\n', (b"error", b'{"message":"x"}')),
        (b"id: 7\nretry: 10\ndata: 1\n\n", (None, b"1")),
        (b"data: 1\n: comment inside\ndata: 2\n\n", (None, b"1\n2")),
        (b"data: a\r\ndata: b\r\n\r\n", (None, b"a\nb")),
        (b"event: x\n\n", (b"x", None)),
    ],
)
def test_parse_event_reads_fields_like_a_browser(
    block: bytes, expected: tuple[bytes | None, bytes | None]
) -> None:
    assert parse_event(block) == expected


def test_utf8_character_cut_between_chunks_is_whole_in_its_event() -> None:
    body = 'data: {"t":"Hello 🌍 你好"}\n\n'.encode()

    results = {feed_all([body[:cut], body[cut:]])[0][0] for cut in range(len(body))}

    assert results == {body}
    assert parse_event(body)[1] == '{"t":"Hello 🌍 你好"}'.encode()


@pytest.mark.parametrize(
    ("rest", "lines"),
    [
        (b"data: 1\ndata: 2", b"data: 1\n"),
        (b"data: 1", b""),
        (b"data: 1\r", b"data: 1\r"),
    ],
)
def test_complete_lines_drop_a_cut_last_line(rest: bytes, lines: bytes) -> None:
    assert complete_lines(rest) == lines


SSE_BYTES = st.lists(
    st.sampled_from(
        [b"data: ", b"data:", b"event: x", b": c", b"{}", b"\n", b"\r", b"\r\n", b"ab"]
    ),
    max_size=40,
).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(body=SSE_BYTES, cuts=st.lists(st.integers(0, 200), max_size=10))
def test_any_chunking_gives_the_events_of_the_whole_body(
    body: bytes, cuts: list[int]
) -> None:
    pieces = split_at(body, [cut % (len(body) + 1) for cut in cuts])

    whole, whole_rest = feed_all([body])
    blocks, rest = feed_all(pieces)

    assert events_of(blocks) == events_of(whole)
    assert b"".join(blocks) + rest == body == b"".join(whole) + whole_rest


def test_an_empty_chunk_does_not_forget_a_pending_cr() -> None:
    blocks, rest = feed_all([b"data: 1\r\r", b"", b"\ndata: 2\r\n\r\n"])

    assert blocks == [b"data: 1\r\r", b"\n", b"data: 2\r\n\r\n"]
    assert rest == b""
