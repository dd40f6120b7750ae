"""Accounting without I/O: request and response bytes in, usage values out.

Nothing in this package awaits, opens a socket or touches the database, so
every rule can be tested with bytes alone. The relay calls `inspect_request`
once per request and feeds each response chunk to a `Meter`.
"""

from lms_metrics_proxy.usage.exchange import Exchange, inject_usage, inspect_request
from lms_metrics_proxy.usage.meter import Meter, Usage

__all__ = ["Exchange", "Meter", "Usage", "inject_usage", "inspect_request"]
