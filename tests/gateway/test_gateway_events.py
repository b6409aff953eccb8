"""GET /api/projects/{project}/events: WatchStatus (server streaming) as Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from typing import Any

import grpc
import httpx
from gateway_stack import Stack, start_stack
from support.sse import parse_frames

from cadpipe.v1 import status_pb2

WAIT = 5.0  # seconds any single expected event may take on a loaded machine


class Frames:
    """Reads an open event stream frame by frame, each read bounded."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks = response.aiter_text()
        self._buffer = ""
        self._frames: list[dict[str, str]] = []

    async def next(self) -> dict[str, str]:
        async with asyncio.timeout(WAIT):
            while not self._frames:
                self._buffer += await anext(self._chunks)
                complete, _, self._buffer = self._buffer.rpartition("\n\n")
                if complete:
                    self._frames.extend(parse_frames(complete + "\n\n"))
        return self._frames.pop(0)

    async def data(self) -> dict[str, Any]:
        frame = await self.next()
        while "comment" in frame:
            frame = await self.next()
        assert "data" in frame, frame
        payload = json.loads(frame["data"])
        assert isinstance(payload, dict)
        return payload

    async def rest(self) -> list[dict[str, str]]:
        """Every frame until the server ends the response."""
        out = list(self._frames)
        async with asyncio.timeout(WAIT):
            async for chunk in self._chunks:
                self._buffer += chunk
        out.extend(parse_frames(self._buffer))
        return out


def status(state: str, version: int = 1) -> status_pb2.ProjectStatus:
    return status_pb2.ProjectStatus(project="p", version=version, state=state, formats=["stl"])


async def test_the_status_then_every_change_arrives_as_events_until_the_stream_ends(
    gw: Stack,
) -> None:
    async with gw.http.stream(
        "GET", "/api/projects/p/events", headers={"X-Request-Id": "watch-1"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-request-id"] == "watch-1"
        assert "content-length" not in response.headers
        frames = Frames(response)
        first = await frames.data()
        assert (first["project"], first["version"], first["state"]) == ("p", 1, "processing")
        await gw.status.updates.put(status("completed"))
        second = await frames.data()
        assert (second["state"], second["formats"]) == ("completed", ["stl"])
        await gw.status.updates.put(grpc.StatusCode.OK)  # the backend ends the stream
        assert await frames.rest() == []
    watched = gw.recorder.last("WatchStatus")
    assert watched.request == status_pb2.WatchStatusRequest(project="p")
    assert watched.metadata["x-request-id"] == "watch-1"


async def test_a_failure_mid_stream_is_an_error_event_then_the_end(gw: Stack) -> None:
    async with gw.http.stream("GET", "/api/projects/p/events") as response:
        frames = Frames(response)
        await frames.data()
        await gw.status.updates.put(grpc.StatusCode.UNAVAILABLE)
        rest = await frames.rest()
    assert rest == [
        {"event": "error", "data": '{"code":14,"message":"the watcher gave up","details":[]}'}
    ]


async def test_a_refusal_before_the_first_event_is_an_http_error(gw: Stack) -> None:
    gw.recorder.refuse["../x"] = (grpc.StatusCode.INVALID_ARGUMENT, "project name is not valid")
    response = await gw.http.get("/api/projects/..%2Fx/events")
    assert response.status_code == 400
    assert response.json() == {"code": 3, "message": "project name is not valid", "details": []}

    await gw.watcher.shutdown(0)
    down = await gw.http.get("/api/projects/p/events")
    assert down.status_code == 503
    assert down.json()["code"] == 14


async def test_the_client_going_away_cancels_the_grpc_call(gw: Stack) -> None:
    async with gw.http.stream("GET", "/api/projects/p/events") as response:
        await Frames(response).data()
        assert not gw.status.watch_ended.is_set()
    # the response is closed: the gateway must notice and cancel WatchStatus on the backend
    await asyncio.wait_for(gw.status.watch_ended.wait(), WAIT)


async def test_an_idle_stream_carries_keepalive_comments() -> None:
    async with AsyncExitStack() as stack:
        gw = await start_stack(stack, sse_keepalive_seconds=0.05)
        async with gw.http.stream("GET", "/api/projects/p/events") as response:
            frames = Frames(response)
            await frames.data()
            assert await frames.next() == {"comment": "keepalive"}
            assert await frames.next() == {"comment": "keepalive"}
            await gw.status.updates.put(status("error"))
            assert (await frames.data())["state"] == "error"


async def test_a_backend_silent_past_the_deadline_still_gets_its_stream_opened() -> None:
    async with AsyncExitStack() as stack:
        gw = await start_stack(stack, grpc_deadline_seconds=0.2)
        async with gw.http.stream("GET", "/api/projects/quiet/events") as response:
            assert response.status_code == 200  # headers came without any event
            await gw.status.updates.put(status("completed"))
            assert (await Frames(response).data())["state"] == "completed"


async def test_stopping_the_gateway_ends_open_streams_at_once() -> None:
    # a grace period far longer than the test may take: only ending the streams lets it pass
    stack = AsyncExitStack()
    gw = await start_stack(stack, shutdown_grace_seconds=60)
    async with httpx.AsyncClient(base_url=gw.gateway.url, timeout=WAIT) as client:
        async with client.stream("GET", "/api/projects/p/events") as response:
            frames = Frames(response)
            await frames.data()
            stopping = asyncio.create_task(stack.aclose())
            assert await frames.rest() == []
        await asyncio.wait_for(stopping, WAIT)
    assert gw.status.watch_ended.is_set()
