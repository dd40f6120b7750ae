"""NDJSON framing: whole lines out of any split, blank lines skipped."""

from __future__ import annotations

import pytest

from lms_metrics_proxy.usage.ndjson import LineSplitter

BODY = b'{"a":1}\n\n{"b":"\xe4\xbd\xa0"}\r\n{"c":3}\n'
LINES = [b'{"a":1}', b'{"b":"\xe4\xbd\xa0"}\r', b'{"c":3}']


def test_whole_body_gives_its_non_blank_lines() -> None:
    splitter = LineSplitter()

    assert splitter.split(BODY) == LINES
    assert splitter.take_rest() == b""


@pytest.mark.parametrize("cut", range(len(BODY) + 1))
def test_body_cut_anywhere_gives_the_same_lines(cut: int) -> None:
    splitter = LineSplitter()

    lines = splitter.split(BODY[:cut]) + splitter.split(BODY[cut:])

    assert lines == LINES


def test_last_line_without_newline_is_held() -> None:
    splitter = LineSplitter()

    lines = splitter.split(b'{"a":1}\n{"b"')
    lines += splitter.split(b":2}")

    assert lines == [b'{"a":1}']
    assert splitter.held == len(b'{"b":2}')
    assert splitter.take_rest() == b'{"b":2}'
    assert splitter.held == 0
