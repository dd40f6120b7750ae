"""Accounting without I/O: request and response bytes in, usage values out.

Nothing in this package awaits, opens a socket or touches the database, so
every rule can be tested with bytes alone. The relay calls `inspect_request`
once per request and feeds each response chunk to a `Meter`;
`usage.estimate.estimate` fills what the server did not count (its tokenizer
loads on first use), and `clip_text` caps stored text.
"""

from lms_metrics_proxy.usage.exchange import Exchange, inject_usage, inspect_request
from lms_metrics_proxy.usage.meter import Meter, Usage
from lms_metrics_proxy.usage.text import TRUNCATION_MARK, clip_text

__all__ = [
    "TRUNCATION_MARK",
    "Exchange",
    "Meter",
    "Usage",
    "clip_text",
    "inject_usage",
    "inspect_request",
]
