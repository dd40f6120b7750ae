"""Settings: environment, .env and flags, validated once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lms_metrics_proxy.config import ENV_NAMES, load_settings, sqlite_path
from lms_metrics_proxy.errors import ConfigError

README = Path(__file__).resolve().parent.parent / "README.md"


def test_defaults_match_the_spec() -> None:
    settings = load_settings({}, env_file=None)

    assert settings.port == 8080
    assert settings.host == "127.0.0.1"
    assert settings.upstream_url == "http://localhost:1234"
    assert settings.database_url == "sqlite:./token_counter.db"
    assert settings.log_level == "info"
    assert settings.store_content is True
    assert settings.max_content_chars == 100_000
    assert settings.stats_token is None
    assert settings.inject_stream_usage is True
    assert (settings.upstream_connect_timeout, settings.upstream_read_timeout) == (
        10,
        600,
    )
    assert settings.max_request_bytes == 104_857_600


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=9000\nLM_STUDIO_URL=http://10.0.0.5:1234\n")

    settings = load_settings({"PORT": "9001"}, env_file=env_file)

    assert settings.port == 9001
    assert settings.upstream_url == "http://10.0.0.5:1234"


def test_flags_win_over_the_environment() -> None:
    settings = load_settings(
        {"PORT": "9001"}, overrides={"port": "9002"}, env_file=None
    )

    assert settings.port == 9002


def test_rust_era_env_file_works_unchanged(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "RUST_LOG=token_counter_proxy=debug,tower_http=debug\n"
        "DATABASE_URL=sqlite:./token_counter.db\nUPSTREAM_URL=http://localhost:1234\n"
    )

    settings = load_settings({}, env_file=env_file)

    assert settings.log_level == "debug"
    assert settings.sqlite_path == "./token_counter.db"


def test_log_level_wins_over_rust_log() -> None:
    settings = load_settings({"LOG_LEVEL": "warn", "RUST_LOG": "debug"}, env_file=None)

    assert settings.log_level == "warn"


def test_trailing_v1_in_the_upstream_url_is_dropped() -> None:
    settings = load_settings(
        {"LM_STUDIO_URL": "http://localhost:1234/v1/"}, env_file=None
    )

    assert settings.upstream_url == "http://localhost:1234"


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("PORT", "abc", "an integer from 1 to 65535"),
        ("PORT", "70000", "an integer from 1 to 65535"),
        ("LM_STUDIO_URL", "localhost:1234", "http:// or https:// URL"),
        ("DATABASE_URL", "mysql://x", "sqlite:PATH"),
        ("LOG_LEVEL", "loud", "trace, debug, info, warn or error"),
        ("STORE_CONTENT", "maybe", "true or false"),
        ("UPSTREAM_READ_TIMEOUT", "-1", "above 0"),
        ("MAX_REQUEST_BYTES", "0", "above 0"),
    ],
)
def test_invalid_value_names_variable_value_and_accepted_form(
    name: str, value: str, accepted: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value}, env_file=None)

    message = str(caught.value)
    assert "\n" not in message
    assert name in message
    assert repr(value) in message
    assert accepted in message


def test_secret_value_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"STATS_TOKEN": "s3cret", "PORT": "x"}, env_file=None)

    assert "s3cret" not in str(caught.value)


def test_missing_database_folder_stops_startup(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "x.db"

    with pytest.raises(ConfigError, match=re.escape(str(missing.parent))):
        load_settings({"DATABASE_URL": f"sqlite:{missing}"}, env_file=None)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:./token_counter.db", "./token_counter.db"),
        ("sqlite:///tmp/x.db", "/tmp/x.db"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite::memory:", ":memory:"),
        ("sqlite:data.db?mode=rwc", "data.db"),
        ("postgresql://u@h/db", None),
    ],
)
def test_database_urls_of_the_original_are_understood(
    url: str, path: str | None
) -> None:
    assert sqlite_path(url) == path


def test_readme_lists_every_setting() -> None:
    text = README.read_text()

    missing = [name for name in ENV_NAMES if f"`{name}`" not in text]

    assert missing == []


@pytest.mark.parametrize(
    "upstream",
    ["http://localhost:8080", "http://127.0.0.1:8080/v1", "http://0.0.0.0:8080"],
)
def test_upstream_pointing_at_the_proxy_itself_stops_startup(upstream: str) -> None:
    with pytest.raises(ConfigError, match="points at the proxy itself"):
        load_settings({"LM_STUDIO_URL": upstream, "PORT": "8080"}, env_file=None)


def test_upstream_on_another_port_of_this_machine_is_fine() -> None:
    settings = load_settings(
        {"LM_STUDIO_URL": "http://localhost:8080", "PORT": "9090"}, env_file=None
    )

    assert settings.upstream_url == "http://localhost:8080"
