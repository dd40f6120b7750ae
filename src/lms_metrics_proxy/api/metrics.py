"""Prometheus metrics: what every proxied request cost, in the standard format.

Counted in memory per process from the same Records the writer stores (plus
GET, HEAD and OPTIONS requests, which get no row); served at `/metrics`.
With `serve --workers N`, a scrape reaches one worker of N, so each worker
writes its sums to a shared folder every second and a scrape adds the other
workers' files to its own live sums: totals stay whole and never go down.

Counting runs once per request on the relay's event loop, so it is plain
dictionary arithmetic; prometheus_client only comes in at scrape time, through
a custom collector that turns the sums into metric families. Its own Counter
and Histogram classes lock and validate on every increment, which cost about
15 µs per request under load (measured with the benchmark's wrk run).
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from lms_metrics_proxy.store.record import Record

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds; local generations run from tens of milliseconds to many minutes.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

Labels = tuple[str, ...]
# labels -> a count per bucket (the last is +Inf), then the sum of the values
Series = dict[Labels, list[float]]

logger = logging.getLogger(__name__)


class Histogram:
    """Observations by label values: a count per bucket (the last is +Inf), a sum."""

    __slots__ = ("bounds", "series")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.series: Series = {}

    def observe(self, labels: Labels, value: float) -> None:
        """Count `value` in the first bucket whose upper bound holds it."""
        entry = self.series.get(labels)
        if entry is None:
            entry = self.series[labels] = [0] * (len(self.bounds) + 2)
        entry[bisect_left(self.bounds, value)] += 1
        entry[-1] += value

    def merged(self, others: list[Series]) -> Series:
        """Return these series with the others' counts and sums added."""
        series = {labels: list(entry) for labels, entry in self.series.items()}
        for other in others:
            for labels, entry in other.items():
                mine = series.setdefault(labels, [0] * len(entry))
                for index, value in enumerate(entry):
                    mine[index] += value
        return series

    def family(
        self, name: str, documentation: str, names: Labels, series: Series
    ) -> Metric:
        """Return `series` as one histogram family, buckets cumulative."""
        family = HistogramMetricFamily(name, documentation, labels=names)
        # "0.01", "1.0", "+Inf": how prometheus_client writes `le` itself.
        edges = [repr(float(bound)) for bound in self.bounds] + ["+Inf"]
        for labels, entry in sorted(series.items()):
            buckets = list(zip(edges, accumulate(entry[:-1]), strict=True))
            family.add_metric(labels, buckets, entry[-1])
        return family


class Metrics:
    """Counters and histograms of proxied requests, in a registry of their own."""

    def __init__(self, share: Path | None = None, worker: str | None = None) -> None:
        # Where the workers of one `serve --workers N` leave their sums, each
        # in a file of its own (named by its process id unless told).
        self.share = share
        name = worker or str(os.getpid())
        self.own_file = share / f"{name}.json" if share else None
        # (method, endpoint, model, status) -> requests
        self.requests: dict[Labels, int] = {}
        # (endpoint, model) -> requests that ended in an error
        self.errors: dict[Labels, int] = {}
        # (model, direction, source) -> tokens
        self.tokens: dict[Labels, int] = {}
        self.duration = Histogram(DURATION_BUCKETS)  # by endpoint
        self.ttft = Histogram(TTFT_BUCKETS)  # by model
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)

    def observe(self, record: Record) -> None:
        """Count one finished request."""
        model = record.model or ""
        endpoint = _endpoint_label(record.endpoint)
        _add(self.requests, (record.method, endpoint, model, str(record.http_status)))
        if record.is_error:
            _add(self.errors, (endpoint, model))
        if record.input_tokens:
            key = (model, "input", record.usage_source)
            _add(self.tokens, key, record.input_tokens)
        if record.output_tokens:
            key = (model, "output", record.usage_source)
            _add(self.tokens, key, record.output_tokens)
        self.duration.observe((endpoint,), record.duration_ms / 1000)
        if record.ttft_ms is not None:
            self.ttft.observe((model,), record.ttft_ms / 1000)

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family; prometheus_client calls this on a scrape."""
        others = self._other_workers()
        yield _counter(
            "lms_proxy_requests",
            "Requests relayed to the model server",
            ("method", "endpoint", "model", "status"),
            _sum(self.requests, [other["requests"] for other in others]),
        )
        yield _counter(
            "lms_proxy_request_errors",
            "Relayed requests that ended in an error",
            ("endpoint", "model"),
            _sum(self.errors, [other["errors"] for other in others]),
        )
        yield _counter(
            "lms_proxy_tokens",
            "Tokens counted, by direction and by where the count came from",
            ("model", "direction", "source"),
            _sum(self.tokens, [other["tokens"] for other in others]),
        )
        yield self.duration.family(
            "lms_proxy_request_duration_seconds",
            "Time from request to last byte",
            ("endpoint",),
            self.duration.merged([other["duration"] for other in others]),
        )
        yield self.ttft.family(
            "lms_proxy_time_to_first_token_seconds",
            "Time from request to the first generated content",
            ("model",),
            self.ttft.merged([other["ttft"] for other in others]),
        )

    def dump(self) -> None:
        """Write this worker's sums to the shared folder (no-op without one)."""
        if self.own_file is None:
            return
        state = {
            "requests": list(self.requests.items()),
            "errors": list(self.errors.items()),
            "tokens": list(self.tokens.items()),
            "duration": list(self.duration.series.items()),
            "ttft": list(self.ttft.series.items()),
        }
        draft = self.own_file.with_suffix(".tmp")
        try:
            draft.write_bytes(orjson.dumps(state))
            os.replace(draft, self.own_file)  # readers never see half a file
        except OSError as error:
            logger.warning(
                "Could not share metrics with the other workers path=%s cause=%s",
                self.own_file,
                error,
            )

    def _other_workers(self) -> list[dict[str, Any]]:
        if self.share is None:
            return []
        found = []
        for path in sorted(self.share.glob("*.json")):
            if path == self.own_file:
                continue
            try:
                state = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue  # a worker that has just started or is writing
            found.append(
                {
                    name: {tuple(key): value for key, value in state[name]}
                    for name in state
                }
            )
        return found

    def render(self) -> bytes:
        """Return the metrics in Prometheus' text format."""
        return generate_latest(self.registry)


def _add(counts: dict[Labels, int], labels: Labels, amount: int = 1) -> None:
    counts[labels] = counts.get(labels, 0) + amount


def _sum(own: dict[Labels, int], others: list[dict[Labels, int]]) -> dict[Labels, int]:
    total = dict(own)
    for other in others:
        for labels, value in other.items():
            _add(total, labels, value)
    return total


def _counter(
    name: str, documentation: str, names: Labels, counts: dict[Labels, int]
) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=names)
    for labels, value in sorted(counts.items()):
        family.add_metric(labels, value)
    return family


def _endpoint_label(path: str) -> str:
    # Arbitrary paths would make one time series each; keep the known API
    # prefixes and fold the rest.
    if path.startswith(("/v1/", "/api/", "/completion", "/tokenize", "/embedding")):
        return path if path.count("/") <= 4 else "/".join(path.split("/")[:5])
    return "other"
