"""The dashboard page and its static files, through aiohttp's test client."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from html.parser import HTMLParser

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from lms_metrics_proxy.api.dashboard import (
    STATIC_DIR,
    UPLOT_VERSION,
    setup_dashboard,
)
from lms_metrics_proxy.config import Settings

TOKEN = "s3cret-token"
ClientMaker = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


class Links(HTMLParser):
    """Collect the script tags and the URLs a page links to."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline_script = ""
        self.urls: list[str] = []
        self.in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            self.scripts.append(values)
            self.in_script = True
        for name in ("src", "href"):
            if values.get(name):
                self.urls.append(str(values[name]))
        if "style" in values:
            raise AssertionError(f"inline style on <{tag}>")

    def handle_endtag(self, tag: str) -> None:
        self.in_script = self.in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self.in_script:
            self.inline_script += data.strip()


def parse(html: str) -> Links:
    links = Links()
    links.feed(html)
    return links


async def dashboard_client(
    aiohttp_client: ClientMaker, token: str | None = None
) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    setup_dashboard(app, Settings(stats_token=token))
    return await aiohttp_client(app)


async def test_page_renders_with_a_strict_content_security_policy(
    aiohttp_client: ClientMaker,
) -> None:
    client = await dashboard_client(aiohttp_client)

    response = await client.get("/dashboard")
    html = await response.text()

    assert response.status == 200
    assert response.content_type == "text/html"
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy
    assert "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert "require-trusted-types-for 'script'" in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert 'data-refresh-seconds="10"' in html
    assert 'data-token-required="false"' in html


async def test_page_has_no_inline_script(aiohttp_client: ClientMaker) -> None:
    client = await dashboard_client(aiohttp_client)

    links = parse(await (await client.get("/dashboard")).text())

    assert links.inline_script == ""
    sources = [str(script.get("src")) for script in links.scripts]
    assert len(sources) == 2
    assert all(
        re.fullmatch(r"/dashboard/static/[\w.]+\?v=[0-9a-f]{12}", s) for s in sources
    )


async def test_every_file_the_page_links_is_served(aiohttp_client: ClientMaker) -> None:
    client = await dashboard_client(aiohttp_client)
    links = parse(await (await client.get("/dashboard")).text())

    statuses = {url: (await client.get(url)).status for url in links.urls}

    assert len(statuses) >= 5
    assert set(statuses.values()) == {200}


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("dashboard.js", "text/javascript"),
        ("login.js", "text/javascript"),
        ("uPlot.iife.min.js", "text/javascript"),
        ("dashboard.css", "text/css"),
        ("uPlot.min.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
        ("uPlot.LICENSE.txt", "text/plain"),
    ],
)
async def test_static_file_is_served_with_its_type_and_a_long_cache(
    aiohttp_client: ClientMaker, name: str, content_type: str
) -> None:
    client = await dashboard_client(aiohttp_client)

    response = await client.get(f"/dashboard/static/{name}")

    assert response.status == 200
    assert response.content_type == content_type
    assert response.charset == "utf-8"
    assert "max-age=31536000" in response.headers["Cache-Control"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert await response.read() == (STATIC_DIR / name).read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/static/../dashboard.py",
        "/dashboard/static/..%2Fdashboard.py",
        "/dashboard/static/%2e%2e%2fdashboard.py",
        "/dashboard/static/..%2F..%2Fconfig.py",
        "/dashboard/static/%2Fetc%2Fpasswd",
        "/dashboard/static/..%5Cdashboard.py",
        "/dashboard/static/%2e%2e",
        "/dashboard/static/../templates/dashboard.html",
        "/dashboard/static/README.md",
        "/dashboard/static/missing.js",
        "/dashboard/static/",
    ],
)
async def test_static_route_refuses_paths_outside_the_folder(
    aiohttp_client: ClientMaker, path: str
) -> None:
    client = await dashboard_client(aiohttp_client)

    # Sent as written: the route sees `..%2F` decoded to `../`.
    response = await client.get(URL(path, encoded=True), allow_redirects=False)
    body = await response.read()

    assert response.status == 404
    assert b"setup_dashboard" not in body
    assert b"root:" not in body


async def test_trailing_slash_redirects_and_keeps_the_query(
    aiohttp_client: ClientMaker,
) -> None:
    client = await dashboard_client(aiohttp_client)

    response = await client.get("/dashboard/?model=m1", allow_redirects=False)

    assert response.status == 308
    assert response.headers["Location"] == "/dashboard?model=m1"


async def test_token_is_required_when_set(aiohttp_client: ClientMaker) -> None:
    client = await dashboard_client(aiohttp_client, TOKEN)

    response = await client.get("/dashboard")
    html = await response.text()

    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Content-Security-Policy" in response.headers
    assert 'name="token"' in html
    assert "not accepted" not in html
    assert TOKEN not in html


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"Authorization": f"Bearer {TOKEN}"}, ""),
        ({"Authorization": f"bearer  {TOKEN}"}, ""),
        ({}, f"?token={TOKEN}"),
        ({"Authorization": "Bearer wrong"}, f"?token={TOKEN}"),
    ],
    ids=["bearer", "bearer-lowercase", "query", "query-wins-over-wrong-header"],
)
async def test_page_opens_with_the_token(
    aiohttp_client: ClientMaker, headers: dict[str, str], query: str
) -> None:
    client = await dashboard_client(aiohttp_client, TOKEN)

    response = await client.get(f"/dashboard{query}", headers=headers)

    assert response.status == 200
    assert 'data-token-required="true"' in await response.text()


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"Authorization": "Bearer wrong"}, ""),
        ({"Authorization": f"Basic {TOKEN}"}, ""),
        ({"Authorization": f"Bearer {TOKEN}x"}, ""),
        ({}, "?token="),
        ({}, "?token=%C3%A9t%C3%A9"),
        ({}, "?token=%FF%FE"),
    ],
    ids=["wrong", "basic-scheme", "longer", "empty-query", "non-ascii", "not-utf8"],
)
async def test_page_refuses_a_wrong_token(
    aiohttp_client: ClientMaker, headers: dict[str, str], query: str
) -> None:
    client = await dashboard_client(aiohttp_client, TOKEN)

    response = await client.get(f"/dashboard{query}", headers=headers)

    assert response.status == 401
    assert "not accepted" in await response.text()


async def test_wrong_token_is_logged_without_the_token(
    aiohttp_client: ClientMaker, caplog: pytest.LogCaptureFixture
) -> None:
    client = await dashboard_client(aiohttp_client, TOKEN)
    caplog.set_level(logging.WARNING, logger="lms_metrics_proxy.api.dashboard")

    await client.get("/dashboard", headers={"Authorization": "Bearer guess-123"})

    [record] = [
        r for r in caplog.records if r.name == "lms_metrics_proxy.api.dashboard"
    ]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("Dashboard refused a wrong token remote=")
    assert "guess-123" not in caplog.text
    assert TOKEN not in caplog.text


async def test_first_visit_without_a_token_is_not_logged(
    aiohttp_client: ClientMaker, caplog: pytest.LogCaptureFixture
) -> None:
    client = await dashboard_client(aiohttp_client, TOKEN)
    caplog.set_level(logging.DEBUG, logger="lms_metrics_proxy.api.dashboard")

    response = await client.get("/dashboard")

    assert response.status == 401
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_token_form_keeps_the_filters_escaped(
    aiohttp_client: ClientMaker,
) -> None:
    client = await dashboard_client(aiohttp_client, TOKEN)

    response = await client.get(
        "/dashboard", params={"model": '"><script>x()</script>', "other": "dropped"}
    )
    html = await response.text()

    assert response.status == 401
    assert 'name="model" value="&#34;&gt;&lt;script&gt;x()&lt;/script&gt;"' in html
    assert "<script>x()" not in html
    assert "dropped" not in html


async def test_static_files_need_no_token(aiohttp_client: ClientMaker) -> None:
    client = await dashboard_client(aiohttp_client, TOKEN)

    response = await client.get("/dashboard/static/dashboard.js")

    assert response.status == 200


def test_scripts_never_insert_html() -> None:
    sources = [(STATIC_DIR / name).read_text() for name in ("dashboard.js", "login.js")]

    for source in sources:
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
            assert sink not in source


def test_vendored_chart_library_is_the_documented_version() -> None:
    banner = (STATIC_DIR / "uPlot.iife.min.js").read_text()[:80]
    readme = (STATIC_DIR / "README.txt").read_text()
    license_text = (STATIC_DIR / "uPlot.LICENSE.txt").read_text()

    assert f"(v{UPLOT_VERSION})" in banner
    assert f"uPlot {UPLOT_VERSION}" in readme
    assert "MIT License" in license_text
