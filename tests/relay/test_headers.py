"""Hop-by-hop headers are dropped; everything else crosses unchanged."""

from __future__ import annotations

from lms_metrics_proxy.relay.headers import (
    REQUEST_DROPPED,
    RESPONSE_DROPPED,
    forward_headers,
)


def test_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    headers = [
        ("Connection", "keep-alive, X-Private"),
        ("Keep-Alive", "timeout=5"),
        ("X-Private", "1"),
        ("Transfer-Encoding", "chunked"),
        ("X-Request-Id", "abc"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]

    out = forward_headers(headers, RESPONSE_DROPPED, "keep-alive, X-Private")

    assert list(out.items()) == [
        ("X-Request-Id", "abc"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]


def test_request_host_and_length_are_left_to_the_upstream_client() -> None:
    headers = [
        ("Host", "localhost:8080"),
        ("Content-Length", "12"),
        ("Authorization", "Bearer k"),
    ]

    out = forward_headers(headers, REQUEST_DROPPED, None)

    assert list(out.items()) == [("Authorization", "Bearer k")]
