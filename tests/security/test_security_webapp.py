"""The web app's side of the door: its static files and /docs need no token and allow no other
origin; GET /api/projects lists the caller's projects only; the model-file route serves the bytes
to the owner and 404 to anyone else, exactly as the download route does."""

from __future__ import annotations

import httpx
import pytest
from security_stack import Secured, finish_version, upload, wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")


def assert_same_origin_only(policy: str) -> None:
    assert "default-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert "http" not in policy, policy  # no remote origin anywhere
    script_src = next(d for d in policy.split("; ") if d.startswith("script-src"))
    assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src


async def test_the_app_and_its_files_need_no_token_and_allow_only_this_origin(
    secured: Secured,
) -> None:
    async with secured.client() as anonymous:
        for path in ("/", "/projects/anything", "/signin"):
            page = await anonymous.get(path)
            assert page.status_code == 200, path
            assert '<script type="importmap">' in page.text
            assert page.headers["cache-control"] == "no-cache"
            assert_same_origin_only(page.headers["content-security-policy"])
        for path in (
            "/static/app/main.js",
            "/static/vendor/three/three.module.min.js",
            "/static/vendor/three/LICENSE",
            "/static/vendor/swagger-ui-dist/swagger-ui-bundle.js",
        ):
            asset = await anonymous.get(path)
            assert asset.status_code == 200, path
            assert "max-age" in asset.headers["cache-control"]
        missing = await anonymous.get("/static/app/nothing.js")
        assert missing.status_code == 404
        docs = await anonymous.get("/docs")
        assert "/static/vendor/swagger-ui-dist/swagger-ui-bundle.js" in docs.text
        assert "cdn" not in docs.text.lower()
        assert_same_origin_only(docs.headers["content-security-policy"])
        # /api is never the app: an unknown route is a JSON 404 and a known one needs a token
        unknown = await anonymous.get("/api/nothing")
        assert unknown.status_code == 401
        listing = await anonymous.get("/api/projects")
        assert listing.status_code == 401


async def test_projects_lists_the_callers_projects_only_newest_first(
    secured: Secured, project: str
) -> None:
    async with secured.client("alice") as alice, secured.client("bob") as bob:
        for name in (f"{project}-a1", f"{project}-a2"):
            assert (await upload(alice, name)).status_code == 200
        assert (await upload(bob, f"{project}-b")).status_code == 200
        assert (await upload(alice, f"{project}-a1")).status_code == 200  # a1: newest activity

        mine = (await alice.get("/api/projects", params={"page_size": 200})).json()
        names = [p["project"] for p in mine["projects"] if p["project"].startswith(project)]
        assert names == [f"{project}-a1", f"{project}-a2"]
        a1 = next(p for p in mine["projects"] if p["project"] == f"{project}-a1")
        assert a1["latest_version"] == 2
        assert a1["updated_at"] >= a1["created_at"]
        theirs = (await bob.get("/api/projects", params={"page_size": 200})).json()
        assert f"{project}-b" in [p["project"] for p in theirs["projects"]]
        assert not [p for p in theirs["projects"] if p["project"].startswith(f"{project}-a")]

        # a page at a time, every project once
        seen: list[str] = []
        token = ""
        while True:
            page = (
                await alice.get("/api/projects", params={"page_size": 1, "page_token": token})
            ).json()
            seen += [p["project"] for p in page["projects"]]
            token = page["next_page_token"]
            if not token:
                break
        assert len(seen) == len(set(seen)) == len(mine["projects"])
        bad = await alice.get("/api/projects", params={"page_token": "nonsense"})
        assert bad.status_code == 400


async def test_model_files_are_served_to_the_owner_only(secured: Secured, project: str) -> None:
    async with secured.client("alice") as alice, secured.client("bob") as bob:
        assert (await upload(alice, project)).status_code == 200
        key = finish_version(secured.bucket, project)

        async def served() -> httpx.Response | None:
            response = await alice.get(f"/api/projects/{project}/files/stl?version=1")
            return response if response.status_code == 200 else None

        response = await wait_until(served)
        stored = secured.bucket.get(key)
        assert stored is not None and response.content == stored.body
        assert response.headers["content-length"] == str(len(response.content))
        refused = await bob.get(f"/api/projects/{project}/files/stl?version=1")
        assert refused.status_code == 404
        assert project in refused.json()["message"]
        absent = await alice.get(f"/api/projects/{project}/files/step?version=1")
        assert absent.status_code == 404
        bad = await alice.get(f"/api/projects/{project}/files/stl?version=x")
        assert bad.status_code == 400
    async with secured.client() as anonymous:
        assert (await anonymous.get(f"/api/projects/{project}/files/stl")).status_code == 401
