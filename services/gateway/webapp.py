"""The web app and the API documents as static files (docs/webapp.md).

    /                 the single-page app (index.html); any other GET outside /api that no route
                      of the protos serves answers index.html too, so the app's own URLs
                      (/projects/p) can be reloaded and shared
    /static/...       the app's modules, its stylesheet and the vendored three.js and Swagger UI
    /docs             Swagger UI, from /static (no CDN)
    /api/projects/{project}/files/{format}
                      the bytes of one output file (?version=N), for the 3D preview: the
                      ArtifactService hands out a presigned URL for the caller (ownership checked
                      there, as for every route), and the gateway reads it and streams it on, so
                      the browser reads the model from its own origin

Every answer from here carries a Content-Security-Policy that allows this origin only (the
import map, the one inline script, by its hash) and a Cache-Control: index.html and /docs are
revalidated on every load, the static files for a short while.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import httpx
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from cadpipe.v1 import artifacts_pb2

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"
STATIC_PREFIX = "/static"
_IMPORT_MAP = re.compile(r'<script type="importmap">(.*?)</script>', re.DOTALL)
_CHUNK = 256 * 1024


def content_security_policy(script_hashes: list[str]) -> str:
    scripts = " ".join(["'self'", *(f"'sha256-{h}'" for h in script_hashes)])
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src {scripts}",
            # Swagger UI sets style attributes; nothing of another origin is allowed either way
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "connect-src 'self'",
            "worker-src 'self' blob:",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ]
    )


def inline_script_hashes(html: str) -> list[str]:
    """CSP hashes of the page's import map (an inline script by necessity)."""
    return [
        base64.b64encode(hashlib.sha256(m.group(1).encode()).digest()).decode()
        for m in _IMPORT_MAP.finditer(html)
    ]


@dataclass(frozen=True)
class WebApp:
    directory: Path = WEB_DIR

    def __post_init__(self) -> None:
        index = (self.directory / "index.html").read_text(encoding="utf-8")
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_csp", content_security_policy(inline_script_hashes(index)))

    @property
    def csp(self) -> str:
        return str(object.__getattribute__(self, "_csp"))

    def headers(self, cache: str) -> dict[str, str]:
        return {
            "Content-Security-Policy": self.csp,
            "Cache-Control": cache,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }

    def index(self) -> Response:
        html = str(object.__getattribute__(self, "_index"))
        return HTMLResponse(html, headers=self.headers("no-cache"))

    def docs(self) -> Response:
        return HTMLResponse(SWAGGER_UI, headers=self.headers("no-cache"))

    def static(self) -> StaticAssets:
        return StaticAssets(self)


class StaticAssets:
    """StaticFiles with this app's headers; never index.html for a missing file (a 404)."""

    def __init__(self, web: WebApp) -> None:
        self._files = StaticFiles(directory=web.directory, follow_symlink=False)
        self._headers = web.headers("public, max-age=300")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in self._headers.items()]
                message["headers"] = headers
            await send(message)

        await self._files(scope, receive, with_headers)


def is_api_path(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def is_app_path(path: str) -> bool:
    """A GET the app answers with index.html: anything outside /api and /static."""
    return not (
        path == "/api"
        or path.startswith("/api/")
        or path.startswith(STATIC_PREFIX + "/")
        or path == STATIC_PREFIX
    )


def download_request(
    project: str, file_format: str, version: int
) -> artifacts_pb2.GetDownloadUrlRequest:
    return artifacts_pb2.GetDownloadUrlRequest(
        project=project, format=file_format, version=version
    )


async def stream_url(url: str, file_name: str, *, immutable: bool) -> Response:
    """Reads a presigned URL and streams its bytes on, with their length (for the browser's
    progress) and a name."""
    client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=120.0))
    try:
        upstream = await client.send(client.build_request("GET", url), stream=True)
    except httpx.HTTPError:
        await client.aclose()
        raise
    if upstream.status_code != 200:
        await upstream.aclose()
        await client.aclose()
        raise httpx.HTTPStatusError(
            f"S3 answered {upstream.status_code}", request=upstream.request, response=upstream
        )

    async def body() -> object:
        try:
            async for chunk in upstream.aiter_bytes(_CHUNK):
                yield chunk
        finally:
            await upstream.aclose()
            await client.aclose()

    headers = {
        "Cache-Control": "private, max-age=3600" if immutable else "private, no-cache",
        "Content-Disposition": f'inline; filename="{_safe_name(file_name)}"',
        "X-Content-Type-Options": "nosniff",
    }
    length = upstream.headers.get("content-length")
    if length is not None:
        headers["Content-Length"] = length
    return StreamingResponse(
        body(),  # type: ignore[arg-type]
        media_type="application/octet-stream",
        headers=headers,
    )


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "model"


SWAGGER_UI = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>cadpipe API</title>
  <link rel="stylesheet" href="/static/vendor/swagger-ui-dist/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui" data-openapi="/openapi.json"></div>
  <script src="/static/vendor/swagger-ui-dist/swagger-ui-bundle.js"></script>
  <script src="/static/docs.js"></script>
</body>
</html>
"""
