"""The command line: serve's settings errors, and the commands that read rows."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from lms_metrics_proxy.cli import cli
from lms_metrics_proxy.config import load_settings
from lms_metrics_proxy.store import Record, Writer, open_database


def all_commands(
    group: click.Group, prefix: str = ""
) -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        found.append((f"{prefix}{name}", command))
        if isinstance(command, click.Group):
            found.extend(all_commands(command, f"{prefix}{name} "))
    return found


def record(hours_ago: float, model: str, tokens: int) -> Record:
    start = datetime.now(UTC) - timedelta(hours=hours_ago)
    return Record(
        start_time=start,
        end_time=start + timedelta(milliseconds=250),
        duration_ms=250,
        method="POST",
        endpoint="/v1/chat/completions",
        http_status=200,
        usage_source="upstream",
        model=model,
        requested_model=model,
        client="cli-test",
        input_tokens=tokens,
        output_tokens=tokens,
        total_tokens=2 * tokens,
        prompt='[{"role":"user","content":"hi"}]',
        response="hello",
    )


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:{tmp_path / 'cli.db'}"

    async def fill() -> None:
        database = await open_database(
            load_settings({"DATABASE_URL": url}, env_file=None)
        )
        writer = Writer(database, max_rows=1000)
        await writer.start()
        writer.put(record(0.1, "small", 10))
        writer.put(record(0.2, "small", 20))
        writer.put(record(72, "large", 100))
        await writer.stop()
        await database.close()

    asyncio.run(fill())
    return url


@pytest.mark.parametrize(("name", "command"), all_commands(cli))
def test_every_command_has_help(name: str, command: click.Command) -> None:
    assert command.help, f"{name} has no help text"


def test_serve_with_a_bad_setting_exits_2_with_one_line() -> None:
    result = CliRunner().invoke(cli, ["serve", "--port", "abc"])

    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: Invalid --port='abc': expected an integer from 1 to 65535"
    )


def test_stats_json_totals_every_row(database_url: str) -> None:
    result = CliRunner().invoke(
        cli, ["stats", "--json", "--database-url", database_url]
    )

    data = json.loads(result.output)
    assert result.exit_code == 0, result.output
    assert data["summary"]["total_requests"] == 3
    assert data["summary"]["total_tokens"] == 260
    assert [m["model"] for m in data["models"]] == ["large", "small"]


def test_stats_since_filters_rows(database_url: str) -> None:
    result = CliRunner().invoke(
        cli, ["stats", "--json", "--since", "24h", "--database-url", database_url]
    )

    assert json.loads(result.output)["summary"]["total_requests"] == 2


def test_stats_table_shows_models(database_url: str) -> None:
    result = CliRunner().invoke(cli, ["stats", "--database-url", database_url])

    assert result.exit_code == 0, result.output
    assert "small" in result.output
    assert "large" in result.output


def test_export_jsonl_writes_every_row_with_text(database_url: str) -> None:
    result = CliRunner().invoke(
        cli, ["export", "--format", "jsonl", "--database-url", database_url]
    )

    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 0
    assert len(lines) == 3
    assert lines[0]["response"] == "hello"


def test_export_csv_has_a_header_and_a_line_per_row(database_url: str) -> None:
    result = CliRunner().invoke(
        cli, ["export", "--no-text", "--database-url", database_url]
    )

    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("id,start_time")
    assert "prompt" not in lines[0]
    assert len(lines) == 4


def test_prune_deletes_old_rows_and_keeps_the_rollup_consistent(
    database_url: str,
) -> None:
    runner = CliRunner()

    pruned = runner.invoke(
        cli, ["prune", "--older-than", "2d", "--yes", "--database-url", database_url]
    )
    after = runner.invoke(cli, ["stats", "--json", "--database-url", database_url])

    assert pruned.exit_code == 0, pruned.output
    assert "Deleted 1 rows" in pruned.output
    assert json.loads(after.output)["summary"]["total_requests"] == 2


def test_prune_refuses_a_time_instead_of_an_age(database_url: str) -> None:
    result = CliRunner().invoke(
        cli, ["prune", "--older-than", "2026-01-01", "--database-url", database_url]
    )

    assert result.exit_code == 2
    assert "--older-than" in result.output


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path / 'new.db'}"

    result = CliRunner().invoke(cli, ["db", "upgrade", "--database-url", url])

    assert result.exit_code == 0, result.output
    assert (tmp_path / "new.db").exists()


@pytest.mark.parametrize("command", ["stats", "recent", "export", "prune"])
def test_reading_a_database_that_is_not_there_says_so_and_creates_none(
    tmp_path: Path, command: str
) -> None:
    missing = tmp_path / "typo.db"
    extra = ["--older-than", "1d", "--yes"] if command == "prune" else []

    result = CliRunner().invoke(
        cli, [command, "--database-url", f"sqlite:{missing}", *extra]
    )

    assert result.exit_code == 2
    assert result.output.startswith(f"error: No database at {missing}")
    assert not missing.exists()


@pytest.mark.parametrize("width", [80, 160])
def test_recent_fits_the_terminal_and_cuts_no_name(
    database_url: str, width: int
) -> None:
    result = CliRunner().invoke(
        cli,
        ["recent", "--database-url", database_url],
        env={"COLUMNS": str(width)},
    )

    lines = result.output.splitlines()
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in lines) <= width
    assert "…" not in result.output  # long names fold onto a second line
    assert sum("cli-test" in line for line in lines) == 3
