"""The dashboard: the page at `/dashboard` and its files at `/dashboard/static/`.

The page is a Jinja2 template rendered on the server; it holds no data. Its
script (`static/dashboard.js`) reads the `/stats/*` JSON endpoints from the
same origin, so this module never queries the store. Charts use uPlot
(UPLOT_VERSION), vendored in `static/` with its license: no CDN, because users
are often offline.

With `STATS_TOKEN` set, the page needs the token too, either as
`Authorization: Bearer <token>` or as `?token=<token>`. A browser uses the
query form (the page without it shows a small form that submits it); the
page's script then keeps the token in `sessionStorage`, removes it from the
address bar, and sends it as a Bearer header on every fetch. The static files
are public: they are the same for everyone and carry no data.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from pathlib import Path

import jinja2
from aiohttp import web

from lms_metrics_proxy import __version__
from lms_metrics_proxy.config import Settings

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATE_DIR = HERE / "templates"
UPLOT_VERSION = "1.6.32"
REFRESH_SECONDS = 10
# Filters the page keeps in its address; carried through the token form.
FILTER_PARAMETERS = ("range", "since", "until", "model", "client", "bucket")

# No inline script or style anywhere, and Trusted Types on top: even a stray
# `innerHTML = data` in our script (or the vendored one) throws instead of
# parsing database text as HTML. uPlot styles through the CSSOM, which
# `style-src 'self'` allows.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The address may hold the token for a moment; never keep the page.
    "Cache-Control": "no-store",
}
STATIC_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".txt": "text/plain",
}
# A year: every URL the page links carries the file's content hash
# (`?v=...`), so a new release is fetched anew, never a stale copy.
STATIC_CACHE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class StaticFile:
    """One file of `static/`, read once at start-up."""

    body: bytes
    content_type: str
    digest: str


def load_static(folder: Path = STATIC_DIR) -> dict[str, StaticFile]:
    """Read every servable file directly in `folder`, keyed by its name.

    Only these names are ever served, so no request path can reach a file
    outside the folder (or a file added to it later, or one of another type).
    """
    files: dict[str, StaticFile] = {}
    for path in sorted(folder.iterdir()):
        content_type = STATIC_TYPES.get(path.suffix)
        if content_type is None or not path.is_file() or path.is_symlink():
            continue
        body = path.read_bytes()
        digest = hashlib.sha256(body).hexdigest()[:12]
        files[path.name] = StaticFile(body, content_type, digest)
    return files


def is_authorised(request: web.Request, token: str | None) -> bool:
    """Say whether the request carries the stats token (always, without one)."""
    if token is None:
        return True
    expected = token.encode()
    scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
    candidates = [request.query.get("token", "")]
    if scheme.lower() == "bearer":
        candidates.append(supplied.strip())
    # Header text may hold undecodable bytes (kept as surrogates): compare bytes.
    # Check every candidate, so the time taken does not say which one failed.
    results = [
        hmac.compare_digest(c.encode("utf-8", "surrogateescape"), expected)
        for c in candidates
    ]
    return any(results)


class Dashboard:
    """The request handlers of the dashboard, with what they read at start-up."""

    def __init__(self, settings: Settings) -> None:
        self.token = settings.stats_token
        self.files = load_static()
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.urls = {
            name: f"/dashboard/static/{name}?v={file.digest}"
            for name, file in self.files.items()
        }

    async def page(self, request: web.Request) -> web.Response:
        """Serve the dashboard page, or the token form with 401."""
        if not is_authorised(request, self.token):
            return self._refuse(request)
        html = self._render(
            "dashboard.html",
            refresh_seconds=REFRESH_SECONDS,
            token_required=self.token is not None,
        )
        return _html(html, 200)

    async def static(self, request: web.Request) -> web.Response:
        """Serve one file of `static/` by name, with a long cache lifetime."""
        file = self.files.get(request.match_info["name"])
        if file is None:
            raise web.HTTPNotFound(text="No such dashboard file")
        response = web.Response(
            body=file.body, content_type=file.content_type, charset="utf-8"
        )
        response.headers["Cache-Control"] = STATIC_CACHE
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    async def redirect(self, request: web.Request) -> web.Response:
        """Send `/dashboard/` to `/dashboard`, keeping the query string."""
        query = f"?{request.query_string}" if request.query_string else ""
        raise web.HTTPPermanentRedirect(f"/dashboard{query}")

    def _refuse(self, request: web.Request) -> web.Response:
        rejected = "token" in request.query or "Authorization" in request.headers
        if rejected:
            # A wrong token, not a first visit: someone may be guessing.
            logger.warning("Dashboard refused a wrong token remote=%s", request.remote)
        kept = [(k, v) for k, v in request.query.items() if k in FILTER_PARAMETERS]
        html = self._render("login.html", rejected=rejected, kept=kept)
        response = _html(html, 401)
        response.headers["WWW-Authenticate"] = 'Bearer realm="lms-metrics-proxy"'
        return response

    def _render(self, name: str, **context: object) -> str:
        template = self.templates.get_template(name)
        return template.render(
            static=self.urls,
            version=__version__,
            uplot_version=UPLOT_VERSION,
            **context,
        )


def _html(text: str, status: int) -> web.Response:
    response = web.Response(
        text=text, status=status, content_type="text/html", charset="utf-8"
    )
    response.headers.update(PAGE_HEADERS)
    return response


def setup_dashboard(app: web.Application, settings: Settings) -> None:
    """Add the dashboard's routes; call it before the relay's catch-all route."""
    dashboard = Dashboard(settings)
    app.router.add_get("/dashboard", dashboard.page)
    app.router.add_get("/dashboard/", dashboard.redirect)
    app.router.add_get("/dashboard/static/{name}", dashboard.static)
    logger.debug("Dashboard at /dashboard with %d static files", len(dashboard.files))
