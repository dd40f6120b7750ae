"""The dashboard in a real browser: Debian's Chromium driven by Playwright.

The page is served by `setup_dashboard` beside fake `/stats/*` handlers that
return canned JSON, including names and prompts that are HTML; the page must
show them as text. Needs `pip install playwright` and `apt-get install
chromium` (never `playwright install`: it downloads a browser build).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from lms_metrics_proxy.api.dashboard import setup_dashboard
from lms_metrics_proxy.config import Settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = Path("/tmp/dashboard.png")
SCREENSHOT_NARROW = Path("/tmp/dashboard-narrow.png")
SCREENSHOT_DETAIL = Path("/tmp/dashboard-detail.png")
SCREENSHOT_LOGIN = Path("/tmp/dashboard-login.png")

playwright_api = pytest.importorskip(
    "playwright.async_api",
    reason="playwright is not installed (pip install playwright; no browser download)",
)
if shutil.which(CHROMIUM) is None and os.environ.get("REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"REQUIRE_BROWSER=1 but {CHROMIUM} is missing")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None,
        reason=f"{CHROMIUM} is missing (apt-get install -y chromium)",
    ),
]

SCRIPT = "<script>window.__pwned=1</script>"
IMAGE = "<img src=x onerror=window.__pwned=1>"
EVIL_MODEL = f"evil-{SCRIPT}"
EVIL_CLIENT = f"client-{IMAGE}"
PROMPT = json.dumps([{"role": "user", "content": f"Say {SCRIPT} and {IMAGE}"}])
RESPONSE = f"Here: {IMAGE} done"

SUMMARY = {
    "total_requests": 1234,
    "successful_requests": 1200,
    "failed_requests": 34,
    "total_input_tokens": 12543,
    "total_output_tokens": 45621,
    "total_tokens": 58164,
    "average_input_tokens": 83.6,
    "average_output_tokens": 304.1,
    "total_duration_ms": 125430,
    "estimated_usage_requests": 7,
    "no_usage_requests": 3,
}
MODELS = [
    {
        "model": "qwen2.5-7b-instruct",
        "request_count": 1000,
        "total_input_tokens": 10000,
        "total_output_tokens": 40000,
        "total_tokens": 50000,
        "avg_input_tokens": 10.0,
        "avg_output_tokens": 40.0,
        "avg_duration_ms": 812,
    },
    {
        "model": EVIL_MODEL,
        "request_count": 234,
        "total_input_tokens": 2543,
        "total_output_tokens": 5621,
        "total_tokens": 8164,
        "avg_input_tokens": 10.9,
        "avg_output_tokens": 24.0,
        "avg_duration_ms": 1530,
    },
]
CLIENTS = [
    {"client": "notebook", "request_count": 1000, "total_input_tokens": 9000,
     "total_output_tokens": 30000, "total_tokens": 39000, "avg_duration_ms": 700},
    {"client": EVIL_CLIENT, "request_count": 200, "total_input_tokens": 3000,
     "total_output_tokens": 15000, "total_tokens": 18000, "avg_duration_ms": 900},
    {"client": None, "request_count": 34, "total_input_tokens": 543,
     "total_output_tokens": 621, "total_tokens": 1164, "avg_duration_ms": 300},
]  # fmt: skip


def recent_row(
    row_id: int, model: str, client: str | None, **extra: Any
) -> dict[str, Any]:
    row = {
        "id": row_id,
        "start_time": f"2026-01-19T10:{row_id % 60:02d}:45Z",
        "endpoint": "/v1/chat/completions",
        "model": model,
        "client": client,
        "input_tokens": 120,
        "output_tokens": 480,
        "total_tokens": 600,
        "duration_ms": 2310,
        "ttft_ms": 145,
        "http_status": 200,
        "is_error": False,
        "was_streamed": True,
        "usage_source": "upstream",
    }
    return row | extra


RECENT = [
    recent_row(42, EVIL_MODEL, EVIL_CLIENT),
    recent_row(41, "qwen2.5-7b-instruct", "notebook", usage_source="estimated"),
    recent_row(40, "qwen2.5-7b-instruct", None, http_status=502, is_error=True,
               input_tokens=None, output_tokens=None, total_tokens=None,
               ttft_ms=None, was_streamed=False, usage_source="none"),
]  # fmt: skip
DETAIL = RECENT[0] | {
    "prompt": PROMPT,
    "response": RESPONSE,
    "finish_reason": "stop",
    "error_message": None,
}
POINTS = [
    {"time": f"2026-01-19T{hour:02d}:00:00Z", "requests": 10 + hour,
     "input_tokens": 800 + 90 * hour, "output_tokens": 2500 + 400 * (hour % 5),
     "total_tokens": 3300 + 90 * hour + 400 * (hour % 5), "errors": hour % 3}
    for hour in range(0, 12)
    if hour != 5  # an empty hour the page fills in
]  # fmt: skip


@dataclass
class FakeStats:
    """Canned `/stats/*` answers, and every request they received."""

    token: str | None = None
    seen: list[web.Request] = field(default_factory=list)

    def hits(self, path: str) -> list[web.Request]:
        return [r for r in self.seen if r.path == path]

    def routes(self) -> list[web.RouteDef]:
        answers: dict[str, Callable[[web.Request], Any]] = {
            "/stats/summary": lambda r: SUMMARY,
            "/stats/by-model": lambda r: {"models": MODELS},
            "/stats/by-client": lambda r: {"clients": CLIENTS},
            "/stats/recent": lambda r: {"requests": RECENT},
            "/stats/timeseries": lambda r: {
                "bucket": r.query["bucket"],
                "points": POINTS,
            },
            "/stats/requests/{id}": lambda r: DETAIL,
        }
        return [web.get(path, self.handler(answer)) for path, answer in answers.items()]

    def handler(
        self, answer: Callable[[web.Request], Any]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            self.seen.append(request)
            if (
                self.token
                and request.headers.get("Authorization") != f"Bearer {self.token}"
            ):
                return web.json_response({"error": "unauthorised"}, status=401)
            return web.json_response(answer(request))

        return handle


@dataclass
class Site:
    url: str
    stats: FakeStats


async def start_site(token: str | None = None) -> tuple[TestServer, Site]:
    stats = FakeStats(token)
    app = web.Application()
    setup_dashboard(app, Settings(stats_token=token))
    app.add_routes(stats.routes())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server, Site(str(server.make_url("/dashboard")), stats)


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    server, running = await start_site()
    yield running
    await server.close()


@pytest.fixture
async def token_site() -> AsyncIterator[Site]:
    server, running = await start_site(token="tok-123")
    yield running
    await server.close()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


@pytest.fixture
def problems() -> list[str]:
    """Script errors and console errors (CSP violations among them) of `page`."""
    return []


@pytest.fixture
async def page(browser: Any, problems: list[str]) -> AsyncIterator[Any]:
    context = await browser.new_context(
        locale="en-US", timezone_id="UTC", viewport={"width": 1280, "height": 800}
    )
    opened = await context.new_page()

    def on_console(message: Any) -> None:
        if message.type == "error":
            problems.append(message.text)

    opened.on("pageerror", lambda error: problems.append(str(error)))
    opened.on("console", on_console)
    yield opened
    await context.close()


async def wait_for(check: Callable[[], bool], what: str, seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def tile(page: Any, key: str) -> str:
    return str(await page.locator(f'[data-tile="{key}"] .tile-value').inner_text())


async def open_dashboard(page: Any, url: str) -> None:
    await page.goto(url)
    expect = playwright_api.expect
    await expect(page.locator('[data-tile="requests"] .tile-value')).to_have_text(
        "1,234"
    )
    await expect(page.locator("#recent tbody tr[data-id]")).to_have_count(3)


async def test_dashboard_shows_the_statistics(
    page: Any, site: Site, problems: list[str]
) -> None:
    await open_dashboard(page, site.url)

    assert [await tile(page, k) for k in ("requests", "errors", "input", "output")] == [
        "1,234",
        "34",
        "12,543",
        "45,621",
    ]
    assert await tile(page, "total") == "58,164"
    assert await tile(page, "estimated") == "7"
    assert await tile(page, "no-usage") == "3"
    assert await tile(page, "duration") == "102 ms"
    assert await page.locator("#by-model tbody tr").count() == 2
    assert await page.locator("#by-client tbody tr").count() == 3
    assert await page.locator("#chart canvas").count() >= 1
    assert await page.locator("#chart-empty").is_hidden()
    await page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert problems == []


async def test_names_from_the_database_are_shown_as_text(page: Any, site: Site) -> None:
    await open_dashboard(page, site.url)

    models = await page.locator("#by-model tbody tr td:first-child").all_inner_texts()
    clients = await page.locator("#by-client tbody tr td:first-child").all_inner_texts()
    recent_model = await page.locator('#recent tr[data-id="42"] td').nth(2).inner_text()

    assert EVIL_MODEL in models
    assert EVIL_CLIENT in clients
    assert "(no X-Client-Name)" in clients
    assert recent_model == EVIL_MODEL
    assert await page.evaluate("typeof window.__pwned") == "undefined"
    assert await page.locator("main img, main script").count() == 0


async def test_clicking_a_recent_row_shows_prompt_and_response_literally(
    page: Any, site: Site, problems: list[str]
) -> None:
    await open_dashboard(page, site.url)

    await page.locator('#recent tr[data-id="42"]').click()
    prompt = page.locator("#detail-prompt")
    await playwright_api.expect(prompt).to_contain_text(SCRIPT)

    assert await page.locator("#detail").is_visible()
    assert IMAGE in await prompt.inner_text()
    assert await page.locator("#detail-response").inner_text() == RESPONSE
    assert "finish_reason" in await page.locator("#detail-fields").inner_text()
    assert site.stats.hits("/stats/requests/42")[0].query_string == ""
    assert await page.evaluate("typeof window.__pwned") == "undefined"
    await page.screenshot(path=str(SCREENSHOT_DETAIL))
    await page.keyboard.press("Escape")
    assert await page.locator("#detail").is_hidden()
    assert problems == []


async def test_filters_go_on_every_fetch_and_stay_in_the_address(
    page: Any, site: Site
) -> None:
    await open_dashboard(page, site.url)
    site.stats.seen.clear()

    await page.fill("#model", "qwen2.5-7b-instruct")
    await page.fill("#client", "notebook")
    await page.select_option("#range", "24h")
    await wait_for(lambda: len(site.stats.seen) >= 5, "the refetch")

    paths = {r.path for r in site.stats.seen}
    assert paths == {
        "/stats/summary",
        "/stats/by-model",
        "/stats/by-client",
        "/stats/recent",
        "/stats/timeseries",
    }
    for request in site.stats.seen:
        assert request.query["model"] == "qwen2.5-7b-instruct"
        assert request.query["client"] == "notebook"
        assert request.query["since"].endswith("Z")
    assert site.stats.hits("/stats/recent")[0].query["limit"] == "50"
    assert site.stats.hits("/stats/timeseries")[0].query["bucket"] == "hour"
    assert "model=qwen2.5-7b-instruct" in page.url
    assert "range=24h" in page.url


async def test_auto_refresh_can_be_paused(page: Any, site: Site) -> None:
    await page.clock.install()
    await open_dashboard(page, site.url)
    summaries = len(site.stats.hits("/stats/summary"))

    await page.clock.run_for(10_500)
    await wait_for(
        lambda: len(site.stats.hits("/stats/summary")) > summaries, "refresh"
    )
    await page.click("#pause")
    paused_at = len(site.stats.hits("/stats/summary"))
    await page.clock.run_for(35_000)
    await asyncio.sleep(0.3)

    assert len(site.stats.hits("/stats/summary")) == paused_at
    assert await page.get_attribute("#pause", "aria-pressed") == "true"
    await page.click("#pause")
    await page.clock.run_for(10_500)
    await wait_for(lambda: len(site.stats.hits("/stats/summary")) > paused_at, "resume")


async def test_token_from_the_address_is_kept_and_sent(
    page: Any, token_site: Site
) -> None:
    await open_dashboard(page, token_site.url + "?token=tok-123&model=")

    assert "token" not in page.url
    assert await page.evaluate("sessionStorage.getItem('lms-metrics-proxy.token')") == (
        "tok-123"
    )
    headers = {r.headers.get("Authorization") for r in token_site.stats.seen}
    assert headers == {"Bearer tok-123"}

    token_site.stats.seen.clear()
    await page.reload()
    await playwright_api.expect(
        page.locator("#recent tbody tr[data-id]")
    ).to_have_count(3)
    assert "token" not in page.url
    assert {r.headers.get("Authorization") for r in token_site.stats.seen} == {
        "Bearer tok-123"
    }


async def test_wrong_token_shows_the_form_which_opens_the_dashboard(
    page: Any, token_site: Site
) -> None:
    response = await page.goto(token_site.url + "?token=wrong&range=7d")

    assert response.status == 401
    await playwright_api.expect(page.locator("#rejected")).to_be_visible()
    assert "token" not in page.url
    await page.screenshot(path=str(SCREENSHOT_LOGIN))
    await page.fill("#token", "tok-123")
    await page.click("form.login-form button")
    await playwright_api.expect(page.locator("#range")).to_have_value("7d")
    await playwright_api.expect(
        page.locator('[data-tile="requests"] .tile-value')
    ).to_have_text("1,234")
    assert "token" not in page.url


async def test_narrow_screen_layout(browser: Any, site: Site) -> None:
    context = await browser.new_context(
        locale="en-US", timezone_id="UTC", viewport={"width": 390, "height": 844}
    )
    page = await context.new_page()

    await open_dashboard(page, site.url)
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )

    assert overflow <= 0
    await page.screenshot(path=str(SCREENSHOT_NARROW), full_page=True)
    await context.close()
