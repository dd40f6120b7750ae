"""Prices from PRICES_FILE: exact names, patterns, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lms_metrics_proxy.errors import ConfigError
from lms_metrics_proxy.prices import load_prices

TOML = """
[models."gpt-4o"]
input = 2.5
output = 10

[models."qwen*"]
input = 0.15
output = 0.6
"""


def test_exact_name_then_pattern_gives_the_cost(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(TOML)

    prices = load_prices(path)

    assert prices.cost("gpt-4o", 1_000_000, 100_000) == 3.5
    assert prices.cost("qwen2.5-7b", 2_000_000, 1_000_000) == pytest.approx(0.9)
    assert prices.cost("llama3.2", 10, 10) is None


def test_json_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"models": {"m": {"input": 1, "output": 2}}}')

    assert load_prices(path).cost("m", 1_000_000, 1_000_000) == 3.0


@pytest.mark.parametrize(
    "text",
    ['[models."m"]\ninput = "cheap"\noutput = 1\n', "models = 3\n", "not toml ["],
)
def test_malformed_file_names_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text)

    with pytest.raises(ConfigError, match="PRICES_FILE"):
        load_prices(path)


def test_settings_refuse_a_bad_prices_file(tmp_path: Path) -> None:
    from lms_metrics_proxy.config import load_settings

    path = tmp_path / "p.toml"
    path.write_text("models = 1\n")

    with pytest.raises(ConfigError, match="PRICES_FILE"):
        load_settings({"PRICES_FILE": str(path)}, env_file=None)


def test_stats_show_the_cost_at_the_files_rates(tmp_path: Path, upstream) -> None:
    import urllib.request

    from tests.conftest import get_json, start_proxy, stop_proxy

    path = tmp_path / "prices.toml"
    path.write_text('[models."qwen2.5-7b-instruct"]\ninput = 1000\noutput = 2000\n')
    proxy = start_proxy(tmp_path, upstream.url, {"PRICES_FILE": str(path)})
    try:
        request = urllib.request.Request(
            f"{proxy.url}/v1/chat/completions",
            data=b'{"model": "qwen2.5-7b-instruct", "messages": []}',
            headers={
                "X-Replay": "lmstudio-chat-nonstream.json",
                "X-Client-Name": "cost",
            },
        )
        urllib.request.urlopen(request, timeout=10).read()
        proxy.row("cost")
        models = get_json(f"{proxy.url}/stats/by-model")["models"]
        summary = get_json(f"{proxy.url}/stats/summary")
    finally:
        stop_proxy(proxy)

    # 21 input and 7 output tokens at 1000 and 2000 USD per million.
    assert models[0]["estimated_cost"] == pytest.approx(0.035)
    assert summary["estimated_cost"] == pytest.approx(0.035)
