"""API tokens: random, shown once, stored hashed in MongoDB's `api_tokens` collection.

    {_id: token id (public, for list/revoke), sha256: hash of the token (unique),
     identity, admin, created_at, revoked, revoked_at}

A token is `cpt_` + 32 random bytes (base64url): with 256 bits of entropy a plain sha256 is as
good as a slow password hash (nobody can enumerate the inputs), and a lookup stays one indexed
read. The token itself is never stored or logged.

    python -m services.gateway tokens create --identity alice [--admin]
    python -m services.gateway tokens list
    python -m services.gateway tokens revoke TOKEN_ID
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database

from cadpipe import errors
from cadpipe.adapters import mongo
from cadpipe.callers import check_identity

COLLECTION = "api_tokens"
API_TOKEN_PREFIX = "cpt_"

Doc = dict[str, Any]


class AuthUnavailable(errors.Unavailable):
    """A token could not be checked (its store did not answer): not the caller's fault."""


def new_token() -> str:
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", errors="surrogateescape")).hexdigest()


@dataclass(frozen=True)
class StoredToken:
    token_id: str
    identity: str
    admin: bool
    created_at: dt.datetime
    revoked: bool = False


def _stored(doc: Doc) -> StoredToken:
    return StoredToken(
        token_id=str(doc["_id"]),
        identity=str(doc["identity"]),
        admin=bool(doc.get("admin", False)),
        created_at=doc["created_at"],
        revoked=bool(doc.get("revoked", False)),
    )


class MongoTokens:
    def __init__(self, db: Database[Doc]) -> None:
        self._tokens = db[COLLECTION]

    def ensure_indexes(self) -> None:
        self._tokens.create_index([("sha256", ASCENDING)], unique=True, name="sha256")

    def create(self, identity: str, *, admin: bool = False) -> tuple[str, StoredToken]:
        """A new token for the identity: (the token, shown once; what is stored)."""
        check_identity(identity)
        token = new_token()
        stored = StoredToken(
            token_id=secrets.token_hex(8),
            identity=identity,
            admin=admin,
            created_at=dt.datetime.now(dt.UTC).replace(microsecond=0),
        )
        self._tokens.insert_one(
            {
                "_id": stored.token_id,
                "sha256": token_hash(token),
                "identity": stored.identity,
                "admin": stored.admin,
                "created_at": stored.created_at,
                "revoked": False,
            }
        )
        return token, stored

    def list(self) -> list[StoredToken]:
        return [_stored(d) for d in self._tokens.find({}, {"sha256": 0}).sort("created_at")]

    def revoke(self, token_id: str) -> bool:
        """True when a token with this id existed (revoked now or before)."""
        result = self._tokens.update_one(
            {"_id": token_id},
            {"$set": {"revoked": True, "revoked_at": dt.datetime.now(dt.UTC)}},
        )
        return result.matched_count == 1

    def find_blocking(self, sha256: str) -> StoredToken | None:
        doc = self._tokens.find_one({"sha256": sha256})
        return _stored(doc) if doc else None

    async def find(self, sha256: str) -> StoredToken | None:
        try:
            return await mongo.in_thread(lambda: self.find_blocking(sha256))
        except errors.Unavailable as error:
            cause = type(error.__cause__).__name__
            raise AuthUnavailable(f"MongoDB: {cause}") from error.__cause__
