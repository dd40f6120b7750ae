"""Per-model prices, for what a request would have cost on a paid API.

Read once at start-up from `PRICES_FILE`, TOML or JSON:

    [models."gpt-4o"]            # exact model name
    input = 2.50                 # USD per million input tokens
    output = 10.00               # USD per million output tokens
    [models."qwen2.5-*"]         # shell-style pattern, tried after exact names
    input = 0.15
    output = 0.60

A malformed file stops start-up with a ConfigError naming the file and entry.
"""

from __future__ import annotations

import fnmatch
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from lms_metrics_proxy.errors import ConfigError

PER = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million input and output tokens."""

    input: float
    output: float


@dataclass(frozen=True, slots=True)
class Prices:
    """Prices by exact model name, then by pattern in file order."""

    exact: dict[str, Price]
    patterns: tuple[tuple[str, Price], ...] = ()

    def find(self, model: str | None) -> Price | None:
        """Return the price of `model`, or None when the file names none."""
        if model is None:
            return None
        if model in self.exact:
            return self.exact[model]
        for pattern, price in self.patterns:
            if fnmatch.fnmatchcase(model, pattern):
                return price
        return None

    def cost(
        self, model: str | None, input_tokens: int, output_tokens: int
    ) -> float | None:
        """Return the USD cost of the counts for `model`, rounded to 1/10,000 cent."""
        price = self.find(model)
        if price is None:
            return None
        total = input_tokens * price.input / PER + output_tokens * price.output / PER
        return round(total, 6)


NO_PRICES = Prices(exact={})


def load_prices(path: Path | None) -> Prices:
    """Read a prices file; None gives no prices."""
    if path is None:
        return NO_PRICES
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"Invalid PRICES_FILE={str(path)!r}: cannot read it as "
            f"{'JSON' if path.suffix == '.json' else 'TOML'} ({error})"
        ) from None
    return _parse(path, data)


def _parse(path: Path, data: object) -> Prices:
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise ConfigError(
            f'Invalid PRICES_FILE={str(path)!r}: expected a [models."NAME"] table '
            "with input and output prices in USD per million tokens"
        )
    exact: dict[str, Price] = {}
    patterns: list[tuple[str, Price]] = []
    for name, entry in models.items():
        price = _price(path, name, entry)
        if any(c in name for c in "*?["):
            patterns.append((name, price))
        else:
            exact[name] = price
    return Prices(exact=exact, patterns=tuple(patterns))


def _price(path: Path, name: str, entry: object) -> Price:
    if isinstance(entry, dict):
        values = entry.get("input"), entry.get("output")
        if all(isinstance(v, int | float) and v >= 0 for v in values):
            return Price(float(values[0]), float(values[1]))  # type: ignore[arg-type]
    raise ConfigError(
        f"Invalid PRICES_FILE={str(path)!r}: model {name!r} needs input and output "
        "as numbers of 0 or more (USD per million tokens)"
    )
