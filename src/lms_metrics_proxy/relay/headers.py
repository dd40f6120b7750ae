"""Which headers cross the proxy, in either direction.

Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, not the
message, so they are dropped both ways, together with any header that a
`Connection` header names.
"""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Set again by the proxy for the body it actually sends upstream; `Expect`
# would make the upstream client wait for a 100 Continue we never relay.
REQUEST_DROPPED = HOP_BY_HOP | {"host", "content-length", "expect"}
RESPONSE_DROPPED = HOP_BY_HOP


def forward_headers(
    headers: Iterable[tuple[str, str]], dropped: frozenset[str], connection: str | None
) -> CIMultiDict[str]:
    """Copy `headers` without the dropped ones and those `Connection` names."""
    if connection:
        named = {name.strip().lower() for name in connection.split(",")}
        dropped = dropped | named
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers:
        if name.lower() not in dropped:
            out.add(name, value)
    return out
