"""Download URLs: presigned for 15 minutes by default, for exactly one object. The signature is
checked here with AWS Signature Version 4 as S3 computes it (moto's server does not check
presigned signatures), so that the test shows what S3 would refuse."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

import httpx
import pytest
from security_stack import Secured, finish_version, upload
from support.polling import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sigv4_presigned_valid(url: str, secret_key: str) -> bool:
    """Whether the query-string signature of a presigned GET matches its URL (SigV4,
    UNSIGNED-PAYLOAD, host the only signed header)."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    params = dict(pairs)
    signature = params.get("X-Amz-Signature", "")

    def encode(text: str) -> str:
        return quote(text, safe="-_.~")

    canonical_query = "&".join(
        f"{encode(k)}={encode(v)}" for k, v in sorted(pairs) if k != "X-Amz-Signature"
    )
    canonical_request = "\n".join(
        [
            "GET",
            quote(unquote(parts.path), safe="/-_.~"),
            canonical_query,
            f"host:{parts.netloc}\n",
            params["X-Amz-SignedHeaders"],
            "UNSIGNED-PAYLOAD",
        ]
    )
    scope = params["X-Amz-Credential"].split("/", 1)[1]
    day, region, service, _ = scope.split("/")
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            params["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = _hmac(("AWS4" + secret_key).encode(), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


async def test_a_download_url_names_one_object_for_fifteen_minutes(
    secured: Secured, project: str
) -> None:
    async with secured.client("alice") as alice:
        assert (await upload(alice, project)).status_code == 200
        key = finish_version(secured.bucket, project)
        other_key = finish_version(secured.bucket, f"{project}-other")

        async def link() -> httpx.Response | None:
            response = await alice.get(f"/api/projects/{project}/download/stl")
            return response if response.status_code == 200 else None

        response = await wait_until(link)
    asked_at = dt.datetime.now(dt.UTC)
    answer = response.json()
    url = answer["url"]
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    assert unquote(parts.path) == f"/{secured.bucket.name}/{key}"
    assert params["X-Amz-Expires"] == "900"
    assert params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    expires_at = dt.datetime.fromisoformat(answer["expires_at"].replace("Z", "+00:00"))
    assert abs((expires_at - asked_at).total_seconds() - 900) < 30

    secret = secured.s3_settings["aws_secret_access_key"]
    assert sigv4_presigned_valid(url, secret)
    elsewhere = urlunsplit(parts._replace(path=f"/{secured.bucket.name}/{other_key}"))
    assert not sigv4_presigned_valid(elsewhere, secret)
    longer = url.replace("X-Amz-Expires=900", "X-Amz-Expires=604800")
    assert not sigv4_presigned_valid(longer, secret)

    async with httpx.AsyncClient(timeout=10) as plain:
        fetched = await plain.get(url)
    assert fetched.status_code == 200 and fetched.content.startswith(b"solid part")
