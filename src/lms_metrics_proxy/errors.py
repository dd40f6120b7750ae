"""The proxy's exception tree; every error we raise on purpose lives here.

    ProxyError
     ├── ConfigError          a setting is missing or has a bad value (exit 2)
     ├── RequestTooLarge      the body passed MAX_REQUEST_BYTES (status 413)
     ├── UpstreamError        the model server could not be used (status 502)
     │    └── UpstreamTimeout also a TimeoutError (status 504)
     ├── UsageError           a body could not be read for accounting
     └── StoreError           the database could not be opened or written

Errors that reach a client carry the HTTP status they are sent with.
"""

from __future__ import annotations


class ProxyError(Exception):
    """Root of every error the proxy raises on purpose."""

    status = 500
    kind = "proxy_error"


class ConfigError(ProxyError):
    """A setting is missing, malformed or points somewhere unusable."""


class RequestTooLarge(ProxyError):
    """The request body is larger than MAX_REQUEST_BYTES."""

    status = 413
    kind = "request_too_large"


class UpstreamError(ProxyError):
    """The model server refused the connection or broke it."""

    status = 502
    kind = "upstream_unavailable"


class UpstreamTimeout(UpstreamError, TimeoutError):
    """The model server did not answer within the configured timeout."""

    status = 504
    kind = "upstream_timeout"


class UsageError(ProxyError):
    """A request or response body could not be read for accounting."""


class StoreError(ProxyError):
    """The database could not be opened, migrated or written."""
