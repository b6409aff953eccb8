"""Who owns a project (docs/security.md).

The first upload of a project claims it for its caller, atomically, in the script service's
MongoDB `projects` document ({_id: project, owner, ...}) before anything is written to S3, so of
two identities creating one project at once exactly one gets it. Every script version also
carries its owner in S3 object metadata (`x-amz-meta-owner`): the bucket stays the truth, and
the script service's reindex rebuilds the documents from it.

Every service that serves a project's data reads the owner here (one indexed read by _id) and
answers NOT_FOUND to anyone else, exactly as for a project that does not exist.
"""

from __future__ import annotations

from typing import Any

from pymongo.database import Database

PROJECTS = "projects"
OWNER_FIELD = "owner"
S3_OWNER_METADATA = "owner"
"""S3 user metadata key (x-amz-meta-owner) of every script version."""


def read_owner(db: Database[dict[str, Any]], project: str) -> str | None:
    """The project's owner; "" for a project without one (made before identities existed, or
    by an anonymous caller of a trusted network); None when no such project is known."""
    doc = db[PROJECTS].find_one({"_id": project}, {OWNER_FIELD: 1})
    if doc is None:
        return None
    return str(doc.get(OWNER_FIELD) or "")


def not_found_message(project: str) -> str:
    """The one message for a project the caller may not see and for one that does not exist,
    so that the answer says nothing about which it is."""
    return f"project {project!r} not found"
