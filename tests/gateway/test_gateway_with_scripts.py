"""The real script service (services/scripts/bootstrap.py, on moto's S3 server, a real
nats-server and mongomock) behind the real gateway: what a REST client sees.

Documented statuses for bad input (README, REST API): a project name the script service refuses
is 400 (its message says why); a path that stops being a project route once the client's HTTP
library resolves `..` is 404; a script over the service's limit is 400, a body over the
gateway's limit 413. Nothing refused is stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from cadpipe.adapters import s3
from cadpipe.settings import MongoSettings, NatsSettings, S3Settings
from services.gateway import bootstrap as gateway
from services.gateway.settings import Settings as GatewaySettings
from services.scripts import bootstrap as scripts
from services.scripts.settings import Settings as ScriptsSettings

MIB = 1024 * 1024


@dataclass
class Api:
    http: httpx.AsyncClient
    bucket: s3.Bucket
    max_script_bytes: int

    def listing(self) -> list[tuple[str, str]]:
        return [(o.key, o.etag) for o in self.bucket.list("")]


@pytest.fixture
async def api(
    bucket: s3.Bucket,
    s3_settings: S3Settings,
    mongo_settings: MongoSettings,
    nats_settings: NatsSettings,
) -> AsyncIterator[Api]:
    script_settings = ScriptsSettings(
        **s3_settings.model_dump(),
        **mongo_settings.model_dump(),
        nats_url=nats_settings.nats_url,
        grpc_host="127.0.0.1",
        grpc_port=0,
        shutdown_grace_seconds=1.0,
    )
    async with scripts.start(script_settings) as service:
        settings = GatewaySettings(
            http_host="127.0.0.1",
            http_port=0,
            scripts_addr=f"127.0.0.1:{service.port}",
            watcher_addr="",  # no watcher in this test: its routes answer 503
            shutdown_grace_seconds=1.0,
            auth_mode="none",  # authentication has its own tests (tests/security)
        )
        async with (
            gateway.start(settings) as running,
            httpx.AsyncClient(base_url=running.url, timeout=20) as http,
        ):
            yield Api(http, bucket, script_settings.max_script_bytes)


SCRIPT = "import FreeCAD\nbox = 1\n"


async def test_upload_list_get_round_trip_through_rest(api: Api, unique: str) -> None:
    project = f"rest-{unique}"
    first = await api.http.post(
        f"/api/projects/{project}/upload-script", json={"script": SCRIPT, "metadata": {"by": "llm"}}
    )
    assert first.status_code == 200, first.text
    v1 = first.json()["script"]
    assert (v1["project"], v1["version"], v1["key"]) == (
        project,
        1,
        f"input/{project}/{project}_v1.py",
    )
    assert v1["sha256"] == hashlib.sha256(SCRIPT.encode()).hexdigest()
    assert v1["metadata"] == {"by": "llm"}

    raw = b"# second\nimport Part\n"
    second = await api.http.post(
        f"/api/projects/{project}/upload-script",
        content=raw,
        headers={
            "Content-Type": "text/x-python",
            "Idempotency-Key": f"k-{unique}",
            "X-Cadpipe-Meta-Tool": "curl",
        },
    )
    assert second.status_code == 200, second.text
    assert second.json()["script"]["version"] == 2
    assert second.json()["script"]["metadata"] == {"tool": "curl"}
    replay = await api.http.post(
        f"/api/projects/{project}/upload-script",
        content=raw,
        headers={
            "Content-Type": "text/x-python",
            "Idempotency-Key": f"k-{unique}",
            "X-Cadpipe-Meta-Tool": "curl",
        },
    )
    assert replay.status_code == 200, replay.text
    assert (replay.json()["script"]["version"], replay.json()["replayed"]) == (2, True)

    page = await api.http.get(f"/api/projects/{project}/scripts?page_size=1")
    assert page.status_code == 200
    assert [s["version"] for s in page.json()["scripts"]] == [1]
    token = page.json()["next_page_token"]
    assert token
    rest = await api.http.get(
        f"/api/projects/{project}/scripts", params={"page_size": 1, "page_token": token}
    )
    assert [s["version"] for s in rest.json()["scripts"]] == [2]

    got = await api.http.get(f"/api/projects/{project}/script/2")
    assert got.status_code == 200
    assert got.json()["content"] == raw.decode()
    assert got.json()["script"]["sha256"] == hashlib.sha256(raw).hexdigest()
    stored = api.bucket.get(f"input/{project}/{project}_v2.py")
    assert stored is not None
    assert stored.body == raw


async def test_bad_input_through_rest_gets_its_status_and_changes_nothing(
    api: Api, unique: str
) -> None:
    project = f"bad-{unique}"
    ok = await api.http.post(f"/api/projects/{project}/upload-script", json={"script": SCRIPT})
    assert ok.status_code == 200, ok.text
    before = api.listing()
    upload = f"/api/projects/{project}/upload-script"
    oversize = "x = 1\n" + "#" * api.max_script_bytes

    cases: list[tuple[str, str, dict[str, object], int, str]] = [
        # project names, percent-encoded so they reach the service as one path segment
        ("POST", "/api/projects/..%2Fx/upload-script", {"json": {"script": SCRIPT}}, 400, "ASCII"),
        ("POST", "/api/projects/a%2Fb/upload-script", {"json": {"script": SCRIPT}}, 400, "ASCII"),
        ("POST", "/api/projects//upload-script", {"json": {"script": SCRIPT}}, 400, "empty"),
        (
            "POST",
            f"/api/projects/{'p' * 65}/upload-script",
            {"json": {"script": SCRIPT}},
            400,
            "at most 64",
        ),
        (
            "POST",
            "/api/projects/%D0%B0bc/upload-script",
            {"json": {"script": SCRIPT}},
            400,
            "ASCII",
        ),  # Cyrillic a
        (
            "POST",
            "/api/projects/abc%E2%80%8B/upload-script",
            {"json": {"script": SCRIPT}},
            400,
            "ASCII",
        ),  # zero width
        # unencoded, the client resolves '..' itself: no project route is left
        ("POST", "/api/projects/../x/upload-script", {"json": {"script": SCRIPT}}, 404, "no route"),
        ("GET", "/api/projects/..%2Fx/scripts", {}, 400, "ASCII"),
        ("GET", "/api/projects/a%2Fb/script/1", {}, 400, "ASCII"),
        # scripts
        ("POST", upload, {"json": {"script": oversize}}, 400, f"at most {api.max_script_bytes}"),
        (
            "POST",
            upload,
            {"content": b"x" * (3 * MIB), "headers": {"Content-Type": "text/x-python"}},
            413,
            "larger than",
        ),
        (
            "POST",
            upload,
            {"content": b"x = '\xff'\n", "headers": {"Content-Type": "text/x-python"}},
            400,
            "not UTF-8",
        ),
        ("POST", upload, {"json": {"script": "x = 1\ndef f(:\n"}}, 400, "line 2, column 7"),
        ("POST", upload, {"json": {"script": "   "}}, 400, "empty"),
        ("POST", upload, {"json": {}}, 400, "missing"),
        (
            "POST",
            upload,
            {"content": b"{", "headers": {"Content-Type": "application/json"}},
            400,
            "not valid JSON",
        ),
        # versions
        ("GET", f"/api/projects/{project}/script/2", {}, 404, "no version 2"),
        ("GET", f"/api/projects/{project}/script/abc", {}, 400, "must be an integer"),
        ("GET", f"/api/projects/{project}/script/1.0", {}, 400, "must be an integer"),
        ("GET", f"/api/projects/{project}/script/-1", {}, 400, "1 or more"),
        ("GET", f"/api/projects/{project}/script/0", {}, 400, "1 or more"),
        ("GET", f"/api/projects/{project}/script/99999999999", {}, 400, "out of range"),
        ("GET", f"/api/projects/{project}/scripts?page_size=-5", {}, 400, "page_size"),
        ("GET", f"/api/projects/{project}/scripts?page_token=nope", {}, 400, "page_token"),
    ]
    for method, url, kwargs, status, says in cases:
        response = await api.http.request(method, url, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == status, (url, response.status_code, response.text[:300])
        body = response.json()
        assert set(body) == {"code", "message", "details"}, url
        assert says in body["message"], (url, body["message"])
    assert api.listing() == before


async def test_a_syntax_error_names_the_field_in_the_details(api: Api, unique: str) -> None:
    response = await api.http.post(
        f"/api/projects/syn-{unique}/upload-script", json={"script": "def f(:\n"}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 3
    assert "line 1, column 7" in body["message"]
    assert body["details"][0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert body["details"][0]["field_violations"][0]["field"] == "script"


async def test_readyz_reports_the_script_service(api: Api) -> None:
    response = await api.http.get("/readyz")
    assert response.status_code == 200, response.text
    assert [(b["service"], b["status"]) for b in response.json()["backends"]] == [
        ("cadpipe.v1.ScriptService", "SERVING")
    ]
