"""Per-token upload limits through the whole stack: a token's burst, then 429 with Retry-After and
nothing stored; other tokens and reads unaffected."""

from __future__ import annotations

import pytest
from security_stack import Secured, assert_unchanged, start_secured, upload

from cadpipe.devstack import MotoS3

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def test_uploads_beyond_a_tokens_burst_get_429_and_store_nothing(
    moto_server: MotoS3, project: str
) -> None:
    async with start_secured(moto_server, upload_burst=3, upload_rate_per_second=0.2) as secured:
        await _exercise(secured, project)


async def _exercise(secured: Secured, project: str) -> None:
    async with secured.client("alice") as alice, secured.client("bob") as bob:
        for _ in range(3):
            assert (await upload(alice, project)).status_code == 200
        before = await secured.settled_snapshot()
        limited = await upload(alice, project)
        assert limited.status_code == 429, limited.text
        assert limited.headers["retry-after"] == "5"  # one token at 0.2 per second
        assert limited.json()["code"] == 8
        assert "too many uploads" in limited.json()["message"]
        assert_unchanged(before, secured.snapshot())
        # reads are not limited; another token has its own bucket
        listed = await alice.get(f"/api/projects/{project}/scripts")
        assert listed.status_code == 200 and len(listed.json()["scripts"]) == 3
        assert (await upload(bob, f"{project}-bob")).status_code == 200


async def test_generations_have_a_limit_of_their_own_per_token(
    moto_server: MotoS3, project: str
) -> None:
    """They cost provider calls: a few at once, then a few per minute, whatever the upload
    limit allows."""
    async with (
        start_secured(moto_server, generation_burst=2, generation_rate_per_minute=1) as secured,
        secured.client("alice") as alice,
        secured.client("bob") as bob,
    ):
        path = f"/api/projects/{project}/generate"
        for _ in range(2):  # the catalogue is not needed: an empty prompt is refused after
            assert (await alice.post(path, json={"prompt": ""})).status_code == 400
        limited = await alice.post(path, json={"prompt": "a box"})
        assert limited.status_code == 429, limited.text
        assert limited.headers["retry-after"] == "60"
        assert (
            "too many generations: at most 2 at once, then 1 per minute"
            in (limited.json()["message"])
        )
        # uploads keep their own limit; another token its own bucket
        assert (await upload(alice, project)).status_code == 200
        bob_path = f"/api/projects/{project}-bob/generate"
        assert (await bob.post(bob_path, json={"prompt": ""})).status_code == 400
