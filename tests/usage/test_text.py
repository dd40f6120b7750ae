"""Text helpers: capping with a mark, flattening message content."""

from __future__ import annotations

import pytest

from lms_metrics_proxy.usage.text import TRUNCATION_MARK, clip_text, compact, flatten


def test_short_text_is_kept_whole() -> None:
    assert clip_text("hello", 5) == "hello"


def test_long_text_is_cut_to_the_limit_and_marked() -> None:
    clipped = clip_text("x" * 100, 20)

    assert len(clipped) == 20
    assert clipped == "x" * (20 - len(TRUNCATION_MARK)) + TRUNCATION_MARK


@pytest.mark.parametrize(("limit", "expected"), [(0, ""), (3, "abc")])
def test_limit_below_the_mark_cuts_without_it(limit: int, expected: str) -> None:
    assert clip_text("abcdefghijklmnopqrstuvwxyz", limit) == expected


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ("plain", "plain"),
        (None, ""),
        (42, ""),
        ([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "a\nb"),
        (
            [
                {"type": "text", "text": "Describe"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,AAA"},
                },
            ],
            "Describe",
        ),
        ([{"type": "input_text", "text": "resp"}], "resp"),
        ([{"type": "tool_result", "content": [{"type": "text", "text": "r"}]}], "r"),
        (
            [{"type": "tool_use", "name": "f", "input": {"city": "Paris"}}],
            '{"city":"Paris"}',
        ),
        (["a", "", "b"], "a\nb"),
    ],
)
def test_flatten_reads_text_parts_only(content: object, text: str) -> None:
    assert flatten(content) == text


def test_compact_keeps_unicode_and_has_no_spaces() -> None:
    assert compact({"a": ["é", 1]}) == '{"a":["é",1]}'


def test_none_stays_none() -> None:
    assert clip_text(None, 10) is None
