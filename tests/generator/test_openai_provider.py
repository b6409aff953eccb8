"""The openai script writer against a real HTTP server on 127.0.0.1 that speaks the Chat
Completions protocol (fake_openai.py): answers, streams, retries, timeouts, and every failure's
message."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from fake_openai import FakeOpenAI, Reply, stream_chunks

from services.generator import ports
from services.generator.openai_provider import OpenAIWriter

pytestmark = pytest.mark.timeout(30)

KEY = "sk-test-d0-not-leak-4f1c9a"
SCRIPT = """\
import os
import FreeCAD
import Part

doc = FreeCAD.newDocument("Model")
feature = doc.addObject("Part::Feature", "Body")
feature.Shape = Part.makeBox(20, 20, 10)
doc.recompute()
doc.saveAs(os.path.join(os.environ["FREECAD_OUTPUT"], "MyHeadlessModel.FCStd"))
"""
ANSWER = f"Here is the part.\n\n```python\n{SCRIPT}```\n"
REQUEST = ports.ScriptRequest(prompt="a 20 x 20 x 10 mm box", freecad_version="0.20.2")


@pytest.fixture
def api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


class Sleeps:
    """The writer's sleep: records the delays, waits for none."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


MakeWriter = Callable[..., OpenAIWriter]


@pytest.fixture
async def make_writer(api: FakeOpenAI, sleeps: Sleeps) -> AsyncIterator[MakeWriter]:
    made: list[OpenAIWriter] = []

    def make(**overrides: Any) -> OpenAIWriter:
        options: dict[str, Any] = {
            "base_url": api.base_url,
            "model": "gpt-test",
            "api_key": KEY,
            "timeout_seconds": 5.0,
            "max_retries": 2,
            "sleep": sleeps,
            "rng": lambda: 0.5,
        } | overrides
        writer = OpenAIWriter(**options)
        made.append(writer)
        return writer

    yield make
    for writer in made:
        await writer.aclose()


async def provider_error(writer: OpenAIWriter, request: ports.ScriptRequest = REQUEST) -> str:
    with pytest.raises(ports.ProviderError) as caught:
        await writer.write(request)
    return caught.value.message


# --- answers ----------------------------------------------------------------------------------


async def test_a_plain_answer_becomes_a_completion(api: FakeOpenAI, make_writer: MakeWriter):
    api.add(
        Reply(
            body=Reply.answer(
                ANSWER, model="gpt-test-2025", prompt_tokens=321, completion_tokens=123
            ).body,
            delay_seconds=0.05,
        )
    )
    completion = await make_writer().write(REQUEST)

    assert completion.script == SCRIPT
    assert completion.provider == "openai"
    assert completion.model == "gpt-test-2025"
    assert (completion.tokens_in, completion.tokens_out) == (321, 123)
    assert completion.cost_usd == 0.0
    assert completion.latency_seconds >= 0.05
    assert completion.notes["attempts"] == "1"
    assert completion.notes["finish_reason"] == "stop"

    [sent] = api.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    body = sent.json
    assert body["model"] == "gpt-test"
    assert "stream" not in body
    system, user = body["messages"]
    assert system["role"] == "system" and "FreeCAD 0.20.2" in system["content"]
    assert "FREECAD_OUTPUT" in system["content"]
    assert user["role"] == "user" and "a 20 x 20 x 10 mm box" in user["content"]


async def test_without_a_key_no_authorization_is_sent(api: FakeOpenAI, make_writer: MakeWriter):
    api.add(Reply.answer(ANSWER))
    await make_writer(api_key=None).write(REQUEST)
    assert "authorization" not in api.requests[0].headers


async def test_a_streamed_answer_is_assembled_with_its_usage(
    api: FakeOpenAI, make_writer: MakeWriter
):
    api.add(Reply.streamed(ANSWER, pieces=7, prompt_tokens=40, completion_tokens=90))
    completion = await make_writer(stream=True).write(REQUEST)

    assert completion.script == SCRIPT
    assert (completion.tokens_in, completion.tokens_out) == (40, 90)
    assert completion.model == "fake-model"
    assert completion.notes["streamed"] == "true"
    body = api.requests[0].json
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_a_stream_with_comments_and_no_usage_still_answers(
    api: FakeOpenAI, make_writer: MakeWriter
):
    chunks = [": OPENROUTER PROCESSING\n\n", *stream_chunks(ANSWER, usage=False)]
    api.add(Reply(chunks=chunks))
    completion = await make_writer(stream=True).write(REQUEST)
    assert completion.script == SCRIPT
    assert (completion.tokens_in, completion.tokens_out) == (0, 0)


async def test_a_server_that_ignores_stream_and_answers_json_is_understood(
    api: FakeOpenAI, make_writer: MakeWriter
):
    api.add(Reply.answer(ANSWER))
    assert (await make_writer(stream=True).write(REQUEST)).script == SCRIPT


async def test_openrouter_usage_cost_is_recorded(api: FakeOpenAI, make_writer: MakeWriter):
    api.add(Reply.answer(ANSWER, cost=0.00042), Reply.streamed(ANSWER, cost=0.0011))
    assert (await make_writer().write(REQUEST)).cost_usd == pytest.approx(0.00042)
    assert (await make_writer(stream=True).write(REQUEST)).cost_usd == pytest.approx(0.0011)


async def test_the_repair_sent_carries_the_error_line_and_measured_vs_expected(
    api: FakeOpenAI, make_writer: MakeWriter
):
    api.add(Reply.answer(ANSWER))
    request = ports.ScriptRequest(
        prompt="a box",
        freecad_version="1.0",
        expected=ports.Expected(bbox_mm=(20.0, 20.0, 10.0)),
        attempts=(
            ports.Attempt(
                round=1,
                script="import Part\nPart.makeBox(20, 20, 0)\n",
                feedback="Part.OCCError: the height is zero\n--- log tail ---\nTraceback ...",
            ),
            ports.Attempt(
                round=2,
                script="import Part\nPart.makeBox(20, 20, 5)\n",
                feedback="the bounding box is wrong",
                measured=ports.Measured((20.0, 20.0, 5.0), 2000.0, 1400.0, 1, True),
            ),
        ),
    )
    await make_writer().write(request)
    user = api.requests[0].json["messages"][1]["content"]
    assert "Part.OCCError: the height is zero" in user
    assert "bounding box 20 x 20 x 5 mm (expected 20 x 20 x 10 mm)" in user


# --- retries ----------------------------------------------------------------------------------


async def test_429_is_retried_after_the_retry_after_the_server_asked(
    api: FakeOpenAI, make_writer: MakeWriter, sleeps: Sleeps
):
    api.add(Reply.http(429, "slow down", headers={"Retry-After": "7"}), Reply.answer(ANSWER))
    completion = await make_writer().write(REQUEST)
    assert completion.script == SCRIPT
    assert completion.notes["attempts"] == "2"
    assert sleeps.delays == [7.0]
    assert len(api.requests) == 2


async def test_openai_retry_after_ms_is_honoured(
    api: FakeOpenAI, make_writer: MakeWriter, sleeps: Sleeps
):
    api.add(Reply.http(429, headers={"retry-after-ms": "1500"}), Reply.answer(ANSWER))
    await make_writer().write(REQUEST)
    assert sleeps.delays == [1.5]


async def test_5xx_for_ever_ends_after_max_retries_with_full_jitter_backoff(
    api: FakeOpenAI, make_writer: MakeWriter, sleeps: Sleeps
):
    api.then = Reply.http(500, "the server is on fire")
    message = await provider_error(make_writer(max_retries=2))
    assert "answered HTTP 500 three times" in message
    assert "the server is on fire" in message
    assert "gpt-test" in message
    assert len(api.requests) == 3
    # rng 0.5 of min(30, 1 * 2^attempt): full jitter, growing, bounded
    assert sleeps.delays == [0.5, 1.0]


async def test_mixed_failures_are_all_named(api: FakeOpenAI, make_writer: MakeWriter):
    api.add(Reply.http(502), Reply.http(503), Reply.http(429))
    message = await provider_error(make_writer(max_retries=2))
    assert "failed three times (HTTP 502, HTTP 503, HTTP 429)" in message


async def test_a_retry_after_longer_than_a_generation_should_wait_fails_at_once(
    api: FakeOpenAI, make_writer: MakeWriter, sleeps: Sleeps
):
    api.add(Reply.http(429, "daily limit", headers={"Retry-After": "3600"}))
    message = await provider_error(make_writer())
    assert "answered HTTP 429 and asks to wait 3600 s" in message
    assert sleeps.delays == []
    assert len(api.requests) == 1


async def test_no_quota_left_is_not_retried(api: FakeOpenAI, make_writer: MakeWriter):
    api.add(Reply.http(429, "You exceeded your current quota", code="insufficient_quota"))
    message = await provider_error(make_writer())
    assert "no quota left" in message
    assert len(api.requests) == 1


async def test_a_server_that_is_not_there_is_retried_then_named(
    make_writer: MakeWriter, sleeps: Sleeps
):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    message = await provider_error(make_writer(base_url=f"http://127.0.0.1:{port}/v1"))
    assert f"127.0.0.1:{port}" in message
    assert "could not connect three times" in message
    assert len(sleeps.delays) == 2


async def test_a_stream_cut_before_its_end_is_retried(api: FakeOpenAI, make_writer: MakeWriter):
    cut = stream_chunks(ANSWER)[:3]  # no finish_reason, no [DONE]
    api.add(Reply(chunks=cut, done=False), Reply.streamed(ANSWER))
    completion = await make_writer(stream=True).write(REQUEST)
    assert completion.script == SCRIPT
    assert completion.notes["attempts"] == "2"


# --- failures that are not retried ------------------------------------------------------------


async def test_a_slow_answer_times_out_and_says_after_how_long(
    api: FakeOpenAI, make_writer: MakeWriter
):
    api.add(Reply(body="{}", delay_seconds=5))
    message = await provider_error(make_writer(timeout_seconds=0.3))
    assert "timed out after 0.3 s" in message
    assert len(api.requests) == 1


async def test_a_stalled_stream_times_out(api: FakeOpenAI, make_writer: MakeWriter):
    api.add(Reply(chunks=stream_chunks(ANSWER), chunk_delay_seconds=0.2))
    message = await provider_error(make_writer(stream=True, timeout_seconds=0.5))
    assert "timed out after 0.5 s" in message


async def test_malformed_json_is_named(api: FakeOpenAI, make_writer: MakeWriter):
    api.add(Reply(body="<html>Bad gateway</html>"))
    message = await provider_error(make_writer())
    assert "malformed JSON" in message and "Bad gateway" in message


async def test_json_without_choices_is_malformed(api: FakeOpenAI, make_writer: MakeWriter):
    api.add(Reply(body={"object": "chat.completion", "choices": []}))
    assert "malformed JSON: no choices" in await provider_error(make_writer())


async def test_malformed_json_in_a_stream_is_named(api: FakeOpenAI, make_writer: MakeWriter):
    api.add(Reply(chunks=["data: {not json\n\n"]))
    assert "streamed malformed JSON" in await provider_error(make_writer(stream=True))


async def test_an_error_in_the_middle_of_a_stream_is_named(
    api: FakeOpenAI, make_writer: MakeWriter
):
    chunks = [*stream_chunks(ANSWER)[:2], {"error": {"message": "upstream overloaded"}}]
    api.add(Reply(chunks=chunks))
    message = await provider_error(make_writer(stream=True))
    assert "mid-stream: upstream overloaded" in message


@pytest.mark.parametrize("content", ["", None, "   \n"])
async def test_an_empty_answer_is_named(api: FakeOpenAI, make_writer: MakeWriter, content):
    api.add(Reply.answer(content))
    assert "empty answer" in await provider_error(make_writer())


async def test_an_empty_answer_cut_at_the_token_limit_says_so(
    api: FakeOpenAI, make_writer: MakeWriter
):
    api.add(Reply.answer("", finish_reason="length"))
    assert "cut off at the token limit" in await provider_error(make_writer())


async def test_a_refusal_is_named_with_its_text(api: FakeOpenAI, make_writer: MakeWriter):
    api.add(Reply.answer(None, refusal="I can't help with weapons."))
    assert "refused: I can't help with weapons." in await provider_error(make_writer())


async def test_the_content_filter_is_a_refusal(api: FakeOpenAI, make_writer: MakeWriter):
    api.add(Reply.answer("", finish_reason="content_filter"))
    assert "refused: the provider's content filter" in await provider_error(make_writer())


async def test_a_streamed_refusal_is_named(api: FakeOpenAI, make_writer: MakeWriter):
    chunks = [
        {"model": "m", "choices": [{"index": 0, "delta": {"refusal": "I can't "}}]},
        {"model": "m", "choices": [{"index": 0, "delta": {"refusal": "do that."}}]},
        {"model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    api.add(Reply(chunks=chunks))
    assert "refused: I can't do that." in await provider_error(make_writer(stream=True))


async def test_an_answer_without_code_is_named(api: FakeOpenAI, make_writer: MakeWriter):
    api.add(Reply.answer("I would start with a box and then drill a hole."))
    message = await provider_error(make_writer())
    assert "answered with no Python code block" in message
    assert "I would start with a box" in message


async def test_401_names_the_key_without_showing_it(api: FakeOpenAI, make_writer: MakeWriter):
    api.add(Reply.http(401, f"Incorrect API key provided: {KEY}.", code="invalid_api_key"))
    message = await provider_error(make_writer())
    assert "refused the API key (HTTP 401)" in message and "OPENAI_API_KEY" in message
    assert KEY not in message and KEY[-6:] not in message


async def test_403_without_a_key_says_none_is_set(api: FakeOpenAI, make_writer: MakeWriter):
    api.add(Reply.http(403, "Forbidden"))
    message = await provider_error(make_writer(api_key=None))
    assert "wants an API key (HTTP 403) and none is set" in message


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (404, 'model "llama9" not found, try pulling it first'),  # Ollama
        (400, "llama9 is not a valid model ID"),  # OpenRouter
    ],
)
async def test_an_unknown_model_is_named(
    api: FakeOpenAI, make_writer: MakeWriter, status: int, text: str
):
    api.add(Reply.http(status, text))
    message = await provider_error(make_writer(model="llama9"))
    assert f"does not know the model 'llama9' (HTTP {status}" in message
    assert text in message
    assert len(api.requests) == 1


async def test_a_redirect_points_at_the_base_url(api: FakeOpenAI, make_writer: MakeWriter):
    api.add(Reply(status=301, headers={"Location": "https://example.test/v1/chat/completions"}))
    message = await provider_error(make_writer())
    assert "redirected (HTTP 301) to https://example.test/v1/chat/completions" in message
    assert "OPENAI_BASE_URL" in message


async def test_another_bad_request_is_named(api: FakeOpenAI, make_writer: MakeWriter):
    api.add(Reply.http(400, "messages: too long"))
    assert "refused the request (HTTP 400): messages: too long" in await provider_error(
        make_writer()
    )


# --- the key stays secret ---------------------------------------------------------------------


async def test_the_key_never_appears_in_logs_messages_or_repr(
    api: FakeOpenAI, make_writer: MakeWriter, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)  # httpx and httpcore included
    api.add(
        Reply.http(500, f"echo {KEY}"),
        Reply.answer(ANSWER),
        Reply.http(401, f"bad key {KEY}"),
        Reply.http(400, f"what is {KEY}"),
    )
    writer = make_writer()
    await writer.write(REQUEST)
    messages = [await provider_error(writer), await provider_error(writer)]
    assert caplog.records, "the writer and httpx log something"
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert KEY not in logged
    assert KEY not in repr(writer)
    assert all(KEY not in m for m in messages)
    assert "[key]" in messages[1]


# --- construction and the fake server itself ---------------------------------------------------


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"base_url": "api.openai.com/v1"}, "base_url"),
        ({"model": ""}, "model"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"max_retries": -1}, "max_retries"),
    ],
)
def test_bad_settings_fail_at_construction(options: dict[str, Any], complaint: str):
    defaults: dict[str, Any] = {"base_url": "http://127.0.0.1:1/v1", "model": "m", "api_key": None}
    with pytest.raises(ValueError, match=complaint):
        OpenAIWriter(**(defaults | options))


async def test_a_given_http_client_is_used_and_left_open(api: FakeOpenAI):
    api.add(Reply.answer(ANSWER), Reply.answer(ANSWER))
    async with httpx.AsyncClient(headers={"X-Title": "cadpipe"}) as client:
        writer = OpenAIWriter(
            base_url=api.base_url + "/", model="m", api_key=None, http_client=client
        )
        await writer.write(REQUEST)
        await writer.aclose()
        assert not client.is_closed
        await writer.write(REQUEST)
    assert api.requests[0].headers["x-title"] == "cadpipe"
    assert api.requests[0].path == "/v1/chat/completions"


async def test_the_fake_answers_from_the_request_once_its_script_runs_out(
    api: FakeOpenAI, make_writer: MakeWriter
):
    def echo_the_prompt(request: Any) -> Reply:
        prompt = request.json["messages"][1]["content"].splitlines()[0]
        return Reply.answer(f"```python\nimport Part\n# {prompt}\n```")

    api.add(Reply.answer(ANSWER))
    api.then = echo_the_prompt
    writer = make_writer()
    assert (await writer.write(REQUEST)).script == SCRIPT
    second = await writer.write(REQUEST)
    assert "# Make this part: a 20 x 20 x 10 mm box" in second.script


async def test_the_fake_says_when_its_script_ran_out(api: FakeOpenAI, make_writer: MakeWriter):
    message = await provider_error(make_writer(max_retries=0))
    assert "no scripted reply left" in message
