"""What the browser tests drive: the real local stack (moto's S3 server, a nats-server,
mongomock, every service with real FreeCAD: services/allinone/stack.py), run in a thread of its
own by conftest.py, since Playwright's sync API owns the test's thread."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cadpipe.adapters import mongo, s3
from cadpipe.settings import S3Settings
from services.gateway.tokens import MongoTokens

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "webapp"
SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@dataclass
class LiveStack:
    """The stack, its URL and tokens, usable from the test's thread."""

    url: str = ""
    user_token: str = ""
    sign_in_link: str = ""
    mongodb_uri: str = ""
    s3_fields: dict[str, Any] = field(default_factory=dict)
    bucket: str = ""

    def token_for(self, identity: str) -> tuple[str, str]:
        """A new API token of `identity`: (token, token id)."""
        client = mongo.make_client(self.mongodb_uri)
        try:
            token, stored = MongoTokens(client["cadpipe"]).create(identity)
            return token, stored.token_id
        finally:
            client.close()

    def revoke(self, token_id: str) -> None:
        client = mongo.make_client(self.mongodb_uri)
        try:
            assert MongoTokens(client["cadpipe"]).revoke(token_id)
        finally:
            client.close()

    def object_bytes(self, key: str) -> bytes:
        client = s3.make_client(S3Settings.model_validate(self.s3_fields))
        return bytes(client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
