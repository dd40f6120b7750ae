"""HTTP views over the store: /health and the /stats/* JSON API.

Handlers only read parameters, call `lms_metrics_proxy.store.queries` and
render JSON; they never import SQLAlchemy and never touch the relay.
`setup_api` adds the routes; `guard` puts another handler behind the
STATS_TOKEN bearer token (for /metrics and the dashboard).
"""

from lms_metrics_proxy.api.auth import guard
from lms_metrics_proxy.api.stats import setup_api

__all__ = ["guard", "setup_api"]
