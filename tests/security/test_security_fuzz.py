"""Property-based fuzzing from the gateway's own OpenAPI document (schemathesis): every operation
gets generated requests, valid and invalid, from an admin's token (who reaches every route), and
no answer is a 5xx. Bounded: at most MAX_EXAMPLES per operation, derandomized so a run is
repeatable. The event stream is left out: a well-formed request to it opens a stream that does
not end (the bad-input matrix and the event tests cover it)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from routes import ROUTES, route_id
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from security_stack import Secured, start_secured

from cadpipe.devstack import MotoS3
from services.gateway.routes import Route

MAX_EXAMPLES = 40


@pytest.fixture(scope="module")
def live(moto_server: MotoS3) -> Iterator[Secured]:
    """The stack served from a thread of its own: schemathesis' calls are blocking."""
    started: dict[str, Any] = {}
    ready = threading.Event()

    async def serve() -> None:
        stop = asyncio.Event()
        try:
            async with start_secured(moto_server) as secured:
                started.update(secured=secured, stop=stop, loop=asyncio.get_running_loop())
                ready.set()
                await stop.wait()
        except BaseException as error:
            started["error"] = error
            ready.set()
            raise

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="fuzzed-stack")
    thread.start()
    assert ready.wait(30), "the stack did not start within 30 s"
    if "error" in started:
        raise started["error"]
    try:
        yield started["secured"]
    finally:
        started["loop"].call_soon_threadsafe(started["stop"].set)
        thread.join(30)


@pytest.fixture(scope="module")
def api(live: Secured) -> Any:
    return schemathesis.openapi.from_url(f"{live.url}/openapi.json")


FUZZED = [r for r in ROUTES if not r.server_streaming]


@pytest.mark.parametrize("route", FUZZED, ids=route_id)
def test_generated_requests_never_get_a_server_error(
    route: Route, api: Any, live: Secured
) -> None:
    operation = api[route.path.openapi_path][route.http_method]
    # schema-valid requests and requests that break the schema on purpose
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    headers = live.auth("root")

    @given(case=cases)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,  # a noisy machine; the run is bounded by the example count
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def no_server_error(case: Any) -> None:
        response = case.call(headers={**(case.headers or {}), **headers}, timeout=10)
        case.validate_response(
            response,
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ],
        )

    no_server_error()
