"""Settings: read once at start-up from the environment, `.env` and flags.

This is the only module that reads `os.environ`. Everything is validated
here, so the rest of the proxy can trust a `Settings` value. A bad value
becomes a `ConfigError` whose message names the variable, the value (never a
secret's) and what is accepted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lms_metrics_proxy.errors import ConfigError
from lms_metrics_proxy.prices import load_prices

logger = logging.getLogger(__name__)

LogLevel = Literal["trace", "debug", "info", "warn", "error"]

# Environment variable -> field name. Several names may feed one field; the
# first one present wins (LM_STUDIO_URL over UPSTREAM_URL, LOG_LEVEL over
# RUST_LOG), so a `.env` written for the original Rust proxy works unchanged.
ENV_NAMES: dict[str, str] = {
    "PORT": "port",
    "HOST": "host",
    "LM_STUDIO_URL": "upstream_url",
    "UPSTREAM_URL": "upstream_url",
    "DATABASE_URL": "database_url",
    "LOG_LEVEL": "log_level",
    "RUST_LOG": "log_level",
    "STORE_CONTENT": "store_content",
    "MAX_CONTENT_CHARS": "max_content_chars",
    "STATS_TOKEN": "stats_token",
    "INJECT_STREAM_USAGE": "inject_stream_usage",
    "UPSTREAM_CONNECT_TIMEOUT": "upstream_connect_timeout",
    "UPSTREAM_READ_TIMEOUT": "upstream_read_timeout",
    "MAX_REQUEST_BYTES": "max_request_bytes",
    "PRICES_FILE": "prices_file",
    "WORKERS": "workers",
    "SHUTDOWN_GRACE": "shutdown_grace",
    "QUEUE_MAX_ROWS": "queue_max_rows",
}
FIELD_ENV = {field: env for env, field in reversed(ENV_NAMES.items())}
SECRET_FIELDS = frozenset({"stats_token"})
# Flags whose name is not the field's own (`--upstream` sets upstream_url).
FLAG_NAMES = {"upstream_url": "--upstream"}

# What each setting accepts, for error messages.
ACCEPTED: dict[str, str] = {
    "port": "an integer from 1 to 65535",
    "host": "an IP address or host name to bind",
    "upstream_url": "an http:// or https:// URL such as http://localhost:1234",
    "database_url": (
        "sqlite:PATH, sqlite:///PATH, sqlite://:memory: or postgresql://USER@HOST/DB"
    ),
    "log_level": "trace, debug, info, warn or error",
    "store_content": "true or false",
    "max_content_chars": "an integer of 0 or more",
    "stats_token": "a non-empty string",
    "inject_stream_usage": "true or false",
    "upstream_connect_timeout": "a number of seconds above 0",
    "upstream_read_timeout": "a number of seconds above 0",
    "max_request_bytes": "an integer above 0",
    "prices_file": "the path of a TOML or JSON file",
    "workers": "an integer from 1 to 64",
    "shutdown_grace": "a number of seconds of 0 or more",
    "queue_max_rows": "an integer of 100 or more",
}

_RUST_LEVELS = {"warning": "warn", "off": "error"}


class Settings(BaseModel):
    """Every setting of the proxy, validated and frozen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    port: int = Field(8080, ge=1, le=65535)
    host: str = Field("127.0.0.1", min_length=1)
    upstream_url: str = "http://localhost:1234"
    database_url: str = "sqlite:./token_counter.db"
    log_level: LogLevel = "info"
    store_content: bool = True
    max_content_chars: int = Field(100_000, ge=0)
    stats_token: str | None = None
    inject_stream_usage: bool = True
    upstream_connect_timeout: float = Field(10.0, gt=0)
    upstream_read_timeout: float = Field(600.0, gt=0)
    max_request_bytes: int = Field(104_857_600, gt=0)
    prices_file: Path | None = None
    workers: int = Field(1, ge=1, le=64)
    shutdown_grace: float = Field(30.0, ge=0)
    queue_max_rows: int = Field(100_000, ge=100)

    @field_validator("upstream_url")
    @classmethod
    def _check_upstream(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("not an http(s) URL")
        path = parts.path.rstrip("/")
        # Users often paste the OpenAI base URL; the proxy adds paths itself.
        if path.endswith("/v1"):
            path = path[: -len("/v1")]
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))

    @field_validator("database_url")
    @classmethod
    def _check_database(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith(("sqlite:", "postgres://", "postgresql")):
            raise ValueError("unknown database scheme")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _read_level(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return parse_log_level(value)

    @field_validator("stats_token")
    @classmethod
    def _check_token(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None
        return value

    @property
    def sqlite_path(self) -> str | None:
        """The SQLite file (or `:memory:`), or None for PostgreSQL."""
        return sqlite_path(self.database_url)

    @property
    def database_label(self) -> str:
        """The database URL with any password replaced, safe to log."""
        parts = urlsplit(self.database_url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            return urlunsplit(parts._replace(netloc=netloc))
        return self.database_url

    @property
    def is_loopback(self) -> bool:
        """Whether the proxy binds only this machine's loopback interface."""
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith(
            "127."
        )


def parse_log_level(value: str) -> str:
    """Read LOG_LEVEL, or a RUST_LOG directive list such as `app=debug,info`."""
    text = value.strip().lower()
    if "," in text or "=" in text:
        directives = [d.split("=")[-1] for d in text.split(",") if d]
        text = directives[-1] if directives else "info"
    return _RUST_LEVELS.get(text, text)


def sqlite_path(url: str) -> str | None:
    """Turn `sqlite:PATH`, `sqlite:///PATH` or `sqlite://:memory:` into a path.

    `sqlite:///tmp/x.db` means /tmp/x.db, as in the Rust sqlx URLs that the
    original proxy read, not the relative path SQLAlchemy would make of it.
    """
    if not url.startswith("sqlite:"):
        return None
    rest = url[len("sqlite:") :].split("?", 1)[0]
    if rest.startswith("//"):
        rest = rest[2:]
    if rest in ("", ":memory:"):
        return ":memory:"
    return rest


def load_settings(
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    env_file: str | Path | None = ".env",
) -> Settings:
    """Build the settings: flags over the environment over `.env`."""
    source: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        source.update(
            {k: v for k, v in dotenv_values(env_file).items() if v is not None}
        )
    source.update(os.environ if environ is None else environ)
    values = _values_from_env(source)
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    values.update(flags)
    try:
        settings = Settings.model_validate(values)
    except ValidationError as error:
        raise ConfigError(_describe(error, values, set(flags))) from None
    _check_database_path(settings)
    _check_not_itself(settings)
    if settings.prices_file is not None:
        load_prices(settings.prices_file)  # a bad file stops start-up here
    return settings


def _values_from_env(source: Mapping[str, str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for env, field in ENV_NAMES.items():
        if field not in values and env in source and source[env] != "":
            values[field] = source[env]
    return values


def _describe(
    error: ValidationError, values: Mapping[str, Any], flags: set[str]
) -> str:
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "?"
    name = FIELD_ENV.get(field, field.upper())
    if field in flags:
        name = FLAG_NAMES.get(field, "--" + field.replace("_", "-"))
    shown = "(hidden)" if field in SECRET_FIELDS else repr(values.get(field))
    accepted = ACCEPTED.get(field, first["msg"])
    return f"Invalid {name}={shown}: expected {accepted}"


LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"})


def _check_not_itself(settings: Settings) -> None:
    # Forwarding to ourselves would open connections until the client gives up.
    parts = urlsplit(settings.upstream_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    if port == settings.port and (host in LOCAL_NAMES or host == settings.host):
        raise ConfigError(
            f"Invalid LM_STUDIO_URL={settings.upstream_url!r}: it points at the "
            f"proxy itself (port {settings.port}); set it to the model server, "
            "e.g. http://localhost:1234"
        )


def _check_database_path(settings: Settings) -> None:
    path = settings.sqlite_path
    if path is None or path == ":memory:":
        return
    folder = Path(path).expanduser().resolve().parent
    if not folder.is_dir():
        raise ConfigError(
            f"Invalid DATABASE_URL={settings.database_url!r}: folder {folder} "
            "does not exist; create it or point DATABASE_URL elsewhere"
        )
    if not os.access(folder, os.W_OK):
        raise ConfigError(
            f"Invalid DATABASE_URL={settings.database_url!r}: folder {folder} "
            "is not writable; fix its permissions or point DATABASE_URL elsewhere"
        )
