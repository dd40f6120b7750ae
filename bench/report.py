"""The benchmark's tables, and the check of DESIGN.md's performance targets."""

from __future__ import annotations

import os
from typing import Any

Row = dict[str, Any]


def number(value: object, digits: int = 1) -> str:
    """Return a table cell: '-' for None, thousands kept readable."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def render(headers: list[str], cells: list[list[str]]) -> str:
    """Return a plain-text table with aligned columns."""
    widths = [len(h) for h in headers]
    for line in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, line, strict=True)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True))
        for line in cells
    ]
    return "\n".join(line.rstrip() for line in out)


def add_ratios(rows: list[Row]) -> None:
    """Set each row's req/s ratio to `direct` and to `bare` at the same point."""
    anchors = {(r["target"], r["mode"], r["concurrency"]): r["rps"] for r in rows}
    for row in rows:
        for name in ("direct", "bare"):
            anchor = anchors.get((name, row["mode"], row["concurrency"]))
            row[f"x_{name}"] = round(row["rps"] / anchor, 3) if anchor else None


LOAD_HEADERS = [
    "target", "mode", "conc", "req/s", "p50 ms", "p99 ms", "ttfb p99",
    "x direct", "x bare", "cpu us/req", "cpu us/ev", "tgt us/unit",
    "peak RSS MB", "errors",
]  # fmt: skip


def load_table(rows: list[Row]) -> str:
    """Return the load table, one block per point."""
    cells = []
    for row in rows:
        stream = row["mode"] != "plain"
        unit = "target_cpu_us_per_event" if stream else "target_cpu_us_per_req"
        cells.append(
            [
                row["target"] + ("*" if row.get("profiled") else ""),
                row["mode"],
                str(row["concurrency"]),
                number(row["rps"]),
                number(row["p50_ms"], 2),
                number(row["p99_ms"], 2),
                number(row.get("ttfb_p99_ms"), 1) if stream else "",
                number(row.get("x_direct"), 2),
                number(row.get("x_bare"), 2),
                number(row["cpu_us_per_req"]),
                number(row["cpu_us_per_event"]) if stream else "",
                number(row[unit]),
                number(row["peak_rss_mb"]),
                str(row["errors"]),
            ]
        )
    table = render(LOAD_HEADERS, cells)
    if any(row.get("profiled") for row in rows):
        table += "\n* py-spy sampled this target during the point: not for comparison"
    return table


STATS_HEADERS = [
    "rows", "query", "via", "median ms", "max ms", "raw SQL ms", "rollup SQL ms",
    "status",
]  # fmt: skip


def stats_table(rows: list[Row]) -> str:
    """Return the statistics-query table."""
    cells = [
        [
            f"{row['rows']:,}",
            row["query"],
            row["via"],
            number(row.get("median_ms"), 1),
            number(row.get("max_ms"), 1),
            number(row.get("raw_ms"), 1),
            number(row.get("rollup_ms"), 1),
            str(row.get("status", "")),
        ]
        for row in rows
    ]
    return render(STATS_HEADERS, cells)


Check = tuple[str, str, bool | None]


def find(rows: list[Row], target: str, mode: str, conc: int | None = None) -> Row:
    """Return the row of a target at a point, or an empty row."""
    for row in rows:
        if row["target"] == target and row["mode"] == mode:
            if conc is None or row["concurrency"] == conc:
                return row
    return {}


def verdict(name: str, value: float | None, shown: str, limit: float) -> Check:
    """Return a check that `value` is at most `limit` (None: not measured)."""
    return (name, shown, None if value is None else value <= limit)


def check_design(rows: list[Row], stats: list[Row]) -> list[Check]:
    """Return (target, measured, met) for DESIGN.md's targets, for `ours`."""
    checks: list[Check] = []
    for conc in (16, 64):
        ratio = find(rows, "ours", "plain", conc).get("x_bare")
        shown = f"x bare {number(ratio, 2)}"
        name = f"plain c={conc}: req/s >= bare pass-through"
        checks.append((name, shown, None if ratio is None else ratio >= 1.0))

    paced, direct = (
        find(rows, "ours", "stream-10ms"),
        find(rows, "direct", "stream-10ms"),
    )
    per_event = paced.get("target_cpu_us_per_event")
    name = "CPU per streamed event (10 ms pacing) <= 60 us"
    checks.append(verdict(name, per_event, f"{number(per_event)} us", 60))
    slower = None
    if paced.get("p50_ms") and direct.get("p50_ms"):
        slower = 100 * (paced["p50_ms"] / direct["p50_ms"] - 1)
    name = "64 streams at 10 ms: p50 within 5% of direct"
    shown = "-" if slower is None else f"{slower:+.1f}%"
    checks.append(verdict(name, slower, shown, 5))
    ttfb = paced.get("ttfb_p99_ms")
    name = "64 streams at 10 ms: TTFB p99 <= 150 ms"
    checks.append(verdict(name, ttfb, f"{number(ttfb)} ms", 150))

    rss = find(rows, "ours", "slow-1000").get("peak_rss_mb")
    name = "1,000 concurrent streams: RSS < 200 MB"
    checks.append(verdict(name, rss, f"{number(rss)} MB", 199.99))
    return checks + stats_checks(stats)


def stats_checks(stats: list[Row]) -> list[Check]:
    """Return the checks of /stats/summary and /stats/by-model times."""
    checks: list[Check] = []
    for row in stats:
        if row["via"] != "proxy" or row["query"] not in ("summary", "by-model"):
            continue
        limit = 50 if row["rows"] <= 1_000_000 else 200
        median = row.get("median_ms")
        name = f"/stats/{row['query']} at {row['rows']:,} rows < {limit} ms"
        checks.append(verdict(name, median, f"{number(median)} ms", limit))
    return checks


def checks_table(checks: list[Check]) -> str:
    """Return the DESIGN.md targets with what ours measured."""
    verdict = {True: "met", False: "MISSED", None: "not measured"}
    cells = [[name, measured, verdict[met]] for name, measured, met in checks]
    return render(["DESIGN.md target (ours)", "measured", "verdict"], cells)


def workers_table(rows: list[Row], server_cores: str | None) -> str:
    """Return ours at plain c=64 with 1 and 2 worker processes."""
    cores = len(server_cores.split(",")) if server_cores else os.cpu_count() or 1
    cells = [
        [
            str(row["workers"]),
            number(row["rps"]),
            number(row["p50_ms"], 2),
            number(row["p99_ms"], 2),
            number(row.get("target_cpu_us_per_req")),
            "1.00" if row["workers"] == 1 else number(row.get("x_one_worker"), 2),
        ]
        for row in rows
    ]
    headers = ["workers", "req/s", "p50 ms", "p99 ms", "CPU us/req", "x 1 worker"]
    return f"ours, plain c=64, on {cores} server core(s)\n" + render(headers, cells)


def startup_checks(startup: Row) -> list[Check]:
    """Return the check of `make run` to its first answered request."""
    name = "make run: first answered request < 1.5 s"
    times = [*startup.get("new_db_s", []), *startup.get("existing_db_s", [])]
    if not times:
        return [(name, "-", None)]
    slowest = max(times)
    new, existing = max(startup["new_db_s"]), max(startup["existing_db_s"])
    shown = f"{slowest:.2f} s (new db {new:.2f}, existing {existing:.2f})"
    return [verdict(name, slowest, shown, 1.5)]
