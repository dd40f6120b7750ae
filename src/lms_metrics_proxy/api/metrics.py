"""Prometheus metrics: what every proxied request cost, in the standard format.

Counted in memory per process from the same Records the writer stores (plus
GET, HEAD and OPTIONS requests, which get no row); served at `/metrics`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from lms_metrics_proxy.store.record import Record

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds; local generations run from tens of milliseconds to many minutes.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Counters and histograms of proxied requests, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("method", "endpoint", "model", "status")
        self.requests = Counter(
            "lms_proxy_requests",
            "Requests relayed to the model server",
            labels,
            registry=self.registry,
        )
        self.errors = Counter(
            "lms_proxy_request_errors",
            "Relayed requests that ended in an error",
            ("endpoint", "model"),
            registry=self.registry,
        )
        self.tokens = Counter(
            "lms_proxy_tokens",
            "Tokens counted, by direction and by where the count came from",
            ("model", "direction", "source"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "lms_proxy_request_duration_seconds",
            "Time from request to last byte",
            ("endpoint",),
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "lms_proxy_time_to_first_token_seconds",
            "Time from request to the first generated content",
            ("model",),
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )

    def observe(self, record: Record) -> None:
        """Count one finished request."""
        model = record.model or ""
        endpoint = _endpoint_label(record.endpoint)
        self.requests.labels(
            record.method, endpoint, model, str(record.http_status)
        ).inc()
        if record.is_error:
            self.errors.labels(endpoint, model).inc()
        if record.input_tokens:
            self.tokens.labels(model, "input", record.usage_source).inc(
                record.input_tokens
            )
        if record.output_tokens:
            self.tokens.labels(model, "output", record.usage_source).inc(
                record.output_tokens
            )
        self.duration.labels(endpoint).observe(record.duration_ms / 1000)
        if record.ttft_ms is not None:
            self.ttft.labels(model).observe(record.ttft_ms / 1000)

    def render(self) -> bytes:
        """Return the metrics in Prometheus' text format."""
        return generate_latest(self.registry)


def _endpoint_label(path: str) -> str:
    # Arbitrary paths would make one time series each; keep the known API
    # prefixes and fold the rest.
    if path.startswith(("/v1/", "/api/", "/completion", "/tokenize", "/embedding")):
        return path if path.count("/") <= 4 else "/".join(path.split("/")[:5])
    return "other"
