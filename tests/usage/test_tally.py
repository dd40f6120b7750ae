"""The tally's rules: last usage wins, zeros never replace counts, capped text."""

from __future__ import annotations

import pytest

from lms_metrics_proxy.usage.tally import (
    CappedText,
    Tally,
    ToolCalls,
    count,
    error_message,
)
from lms_metrics_proxy.usage.text import TRUNCATION_MARK


def counts(tally: Tally) -> tuple[int | None, ...]:
    return (tally.input, tally.output, tally.total, tally.cached, tally.reasoning)


def test_last_report_wins_and_reports_are_never_summed() -> None:
    tally = Tally(100)

    tally.report(input=16, output=0, total=16)
    tally.report(input=16, output=1, total=17)
    tally.report(input=16, output=3, total=19)

    assert counts(tally) == (16, 3, 19, None, None)
    assert tally.reported is True


def test_all_zero_report_never_replaces_a_real_one() -> None:
    tally = Tally(100)

    tally.report(input=30, output=5, total=35)
    tally.report(input=0, output=0, total=0)

    assert counts(tally) == (30, 5, 35, None, None)


def test_all_zero_report_counts_when_nothing_real_came() -> None:
    tally = Tally(100)

    tally.report(input=0, output=0, total=0)

    assert counts(tally) == (0, 0, 0, None, None)
    assert tally.reported is True


def test_fields_a_report_lacks_keep_their_earlier_values() -> None:
    tally = Tally(100)

    tally.report(input=12, cached=2048)
    tally.report(output=10)

    assert counts(tally) == (12, 10, None, 2048, None)


def test_empty_report_changes_nothing() -> None:
    tally = Tally(100)

    tally.report()

    assert tally.reported is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3), (0, 0), (3.0, 3), (-1, None), (2.5, None), ("3", None), (True, None)],
)
def test_count_accepts_only_non_negative_whole_numbers(
    value: object, expected: int | None
) -> None:
    assert count(value) == expected


def test_capped_text_stops_growing_and_marks_the_cut() -> None:
    text = CappedText(30)

    for _ in range(1000):
        text.add("0123456789")
    value = text.value()

    assert value is not None
    assert len(value) == 30
    assert value.endswith(TRUNCATION_MARK)
    assert sum(len(part) for part in text._parts) == 31


def test_capped_text_at_the_limit_is_not_marked() -> None:
    text = CappedText(10)

    text.add("01234")
    text.add("56789")

    assert text.value() == "0123456789"


def test_tool_calls_are_assembled_per_index() -> None:
    calls = ToolCalls(1000)

    calls.add(0, "get_weather", "")
    calls.add(1, "get_time", {"tz": "UTC"})
    calls.add(0, "get_weather", '{"city": "Pa')
    calls.add(0, None, 'ris"}')

    assert calls.value() == 'get_weather({"city": "Paris"})\nget_time({"tz":"UTC"})'


def test_first_model_and_first_error_win_last_finish_reason_wins() -> None:
    tally = Tally(100)

    for model, error, reason in (("a", "e1", "length"), ("b", "e2", "stop")):
        tally.set_model(model)
        tally.set_error(error)
        tally.set_finish(reason)
    tally.set_model("")
    tally.set_finish(None)

    assert (tally.model, tally.error, tally.finish_reason) == ("a", "e1", "stop")


def test_content_counts_for_every_choice_but_only_choice_zero_is_kept() -> None:
    tally = Tally(100)

    tally.add_text("", keep=True)
    assert tally.content is False
    tally.add_text("Blue", keep=False)

    assert tally.content is True
    assert tally.text.value() is None


@pytest.mark.parametrize(
    ("obj", "loose", "message"),
    [
        ({"error": {"message": "nested"}}, False, "nested"),
        ({"error": {"code": 1}}, False, '{"code":1}'),
        ({"error": "flat string"}, False, "flat string"),
        ({"error": None, "choices": []}, False, None),
        ({"object": "error", "message": "vllm"}, False, "vllm"),
        ({"type": "error", "message": "responses"}, False, "responses"),
        ({"message": "only under an error status"}, False, None),
        ({"message": "only under an error status"}, True, "only under an error status"),
        ({"detail": "Not Found"}, True, "Not Found"),
        ({"detail": [{"msg": "bad"}]}, True, '[{"msg":"bad"}]'),
        ({"choices": []}, True, None),
    ],
)
def test_error_message_reads_every_known_shape(
    obj: dict[str, object], loose: bool, message: str | None
) -> None:
    assert error_message(obj, loose=loose) == message


def test_tool_calls_beyond_the_limit_are_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = ToolCalls(1000)

    for index in range(40):
        calls.add(index, f"f{index}", "")
    value = calls.value()

    assert value is not None
    assert value.count("\n") == 31
    assert "f31()" in value
    assert "f32()" not in value
