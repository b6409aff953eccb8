"""Secrets (API tokens, JWTs and the JWT key, the service token, S3 and MongoDB credentials)
appear in no log line, no error body and no configuration summary."""

from __future__ import annotations

import json
import logging
import time

import jwt
import pytest
from security_stack import JWT_SECRET, Secured, upload

from cadpipe.settings import GrpcSecuritySettings
from services.gateway.settings import Settings as GatewaySettings
from services.gateway.tokens import new_token

CLIENT_LOGGERS = ("httpx", "httpcore")
"""This test's own HTTP client, which logs the URLs it sends."""


def _everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """Messages, arguments, extra fields and tracebacks of every record but the client's."""
    lines = []
    for record in caplog.records:
        if record.name.split(".")[0] in CLIENT_LOGGERS:
            continue
        lines.append(record.getMessage())
        lines.append(repr(vars(record)))
        if record.exc_info:
            lines.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(lines)


@pytest.mark.asyncio(loop_scope="module")
async def test_no_secret_reaches_a_log_line_or_an_error_body(
    secured: Secured, project: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    now = int(time.time())
    alice_jwt = secured.jwt("alice")
    forged_jwt = jwt.encode({"sub": "alice", "exp": now + 60}, "not-the-key-" + "z" * 40)
    expired_jwt = jwt.encode({"sub": "alice", "exp": now - 600}, JWT_SECRET)
    forged_token = new_token()
    bodies: list[str] = []
    async with secured.client() as http:
        for token in (forged_token, forged_jwt, expired_jwt, secured.tokens["alice"] + "x"):
            response = await http.get(
                f"/api/projects/{project}/scripts", headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 401
            bodies.append(response.text + json.dumps(dict(response.headers)))
        async with secured.client("alice") as alice:
            assert (await upload(alice, project)).status_code == 200
            bad = await alice.post(f"/api/projects/{project}/upload-script", content=b"{")
            bodies.append(bad.text)
            stream = await http.get(
                f"/api/projects/{project}/scripts",
                params={"access_token": secured.tokens["alice"]},
            )
            bodies.append(stream.text)
        as_jwt = await http.get(
            f"/api/projects/{project}/scripts", headers={"Authorization": f"Bearer {alice_jwt}"}
        )
        bodies.append(as_jwt.text)
        async with secured.client("root") as root:
            summary = await root.get("/api/monitoring/config/summary")
            assert summary.status_code == 200, summary.text
            bodies.append(summary.text)

    secrets = {
        "JWT key": JWT_SECRET,
        "service token": secured.service_token,
        "S3 secret key": secured.s3_settings["aws_secret_access_key"],
        "a forged API token": forged_token,
        "a forged JWT": forged_jwt,
        "an expired JWT": expired_jwt,
        "a valid JWT": alice_jwt,
        **{f"{who}'s API token": token for who, token in secured.tokens.items()},
    }
    logged = _everything_logged(caplog)
    assert "refused" in logged  # the refusals were logged, without what was sent
    answered = "\n".join(bodies)
    for name, secret in secrets.items():
        assert secret not in logged, f"{name} is in the logs"
        assert secret not in answered, f"{name} is in a response"


def test_settings_summaries_hide_their_secrets() -> None:
    settings = GatewaySettings.model_validate(
        {
            "mongodb_uri": "mongodb://cadpipe:mongo-password-1@db:27017",
            "jwt_secret": JWT_SECRET,
            "service_token": "service-token-" + "q" * 30,
        }
    )
    service = GrpcSecuritySettings.model_validate({"service_token": "service-token-" + "q" * 30})
    for text in (
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        json.dumps(settings.model_dump(mode="json")),
        repr(service),
    ):
        assert "mongo-password-1" not in text
        assert JWT_SECRET not in text
        assert "q" * 30 not in text
