"""The REST API of cadpipe as the command line uses it (README "REST API"; the routes are declared
in protos/cadpipe/v1/*.proto). Every failure becomes a CliError with its exit code: HTTP errors
from the JSON body {code, message, details}, network errors as "unreachable". 429 is retried
after its Retry-After, a few times.

JSON bodies are proto3 JSON, int64 as strings. The gateway keeps the protos' snake_case field
names; a gateway answering in camelCase (proto3 JSON's default) reads the same, as every body is
normalized to snake_case here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import httpx_sse

from cadpipe_cli import errors
from cadpipe_cli.config import Config

USER_AGENT = "cadpipe-cli/0.1"
REQUEST_TIMEOUT = 30.0
STREAM_READ_TIMEOUT = 60.0
"""The gateway sends a keepalive comment every 15 s: a stream silent for this long is dead."""
MAX_RETRIES_429 = 3
MAX_RETRY_AFTER = 60.0
"""A Retry-After longer than this is not waited for: the command stops and says when to retry."""

Json = dict[str, Any]
RetryNotice = Callable[[float, str], None]


def _seg(value: str | int) -> str:
    return quote(str(value), safe="")


class Api:
    def __init__(
        self,
        config: Config,
        *,
        timeout: float = REQUEST_TIMEOUT,
        on_retry: RetryNotice | None = None,
    ) -> None:
        self.config = config
        self.on_retry = on_retry
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        self.http = httpx.Client(base_url=config.api, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the routes --------------------------------------------------------------------------

    def upload(self, project: str, script: bytes, *, idempotency_key: str = "") -> Json:
        return self.call(
            "POST",
            f"/projects/{_seg(project)}/upload-script",
            content=script,
            headers={
                "Content-Type": "text/x-python",
                "Idempotency-Key": idempotency_key or uuid.uuid4().hex,
            },
        )

    def status(self, project: str, version: int = 0) -> Json:
        return self.call("GET", f"/projects/{_seg(project)}/status", params=_version(version))

    def scripts(self, project: str) -> list[Json]:
        return self._pages(f"/projects/{_seg(project)}/scripts", "scripts")

    def script(self, project: str, version: int) -> Json:
        return self.call("GET", f"/projects/{_seg(project)}/script/{version}")

    def projects(self) -> list[Json]:
        return self._pages("/projects", "projects")

    def outputs(self, project: str, version: int = 0) -> Json:
        return self.call("GET", f"/projects/{_seg(project)}/outputs", params=_version(version))

    def download_url(self, project: str, fmt: str, version: int = 0) -> Json:
        return self.call(
            "GET", f"/projects/{_seg(project)}/download/{_seg(fmt)}", params=_version(version)
        )

    def logs(self, project: str, version: int = 0) -> list[Json]:
        body = self.call("GET", f"/projects/{_seg(project)}/logs", params=_version(version))
        return list(body.get("logs", []))

    def log(self, project: str, name: str) -> Json:
        return self.call("GET", f"/projects/{_seg(project)}/logs/{_seg(name)}")

    def generate(self, project: str, request: Json, *, idempotency_key: str = "") -> Json:
        return self.call(
            "POST",
            f"/projects/{_seg(project)}/generate",
            json=request,
            headers={"Idempotency-Key": idempotency_key or uuid.uuid4().hex},
        )

    def generation(self, project: str, generation_id: str) -> Json:
        return self.call("GET", f"/projects/{_seg(project)}/generations/{_seg(generation_id)}")

    @contextlib.contextmanager
    def events(self, project: str) -> Iterator[Iterator[Json]]:
        """The project's event stream: its current status, then every change, as dicts. Raises
        the API's error when the stream is refused (401, 404, ...)."""
        timeout = httpx.Timeout(REQUEST_TIMEOUT, read=STREAM_READ_TIMEOUT)
        with (
            self._transport_errors(),
            httpx_sse.connect_sse(
                self.http,
                "GET",
                f"/projects/{_seg(project)}/events",
                headers={"Accept": "text/event-stream"},
                timeout=timeout,
            ) as source,
        ):
            response = source.response
            if response.status_code != 200:
                response.read()
                raise error_from(response)
            yield _statuses(source)

    def check_token(self) -> None:
        """Raises when the gateway refuses the token (401/403) or cannot be reached. The door
        checks the token before routing, so any other answer means the token is good, even
        from a server without the route."""
        with self._transport_errors():
            response = self.http.get("/projects", params={"page_size": 1})
        if response.status_code in (401, 403):
            raise error_from(response)

    # -- plumbing ------------------------------------------------------------------------------

    def call(self, method: str, path: str, **kwargs: Any) -> Json:
        """One request; its JSON body, or the error it means. 429 waits for Retry-After (the
        uploads carry an Idempotency-Key, so retrying one never makes two versions)."""
        for attempt in range(MAX_RETRIES_429 + 1):
            with self._transport_errors():
                response = self.http.request(method, path, **kwargs)
            if response.status_code == 429 and attempt < MAX_RETRIES_429:
                wait = retry_after(response)
                if wait is not None and wait <= MAX_RETRY_AFTER:
                    if self.on_retry:
                        self.on_retry(wait, _message(response))
                    time.sleep(wait)
                    continue
            if response.status_code >= 400:
                raise error_from(response)
            return _json(response)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _pages(self, path: str, field: str) -> list[Json]:
        items: list[Json] = []
        token = ""
        while True:
            params = {"page_size": 100, **({"page_token": token} if token else {})}
            body = self.call("GET", path, params=params)
            items.extend(body.get(field, []))
            token = body.get("next_page_token", "")
            if not token:
                return items

    @contextlib.contextmanager
    def _transport_errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.TimeoutException as exc:
            raise errors.CliError(
                f"cadpipe at {self.config.url} did not answer in time ({type(exc).__name__})",
                errors.UNREACHABLE,
            ) from exc
        except httpx.ConnectError as exc:
            raise errors.CliError(
                f"cannot reach cadpipe at {self.config.url}: {_reason(exc)}",
                errors.UNREACHABLE,
                hint="is it running? Set CADPIPE_URL or run `cadpipe login --url URL`",
            ) from exc
        except httpx.TransportError as exc:
            raise errors.CliError(
                f"connection to cadpipe at {self.config.url} failed: {_reason(exc)}",
                errors.UNREACHABLE,
            ) from exc
        except httpx_sse.SSEError as exc:
            raise errors.CliError(
                f"{self.config.url} did not answer with an event stream ({exc}): "
                "is this cadpipe's URL?",
                errors.FAILED,
            ) from exc


def _version(version: int) -> dict[str, int]:
    return {"version": version} if version else {}


def _statuses(source: httpx_sse.EventSource) -> Iterator[Json]:
    for event in source.iter_sse():
        if event.event == "error":
            body = event.json()
            raise errors.ApiError(
                f"the event stream ended with an error: {body.get('message', event.data)}",
                errors.UNREACHABLE,
                http_status=200,
                code=body.get("code"),
            )
        if event.data:
            yield dict(snake_keys(event.json()))


_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def snake_keys(value: Any) -> Any:
    """proto3 JSON's camelCase names as the protos spell them (logKey -> log_key); the keys of
    `metadata` maps are the user's data and stay as they are."""
    if isinstance(value, dict):
        return {
            _CAMEL.sub(lambda m: "_" + m.group(1).lower(), k): (
                v if k == "metadata" else snake_keys(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [snake_keys(v) for v in value]
    return value


def _json(response: httpx.Response) -> Json:
    try:
        body = response.json()
    except ValueError as exc:
        raise errors.CliError(
            f"unexpected answer from {response.request.url} (HTTP {response.status_code}, "
            f"{response.headers.get('content-type', 'no content type')}): is this cadpipe's URL?"
        ) from exc
    if not isinstance(body, dict):
        raise errors.CliError(f"unexpected answer from {response.request.url}: {body!r:.200}")
    return dict(snake_keys(body))


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return response.reason_phrase


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    return text or type(exc).__name__


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (delta-seconds form; the gateway sends whole seconds)."""
    value = response.headers.get("Retry-After", "").strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_from(response: httpx.Response) -> errors.ApiError:
    """The exit code and message an error response means."""
    status = response.status_code
    message = _message(response)
    code: int | None = None
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("code"), int):
            code = body["code"]
    route = f"{response.request.method} {response.request.url.path}"
    if status == 401:
        return errors.ApiError(
            f"authentication failed: {message}",
            errors.AUTH,
            http_status=status,
            code=code,
            hint="run `cadpipe login` or set CADPIPE_TOKEN to a valid API token",
        )
    if status == 403:
        return errors.ApiError(
            f"not allowed: {message}", errors.AUTH, http_status=status, code=code
        )
    if status == 501 or (status == 404 and message.startswith("no route for")) or status == 405:
        return errors.NotSupported(
            f"this cadpipe server does not offer {route} ({status}: {message})",
            errors.FAILED,
            http_status=status,
            code=code,
            hint="the server is older than this command; update cadpipe on the server",
        )
    if status == 404:
        return errors.ApiError(
            f"not found: {message}", errors.FAILED, http_status=status, code=code
        )
    if status == 429:
        wait = retry_after(response)
        when = f"; retry in {wait:.0f} s" if wait is not None else ""
        return errors.ApiError(
            f"rate limited: {message}{when}", errors.FAILED, http_status=status, code=code
        )
    if status == 503:
        return errors.ApiError(
            f"cadpipe is unavailable: {message}", errors.UNREACHABLE, http_status=status, code=code
        )
    if status == 504:
        return errors.ApiError(
            f"cadpipe timed out: {message}", errors.TIMEOUT, http_status=status, code=code
        )
    return errors.ApiError(
        f"{message} (HTTP {status})", errors.FAILED, http_status=status, code=code
    )


def fetch(
    url: str,
    dest: pathlib.Path,
    *,
    sha256: str = "",
    on_bytes: Callable[[int], None] | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> str:
    """Streams a presigned URL (its own credential: no token is sent) to dest, through a
    temporary file renamed once the bytes are complete and their sha256 matches; returns the
    sha256."""
    digest = hashlib.sha256()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = pathlib.Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                with httpx.stream("GET", url, timeout=timeout) as response:
                    if response.status_code != 200:
                        response.read()
                        raise errors.CliError(
                            f"downloading {dest.name} failed: HTTP {response.status_code} "
                            f"from the storage ({response.text.strip()[:200]})"
                        )
                    for chunk in response.iter_bytes(64 * 1024):
                        f.write(chunk)
                        digest.update(chunk)
                        if on_bytes:
                            on_bytes(len(chunk))
            except httpx.TransportError as exc:
                raise errors.CliError(
                    f"downloading {dest.name} failed: {_reason(exc)}", errors.UNREACHABLE
                ) from exc
        got = digest.hexdigest()
        if sha256 and got != sha256.lower():
            raise errors.CliError(
                f"{dest.name}: sha256 mismatch: the API reports {sha256}, the bytes are {got}; "
                "nothing was saved"
            )
        os.replace(tmp, dest)
        return got
    finally:
        tmp.unlink(missing_ok=True)
