"""/metrics: the counts of finished requests in Prometheus' text format."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from tests.store.helpers import make_record

from lms_metrics_proxy.api.metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the rendered text back into {(sample name, labels): value}."""
    text = metrics.render().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_requests_errors_and_tokens_are_counted_by_their_labels() -> None:
    metrics = Metrics()
    metrics.observe(make_record(input_tokens=80, output_tokens=300))
    metrics.observe(make_record(input_tokens=20, output_tokens=None))
    metrics.observe(make_record(http_status=502, is_error=True, input_tokens=None))

    found = samples(metrics)

    chat = (("endpoint", "/v1/chat/completions"), ("method", "POST"))
    ok = (*chat, ("model", "qwen3-8b"), ("status", "200"))
    failed = (*chat, ("model", "qwen3-8b"), ("status", "502"))
    assert found[("lms_proxy_requests_total", ok)] == 2
    assert found[("lms_proxy_requests_total", failed)] == 1
    errors = (("endpoint", "/v1/chat/completions"), ("model", "qwen3-8b"))
    assert found[("lms_proxy_request_errors_total", errors)] == 1
    tokens = (("model", "qwen3-8b"), ("source", "upstream"))
    assert found[("lms_proxy_tokens_total", (("direction", "input"), *tokens))] == 100
    assert found[("lms_proxy_tokens_total", (("direction", "output"), *tokens))] == 600


def test_durations_fall_in_cumulative_buckets_bounds_included() -> None:
    metrics = Metrics()
    for duration_ms in (10, 11, 700, 900_000):
        metrics.observe(make_record(duration_ms=duration_ms, ttft_ms=None))

    found = samples(metrics)

    def bucket(le: str) -> float:
        labels = (("endpoint", "/v1/chat/completions"), ("le", le))
        return found[("lms_proxy_request_duration_seconds_bucket", labels)]

    endpoint = (("endpoint", "/v1/chat/completions"),)
    assert bucket("0.01") == 1  # 10 ms is at the bound: `le` includes it
    assert bucket("0.05") == 2
    assert bucket("0.5") == 2
    assert bucket("1.0") == 3
    assert bucket("600.0") == 3
    assert bucket("+Inf") == 4
    assert found[("lms_proxy_request_duration_seconds_count", endpoint)] == 4
    assert found[("lms_proxy_request_duration_seconds_sum", endpoint)] == 900.721
    assert not any(name.startswith("lms_proxy_time_to") for name, _ in found)


def test_time_to_first_token_is_by_model_and_odd_paths_fold_into_other() -> None:
    metrics = Metrics()
    metrics.observe(make_record(ttft_ms=30, model=None, endpoint="/x/y"))

    found = samples(metrics)

    ttft = ("lms_proxy_time_to_first_token_seconds_count", (("model", ""),))
    assert found[ttft] == 1
    other = (("endpoint", "other"), ("method", "POST"), ("model", ""))
    assert found[("lms_proxy_requests_total", (*other, ("status", "200")))] == 1


def test_workers_sharing_a_folder_each_scrape_the_sum_of_all(tmp_path: Path) -> None:
    first, second = Metrics(tmp_path, "a"), Metrics(tmp_path, "b")
    first.observe(make_record(duration_ms=20, output_tokens=5))
    second.observe(make_record(duration_ms=700, output_tokens=7))
    second.observe(make_record(duration_ms=700, output_tokens=1, model="other"))
    (tmp_path / "c.json").write_text("{half a file")  # a worker mid-start
    first.dump()
    second.dump()
    first.observe(make_record(duration_ms=20, output_tokens=2))  # not dumped yet

    seen_by_first, seen_by_second = samples(first), samples(second)

    ok = (("endpoint", "/v1/chat/completions"), ("method", "POST"))
    ok += (("model", "qwen3-8b"), ("status", "200"))
    out = (("direction", "output"), ("model", "qwen3-8b"), ("source", "upstream"))
    chat = (("endpoint", "/v1/chat/completions"),)
    seconds = "lms_proxy_request_duration_seconds"
    assert seen_by_first[("lms_proxy_requests_total", ok)] == 3  # its live 2 + 1
    assert seen_by_second[("lms_proxy_requests_total", ok)] == 2  # 1 + 1 dumped
    assert seen_by_first[("lms_proxy_tokens_total", out)] == 5 + 7 + 2
    assert seen_by_first[(f"{seconds}_bucket", (*chat, ("le", "0.05")))] == 2
    assert seen_by_first[(f"{seconds}_count", chat)] == 4
    assert seen_by_first[(f"{seconds}_sum", chat)] == 1.44
