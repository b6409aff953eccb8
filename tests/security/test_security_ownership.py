"""Authorization: a project belongs to the identity whose first upload created it; anyone else
gets exactly the answer for a project that does not exist, from the gateway and from the gRPC
services called directly; the services believe the caller named in metadata only from a peer
holding the service token."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from routes import example, owned_routes, route_id
from security_stack import SCRIPT, Secured, assert_unchanged, finish_version, upload
from support.polling import wait_until

from cadpipe import layout, messaging
from cadpipe.callers import ADMIN_KEY, IDENTITY_KEY, SERVICE_TOKEN_KEY
from cadpipe.settings import NatsSettings
from cadpipe.v1 import events_pb2, scripts_pb2, scripts_pb2_grpc, status_pb2, status_pb2_grpc
from services.generator.domain import Generation
from services.generator.mongo_generations import to_document
from services.scripts.bootstrap import run_reindex
from services.scripts.settings import Settings as ScriptsSettings

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _completed(secured: Secured, project: str) -> None:
    """Alice's project with version 1 finished, so that every read has something to show."""
    async with secured.client("alice") as http:
        assert (await upload(http, project)).status_code == 200
        finish_version(secured.bucket, project)

        async def completed() -> bool:
            status = await http.get(f"/api/projects/{project}/status")
            return status.json().get("state") == "completed"

        await wait_until(completed)
    # and a generation of alice's, at the id routes.py names
    now = dt.datetime.now(dt.UTC)
    generation = Generation(
        id=f"{project}-generation",
        project=project,
        prompt="a box",
        caller="alice",
        caller_admin=False,
        created_at=now,
        deadline_at=now,
        state="succeeded",
        sequence=1,
    )
    await asyncio.to_thread(secured.db["generations"].insert_one, to_document(generation))


async def _answer(http: Any, request: Any) -> tuple[int, Any]:
    if request.route.server_streaming:
        async with http.stream(request.method, request.path) as stream:
            body = json.loads(await stream.aread()) if stream.status_code != 200 else None
            return stream.status_code, body
    response = await http.request(request.method, request.path, json=request.json)
    return response.status_code, response.json()


# reads: an upload to a project that does not exist creates it (uploads are tested below)
@pytest.mark.parametrize(
    "route", [r for r in owned_routes() if r.http_method == "GET"], ids=route_id
)
async def test_another_identitys_project_looks_like_one_that_does_not_exist(
    secured: Secured, route: Any, project: str
) -> None:
    await _completed(secured, project)
    nowhere = f"{project}-none"
    mine = example(route, project)
    async with secured.client("alice") as alice:
        status, _ = await _answer(alice, mine)
        assert status == 200, f"the owner reads {mine.path}: {status}"
    before = await secured.settled_snapshot()
    async with secured.client("bob") as bob:
        foreign = await _answer(bob, mine)
        missing = await _answer(bob, example(route, nowhere))
    assert foreign[0] == 404
    assert foreign[1]["message"] == f"project {project!r} not found"
    # the same body with the name swapped: nothing tells "someone else's" from "no such project"
    assert json.dumps(missing[1]).replace(nowhere, project) == json.dumps(foreign[1])
    assert missing[0] == 404
    assert_unchanged(before, secured.snapshot())


async def test_an_admin_reads_every_project(secured: Secured, project: str) -> None:
    await _completed(secured, project)
    async with secured.client("root") as root:
        for route in owned_routes():
            request = example(route, project)
            if route.http_method != "GET":
                continue
            status, _ = await _answer(root, request)
            assert status == 200, route_id(route)


async def test_an_upload_to_another_identitys_project_stores_nothing(
    secured: Secured, project: str
) -> None:
    async with secured.client("alice") as alice:
        assert (await upload(alice, project)).status_code == 200
    before = await secured.settled_snapshot()
    async with secured.client("bob") as bob:
        refused = await upload(bob, project)
        keyed = await bob.post(
            f"/api/projects/{project}/upload-script",
            json={"script": SCRIPT},
            headers={"Idempotency-Key": "k1"},
        )
    assert refused.status_code == keyed.status_code == 404
    assert refused.json()["message"] == f"project {project!r} not found"
    assert_unchanged(before, secured.snapshot())


async def test_of_two_identities_creating_one_project_at_once_exactly_one_owns_it(
    secured: Secured, project: str
) -> None:
    async with secured.client("alice") as alice, secured.client("bob") as bob:
        attempts = [upload(alice, project) for _ in range(8)]
        attempts += [upload(bob, project) for _ in range(8)]
        responses = await asyncio.gather(*attempts)
    by_owner = {"alice": responses[:8], "bob": responses[8:]}
    winners = [who for who, answers in by_owner.items() if answers[0].status_code == 200]
    assert len(winners) == 1, {w: [r.status_code for r in a] for w, a in by_owner.items()}
    winner = winners[0]
    loser = "bob" if winner == "alice" else "alice"
    assert all(r.status_code == 200 for r in by_owner[winner])
    assert all(r.status_code == 404 for r in by_owner[loser])
    assert sorted(r.json()["script"]["version"] for r in by_owner[winner]) == list(range(1, 9))
    # S3 holds the winner's eight versions, each saying whose they are
    keys = [o.key for o in secured.bucket.list(layout.project_input_prefix(project))]
    assert len(keys) == 8
    for key in keys:
        info = secured.bucket.head(key)
        assert info is not None and info.metadata["owner"] == winner


async def test_the_owner_travels_with_the_uploaded_event(secured: Secured, project: str) -> None:
    nc = await messaging.connect(
        NatsSettings(nats_url=secured.nats_url), name="security-test"
    )
    try:
        events: asyncio.Queue[bytes] = asyncio.Queue()

        async def got(msg: Any) -> None:
            await events.put(msg.data)

        await nc.subscribe(messaging.uploaded_subject(project), cb=got)
        async with secured.client("alice") as alice:
            assert (await upload(alice, project)).status_code == 200
        event = messaging.decode(await asyncio.wait_for(events.get(), 5), events_pb2.ScriptUploaded)
        assert (event.project, event.owner) == (project, "alice")
        job = await wait_until(
            lambda: asyncio.to_thread(secured.db["jobs"].find_one, {"project": project})
        )
        assert job["project_owner"] == "alice"
    finally:
        await nc.close()


async def test_reindex_rebuilds_ownership_from_s3(secured: Secured, project: str) -> None:
    async with secured.client("alice") as alice:
        assert (await upload(alice, project)).status_code == 200
    # MongoDB loses the project document: S3's first version still names the owner
    secured.db["projects"].delete_one({"_id": project})
    async with secured.client("bob") as bob:
        assert (await upload(bob, project)).status_code == 404
        assert (await bob.get(f"/api/projects/{project}/scripts")).status_code == 404
    assert secured.db["projects"].find_one({"_id": project})["owner"] == "alice"

    secured.db["projects"].update_one({"_id": project}, {"$unset": {"owner": ""}})
    settings = ScriptsSettings.model_validate(
        {
            **secured.s3_settings,
            "mongodb_uri": secured.mongodb_uri,
            "mongodb_database": secured.db.name,
        }
    )
    await run_reindex(settings, project)
    assert secured.db["projects"].find_one({"_id": project})["owner"] == "alice"
    async with secured.client("alice") as alice:
        listed = await alice.get(f"/api/projects/{project}/scripts")
        assert [s["version"] for s in listed.json()["scripts"]] == [1]


async def test_services_believe_identity_metadata_only_with_the_service_token(
    secured: Secured, project: str
) -> None:
    async with secured.client("alice") as alice:
        assert (await upload(alice, project)).status_code == 200
    request = scripts_pb2.ListScriptsRequest(project=project)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.scripts_port}") as channel:
        stub = scripts_pb2_grpc.ScriptServiceStub(channel)
        cases = {
            "nothing": (),
            "an identity, no token": ((IDENTITY_KEY, "alice"), (ADMIN_KEY, "true")),
            "a wrong token": ((SERVICE_TOKEN_KEY, "x" * 43), (IDENTITY_KEY, "alice")),
            "the token, no identity": ((SERVICE_TOKEN_KEY, secured.service_token),),
            "the token twice": (
                (SERVICE_TOKEN_KEY, secured.service_token),
                (SERVICE_TOKEN_KEY, secured.service_token),
                (IDENTITY_KEY, "alice"),
            ),
            "a malformed identity": (
                (SERVICE_TOKEN_KEY, secured.service_token),
                (IDENTITY_KEY, "al ice"),
            ),
        }
        for case, metadata in cases.items():
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ListScripts(request, metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, case
            assert secured.service_token not in (refused.value.details() or ""), case
        trusted = ((SERVICE_TOKEN_KEY, secured.service_token),)
        mine = await stub.ListScripts(request, metadata=(*trusted, (IDENTITY_KEY, "alice")))
        assert [s.version for s in mine.scripts] == [1]
        with pytest.raises(grpc.aio.AioRpcError) as foreign:
            await stub.ListScripts(request, metadata=(*trusted, (IDENTITY_KEY, "bob")))
        assert foreign.value.code() == grpc.StatusCode.NOT_FOUND
        admin = await stub.ListScripts(
            request, metadata=(*trusted, (IDENTITY_KEY, "root"), (ADMIN_KEY, "true"))
        )
        assert len(admin.scripts) == 1
        # probes carry no metadata: health stays open
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.watcher_port}") as channel:
        status = status_pb2_grpc.StatusServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await status.GetStatus(
                status_pb2.GetStatusRequest(project=project), metadata=((IDENTITY_KEY, "alice"),)
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as foreign:
            await status.GetStatus(
                status_pb2.GetStatusRequest(project=project),
                metadata=(*trusted, (IDENTITY_KEY, "bob")),
            )
        assert foreign.value.code() == grpc.StatusCode.NOT_FOUND
        stream = status.WatchStatus(
            status_pb2.WatchStatusRequest(project=project),
            metadata=(*trusted, (IDENTITY_KEY, "bob")),
        )
        with pytest.raises(grpc.aio.AioRpcError) as watched:
            await stream.read()
        assert watched.value.code() == grpc.StatusCode.NOT_FOUND


async def test_after_an_index_loss_the_owner_keeps_every_read(
    secured: Secured, project: str
) -> None:
    """The projects and versions documents are gone (MongoDB restored from an old backup): S3
    still names the owner, for the watcher as for the script service, and the first listing
    re-indexes the project with its owner."""
    await _completed(secured, project)
    secured.db["projects"].delete_one({"_id": project})
    secured.db["versions"].delete_many({"project": project})
    async with secured.client("alice") as alice, secured.client("bob") as bob:
        status = await alice.get(f"/api/projects/{project}/status")
        assert status.status_code == 200, status.text
        listed = await alice.get(f"/api/projects/{project}/scripts")
        assert [s["version"] for s in listed.json()["scripts"]] == [1]
        assert secured.db["projects"].find_one({"_id": project})["owner"] == "alice"
        for path in ("status", "scripts", "script/1", "outputs"):
            mine = await alice.get(f"/api/projects/{project}/{path}")
            assert mine.status_code == 200, (path, mine.text)
            assert (await bob.get(f"/api/projects/{project}/{path}")).status_code == 404, path
