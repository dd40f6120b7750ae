"""The JSON API through aiohttp's test client: shapes, parameters, errors, token."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from tests.store.helpers import BASE_TIME, make_record

from lms_metrics_proxy.api import stats as stats_module
from lms_metrics_proxy.errors import StoreError

from .conftest import TOKEN, Client, Parts

MakeClient = Callable[..., Awaitable[Client]]


async def get(client: Client, path: str, status: int = 200, **headers: str) -> Any:
    response = await client.get(path, headers=headers)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


async def bad_request(client: Client, path: str) -> str:
    body = await get(client, path, 400)
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == 400
    return str(body["error"]["message"])


async def test_health_reports_ok_and_the_writer_counters(client: Client) -> None:
    assert await get(client, "/health") == {
        "status": "ok",
        "service": "token_counter_proxy",
        "queued": 0,
        "dropped": 0,
        "written": 0,
        "refused": 0,
    }


async def test_health_says_degraded_while_rows_cannot_be_written(
    client: Client, parts: Parts
) -> None:
    assert parts.writer is not None
    parts.writer.failure = "database is locked"

    health = await get(client, "/health")

    assert health["status"] == "degraded"
    assert health["reason"] == "database is locked"
    assert health["service"] == "token_counter_proxy"


async def test_summary_on_an_empty_database_is_zeros(client: Client) -> None:
    summary = await get(client, "/stats/summary")

    assert summary["total_requests"] == 0
    assert summary["average_input_tokens"] == 0.0
    assert None not in summary.values()


async def test_summary_and_by_model_shapes(client: Client, parts: Parts) -> None:
    await parts.write(
        make_record(model="a", input_tokens=1, output_tokens=2, total_tokens=3),
        make_record(model="a", input_tokens=2, output_tokens=2, total_tokens=4),
        make_record(model="b", is_error=True, http_status=500, duration_ms=5),
    )

    summary = await get(client, "/stats/summary")
    models = (await get(client, "/stats/by-model"))["models"]

    assert summary["total_requests"] == 3
    assert summary["failed_requests"] == 1
    assert summary["average_input_tokens"] == 27.7
    assert [m["model"] for m in models] == ["b", "a"]
    assert models[1]["avg_input_tokens"] == 1.5
    assert models[0]["avg_duration_ms"] == 5


async def test_recent_defaults_to_100_and_cuts_at_1000(
    client: Client, parts: Parts
) -> None:
    await parts.write(*(make_record() for _ in range(1001)))

    default = await get(client, "/stats/recent")
    five = await get(client, "/stats/recent?limit=5")
    capped = await get(client, "/stats/recent?limit=5000")

    assert len(default["requests"]) == 100
    assert len(five["requests"]) == 5
    assert len(capped["requests"]) == 1000


@pytest.mark.parametrize("limit", ["0", "-3", "abc", "1.5", "", "9" * 5000])
async def test_recent_refuses_a_limit_below_1_or_not_a_number(
    client: Client, limit: str
) -> None:
    message = await bad_request(client, f"/stats/recent?limit={limit}")

    assert message == "limit must be a whole number from 1 to 1000"


async def test_request_by_id_returns_the_whole_row(
    client: Client, parts: Parts
) -> None:
    await parts.write(make_record(details={"runtime": "llama.cpp"}))
    [row] = (await get(client, "/stats/recent"))["requests"]

    detail = await get(client, f"/stats/requests/{row['id']}")

    assert detail["prompt"] == '[{"role": "user", "content": "Hello"}]'
    assert detail["details"] == {"runtime": "llama.cpp"}
    assert detail["start_time"] == "2026-01-19T10:30:45Z"


@pytest.mark.parametrize("request_id", ["999", "0", "-1", str(2**64)])
async def test_missing_request_is_a_json_404(client: Client, request_id: str) -> None:
    body = await get(client, f"/stats/requests/{request_id}", 404)

    assert body["error"]["type"] == "not_found_error"
    assert body["error"]["code"] == 404


async def test_request_id_must_be_a_number(client: Client) -> None:
    assert (
        await bad_request(client, "/stats/requests/abc") == "id must be a whole number"
    )


async def test_timeseries_and_by_client(client: Client, parts: Parts) -> None:
    await parts.write(
        make_record(client="cli"),
        make_record(client="cli", start_time=BASE_TIME + timedelta(hours=1)),
    )

    hourly = await get(client, "/stats/timeseries")
    daily = await get(client, "/stats/timeseries?bucket=day")
    clients = await get(client, "/stats/by-client")

    assert [p["time"] for p in hourly["points"]] == [
        "2026-01-19T10:00:00Z",
        "2026-01-19T11:00:00Z",
    ]
    assert daily["bucket"] == "day"
    assert [p["requests"] for p in daily["points"]] == [2]
    assert clients["clients"][0]["client"] == "cli"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("since=2026-01-19T11:00:00Z", 1),
        ("since=2026-01-19T12:00:00%2B01:00", 1),
        ("since=2026-01-19T11:00:00", 1),
        ("until=2026-01-19T11:00:00Z", 1),
        (f"since={int(BASE_TIME.timestamp()) + 1}", 1),
        (f"since={BASE_TIME.timestamp()}", 2),
        ("since=2026-01-19", 2),
        ("model=qwen3-8b&endpoint=/v1/chat/completions", 2),
        ("client=nobody", 0),
        ("model=", 2),
        ("unknown=1", 2),
        ("since=2026-01-20&until=2026-01-19", 0),
        ("since=2026-01-19t10:00:00z&until=2026-01-19T10:59:60Z", 1),
        ("since=0001-01-01T00:00:00%2B05:00", 2),
        ("until=9999-12-31T23:59:59-05:00", 2),
    ],
)
async def test_filters_select_requests(
    client: Client, parts: Parts, query: str, expected: int
) -> None:
    await parts.write(
        make_record(), make_record(start_time=BASE_TIME + timedelta(hours=1))
    )

    summary = await get(client, f"/stats/summary?{query}")
    recent = await get(client, f"/stats/recent?{query}")

    assert summary["total_requests"] == expected
    assert len(recent["requests"]) == expected


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/stats/summary?since=yesterday", "since must be an ISO 8601 time"),
        ("/stats/by-model?until=2026-13-45", "until must be an ISO 8601 time"),
        ("/stats/recent?since=1e400", "since must be an ISO 8601 time"),
        ("/stats/by-client?since=99999999999999999", "since must be an ISO 8601 time"),
        ("/stats/summary?model=a%00b", "model must be text without NUL"),
        ("/stats/timeseries?bucket=week", "bucket must be one of minute, hour, day"),
        ("/stats/requests/1?since=never", "since must be an ISO 8601 time"),
    ],
)
async def test_bad_parameters_get_a_400_naming_them(
    client: Client, path: str, named: str
) -> None:
    assert (await bad_request(client, path)).startswith(named)


async def test_year_10000_edge_is_answered_not_crashed(client: Client) -> None:
    summary = await get(client, "/stats/summary?since=9999-12-31T23:30:00Z")

    assert summary["total_requests"] == 0


async def test_unreadable_database_is_a_503_not_a_500(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object) -> None:
        raise StoreError("Could not read the database sqlite:x.db: disk I/O error")

    monkeypatch.setattr(stats_module.queries, "summary", broken)

    body = await get(client, "/stats/summary", 503)

    assert body["error"]["type"] == "store_unavailable"
    assert "disk I/O error" in body["error"]["message"]


async def test_database_not_open_yet_is_a_503(
    make_client: MakeClient, parts: Parts
) -> None:
    client = await make_client()
    parts.database = None
    parts.writer = None

    body = await get(client, "/stats/summary", 503)
    health = await get(client, "/health")

    assert body["error"]["type"] == "store_unavailable"
    assert health == {
        "status": "degraded",
        "service": "token_counter_proxy",
        "reason": "starting",
    }


STATS_PATHS = [
    "/stats/summary",
    "/stats/by-model",
    "/stats/by-client",
    "/stats/recent",
    "/stats/timeseries",
    "/stats/requests/1",
    "/stats/openapi.json",
]


@pytest.mark.parametrize("path", STATS_PATHS)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN, "Bearer", "Bearer é-ü"],
)
async def test_stats_need_the_bearer_token_when_one_is_set(
    make_client: MakeClient, path: str, authorization: str | None
) -> None:
    client = await make_client(TOKEN)
    headers = {} if authorization is None else {"Authorization": authorization}

    response = await client.get(path, headers=headers)
    body = await response.json()

    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert body["error"]["code"] == 401
    assert TOKEN not in await response.text()


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_right_token_opens_stats_and_health_needs_none(
    make_client: MakeClient, scheme: str
) -> None:
    client = await make_client(TOKEN)

    summary = await client.get(
        "/stats/summary", headers={"Authorization": f"{scheme} {TOKEN}"}
    )
    health = await client.get("/health")

    assert summary.status == 200
    assert health.status == 200
