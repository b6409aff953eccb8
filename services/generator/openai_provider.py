"""The ScriptWriter for any server that speaks the OpenAI Chat Completions API (OpenAI,
OpenRouter, Gemini's OpenAI endpoint, Ollama, vLLM, llama.cpp's server, LM Studio).

One job: POST {base_url}/chat/completions, retry what is worth retrying (429, 408, 409, 5xx,
refused connections) a bounded number of times with full-jitter backoff, and turn every other
failure into a ports.ProviderError whose message says what failed. The API key is sent as a
Bearer token and nowhere else: not in logs, messages or repr.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.generator import ports, prompting

logger = logging.getLogger(__name__)

RETRIED_STATUSES = frozenset({408, 409, 429})
"""And every 5xx: the statuses OpenAI's own SDK retries."""
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 30.0
MAX_RETRY_AFTER_SECONDS = 120.0
"""A Retry-After longer than this ends the call at once: a generation does not wait an hour."""
CONNECT_TIMEOUT_SECONDS = 10.0
PROVIDER_TEXT_CHARS = 300
"""Most characters of a provider's own error message quoted in ours."""


@dataclass
class _Answer:
    """What one successful exchange carried, streamed or not."""

    content: str = ""
    refusal: str = ""
    finish_reason: str = ""
    model: str = ""
    response_id: str = ""
    usage: dict[str, Any] = field(default_factory=dict)


class _Retryable(Exception):
    """A failure worth another attempt; what names it in the final message."""

    def __init__(self, what: str, detail: str = "", retry_after: float | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.detail = detail
        self.retry_after = retry_after


class OpenAIWriter:
    name = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None,
        timeout_seconds: float = 60.0,
        max_retries: int = 3,
        stream: bool = False,
        http_client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"base_url: must start with http:// or https:// (OPENAI_BASE_URL), not {base_url!r}"
            )
        if not model:
            raise ValueError("model: required (OPENAI_MODEL)")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds: must be positive")
        if max_retries < 0:
            raise ValueError("max_retries: must be 0 or more")
        self.model = model
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.stream = stream
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._where = _without_userinfo(base_url.rstrip("/"))
        self._api_key = api_key or None
        self._sleep = sleep
        self._rng = rng
        self._timeout = httpx.Timeout(
            timeout_seconds, connect=min(CONNECT_TIMEOUT_SECONDS, timeout_seconds)
        )
        self._owns_client = http_client is None
        self._client = http_client or httpx.AsyncClient(timeout=self._timeout)

    def __repr__(self) -> str:  # never the key
        return f"OpenAIWriter(base_url={self._where!r}, model={self.model!r})"

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def write(self, request: ports.ScriptRequest) -> ports.Completion:
        payload: dict[str, Any] = {"model": self.model, "messages": prompting.messages(request)}
        if self.stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        failures: list[_Retryable] = []
        for attempt in range(self.max_retries + 1):
            started = time.monotonic()
            try:
                answer = await self._exchange(payload)
            except _Retryable as failure:
                failures.append(failure)
                if attempt == self.max_retries:
                    break
                delay = self._delay(attempt, failure.retry_after)
                logger.warning(
                    "%s (model %s) failed: %s (%s); retry %d of %d in %.1f s",
                    self._where,
                    self.model,
                    failure.what,
                    failure.detail,
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                await self._sleep(delay)
                continue
            latency = time.monotonic() - started
            return self._completion(answer, latency=latency, attempts=attempt + 1)
        raise ports.ProviderError(self._gave_up(failures))

    # --- one exchange ------------------------------------------------------------------------

    async def _exchange(self, payload: dict[str, Any]) -> _Answer:
        headers = {"Accept": "text/event-stream" if self.stream else "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        try:
            async with asyncio.timeout(self.timeout_seconds):
                async with self._client.stream(
                    "POST", self._url, json=payload, headers=headers, timeout=self._timeout
                ) as response:
                    if response.status_code != 200:
                        await response.aread()
                        raise self._status_error(response)
                    content_type = response.headers.get("content-type", "")
                    if self.stream and "text/event-stream" in content_type:
                        return await self._read_stream(response)
                    # a server that ignores stream: true answers one JSON body
                    return self._parse_body(await response.aread())
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            raise _Retryable("could not connect", str(error) or type(error).__name__) from error
        except (TimeoutError, httpx.TimeoutException) as error:
            raise ports.ProviderError(
                f"the provider at {self._where} (model {self.model}) timed out after "
                f"{self.timeout_seconds:g} s"
            ) from error
        except (httpx.RemoteProtocolError, httpx.ReadError) as error:
            raise _Retryable(
                "dropped the connection", str(error) or type(error).__name__
            ) from error
        except httpx.HTTPError as error:
            raise ports.ProviderError(
                f"the provider at {self._where} (model {self.model}) failed: "
                f"{type(error).__name__}: {error}"
            ) from error

    def _status_error(self, response: httpx.Response) -> Exception:
        status = response.status_code
        detail, code = _error_text(response.content)
        detail = self._redact(detail)
        if status in RETRIED_STATUSES or status >= 500:
            if status == 429 and code == "insufficient_quota":
                return self._error(
                    f"answered that the account has no quota left (HTTP 429): {detail}"
                )
            retry_after = _retry_after(response.headers)
            if retry_after is not None and retry_after > MAX_RETRY_AFTER_SECONDS:
                return self._error(
                    f"answered HTTP {status} and asks to wait {retry_after:.0f} s, longer than a "
                    f"generation waits: {detail}"
                )
            return _Retryable(f"HTTP {status}", detail, retry_after)
        if 300 <= status < 400:
            location = _without_userinfo(response.headers.get("location", "?"))
            return self._error(
                f"redirected (HTTP {status}) to {location}: check OPENAI_BASE_URL (the API root, "
                "such as https://api.openai.com/v1)"
            )
        if status in (401, 403):
            # the provider's own text may quote part of the key: not repeated
            if self._api_key is None:
                return self._error(
                    f"wants an API key (HTTP {status}) and none is set: set OPENAI_API_KEY"
                )
            return self._error(
                f"refused the API key (HTTP {status}): check OPENAI_API_KEY "
                "and that it may use this model"
            )
        if status == 404 or (status == 400 and _about_the_model(detail, code)):
            return self._error(
                f"does not know the model '{self.model}' (HTTP {status}; check "
                f"OPENAI_MODEL, and OPENAI_BASE_URL {self._where}): {detail}"
            )
        return self._error(f"refused the request (HTTP {status}): {detail}")

    def _parse_body(self, raw: bytes) -> _Answer:
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise self._error(f"answered malformed JSON: {_snippet(raw)!r}") from error
        if not isinstance(body, dict):
            raise self._error(f"answered malformed JSON (not an object): {_snippet(raw)!r}")
        if "error" in body and not body.get("choices"):
            detail, _ = _error_text(raw)
            raise self._error(f"answered an error: {self._redact(detail)}")
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self._error("answered malformed JSON: no choices")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise self._error("answered malformed JSON: a choice without a message")
        return _Answer(
            content=_text(message.get("content")),
            refusal=_text(message.get("refusal")),
            finish_reason=str(choices[0].get("finish_reason") or ""),
            model=str(body.get("model") or ""),
            response_id=str(body.get("id") or ""),
            usage=usage if isinstance(usage := body.get("usage"), dict) else {},
        )

    async def _read_stream(self, response: httpx.Response) -> _Answer:
        """Server-sent events: `data: {chunk}` lines up to `data: [DONE]`; comments (`:`) and
        other fields are skipped. The usage comes in a last chunk with no choices."""
        answer = _Answer()
        content: list[str] = []
        refusal: list[str] = []
        done = False
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            try:
                chunk = json.loads(data)
            except json.JSONDecodeError as error:
                raise self._error(
                    f"streamed malformed JSON: {_snippet(data.encode())!r}"
                ) from error
            if not isinstance(chunk, dict):
                raise self._error(f"streamed malformed JSON: {_snippet(data.encode())!r}")
            if chunk.get("error"):
                detail, _ = _error_text(data.encode())
                raise self._error(f"reported an error mid-stream: {self._redact(detail)}")
            answer.model = str(chunk.get("model") or answer.model)
            answer.response_id = str(chunk.get("id") or answer.response_id)
            if isinstance(chunk.get("usage"), dict):
                answer.usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict):
                    continue
                delta = choice.get("delta") or {}
                if isinstance(delta, dict):
                    content.append(_text(delta.get("content")))
                    refusal.append(_text(delta.get("refusal")))
                if choice.get("finish_reason"):
                    answer.finish_reason = str(choice["finish_reason"])
        if not done and not answer.finish_reason:
            raise _Retryable("ended the stream before the answer was complete")
        answer.content = "".join(content)
        answer.refusal = "".join(refusal)
        return answer

    # --- the answer --------------------------------------------------------------------------

    def _completion(self, answer: _Answer, *, latency: float, attempts: int) -> ports.Completion:
        if answer.refusal.strip():
            raise self._error(f"refused: {_clip(answer.refusal.strip())}")
        if answer.finish_reason == "content_filter":
            raise self._error("refused: the provider's content filter stopped the answer")
        if not answer.content.strip():
            why = " (cut off at the token limit)" if answer.finish_reason == "length" else ""
            raise self._error(f"gave an empty answer{why}")
        try:
            script = prompting.extract_script(answer.content)
        except prompting.NoScript as error:
            why = (
                " (the answer was cut off at the token limit)"
                if answer.finish_reason == "length"
                else ""
            )
            raise self._error(
                f"answered with no Python code block{why}: {_clip(answer.content.strip(), 120)!r}"
            ) from error
        usage = answer.usage
        completion = ports.Completion(
            script=script,
            provider=self.name,
            model=answer.model or self.model,
            tokens_in=_int(usage.get("prompt_tokens")),
            tokens_out=_int(usage.get("completion_tokens")),
            cost_usd=_float(usage.get("cost")),
            latency_seconds=latency,
            notes={
                "base_url": self._where,
                "attempts": str(attempts),
                "finish_reason": answer.finish_reason,
                "response_id": answer.response_id,
                "streamed": str(self.stream).lower(),
            },
        )
        logger.info(
            "%s answered (model %s): %d tokens in, %d out, %.2f s, attempt %d",
            self._where,
            completion.model,
            completion.tokens_in,
            completion.tokens_out,
            latency,
            attempts,
        )
        return completion

    # --- failures ----------------------------------------------------------------------------

    def _error(self, what: str) -> ports.ProviderError:
        return ports.ProviderError(f"the provider at {self._where} (model {self.model}) {what}")

    def _gave_up(self, failures: list[_Retryable]) -> str:
        last = failures[-1]
        detail = f": {last.detail}" if last.detail else ""
        whats = [f.what for f in failures]
        if len(set(whats)) == 1:
            if last.what.startswith("HTTP"):
                said = f"answered {last.what} {_times(len(failures))}"
            else:
                said = f"{last.what} {_times(len(failures))}"
        else:
            said = f"failed {_times(len(failures))} ({', '.join(whats)})"
        return f"the provider at {self._where} (model {self.model}) {said}{detail}"

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Retry-After when the server gave one; else full jitter: uniform in
        [0, min(cap, base * 2^attempt)]."""
        if retry_after is not None:
            return max(0.0, retry_after)
        return self._rng() * min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[key]") if self._api_key else text


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait: retry-after-ms (OpenAI), Retry-After as seconds or an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return float(millis) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_text(raw: bytes) -> tuple[str, str]:
    """The provider's message and code from {"error": {"message", "code"}} (OpenAI and most
    others), {"error": "text"} (some local servers), or the raw body's start."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _snippet(raw), ""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return _clip(str(error.get("message") or error)), str(error.get("code") or "")
    if isinstance(error, str):
        return _clip(error), ""
    if isinstance(body, dict) and body.get("message"):
        return _clip(str(body["message"])), ""
    return _snippet(raw), ""


def _about_the_model(detail: str, code: str) -> bool:
    return code in ("model_not_found", "invalid_model") or "model" in detail.lower()


def _text(value: object) -> str:
    """Message content: a string, null, or a list of parts ({"type": "text", "text": ...})."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(str(part.get("text") or "") for part in value if isinstance(part, dict))
    return ""


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 0.0


def _clip(text: str, chars: int = PROVIDER_TEXT_CHARS) -> str:
    return text if len(text) <= chars else text[:chars] + "…"


def _snippet(raw: bytes) -> str:
    return _clip(raw.decode("utf-8", "replace").strip(), 100)


def _times(n: int) -> str:
    return {1: "once", 2: "twice", 3: "three times"}.get(n, f"{n} times")


def _without_userinfo(url: str) -> str:
    try:
        return str(httpx.URL(url).copy_with(username=None, password=None))
    except (httpx.InvalidURL, TypeError):
        return url
