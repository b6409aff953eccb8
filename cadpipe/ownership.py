"""Who owns a project, decided in one place for every service (docs/security.md).

The first upload of a project claims it for its caller, atomically, in the script service's
MongoDB `projects` document ({_id: project, owner, ...}) before anything is written to S3, so of
two identities creating one project at once exactly one gets it. Every script version also
carries its owner in S3 object metadata (`x-amz-meta-owner`): the bucket stays the truth.

`Ownership` is the policy every service applies: the owner is the one the index records, or,
when the index does not know the project (lost, rebuilt, behind), the one S3 records on the
project's first version. Anyone else gets NOT_FOUND, worded exactly as for a project that does
not exist. Its adapters are in cadpipe.adapters.owners.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cadpipe import errors
from cadpipe.callers import Caller

PROJECTS = "projects"
OWNER_FIELD = "owner"
S3_OWNER_METADATA = "owner"
"""S3 user metadata key (x-amz-meta-owner) of every script version."""


class OwnerRecords(Protocol):
    """The `owner` of MongoDB's `projects` documents."""

    async def owner_of(self, project: str) -> str | None:
        """The owner; "" for a project without one; None for a project the index lacks."""
        ...

    async def claim(self, project: str, owner: str) -> str:
        """Records `owner` unless the project is known already (the first claim wins,
        atomically); returns the owner recorded now ("" for a project without one)."""
        ...

    async def restore(self, project: str, owner: str) -> None:
        """Reindex: the owner S3 records for the project."""
        ...


class FirstVersionOwners(Protocol):
    """The bucket's word on ownership."""

    async def first_version_owner(self, project: str) -> str | None:
        """The owner recorded on version 1 of the project ("" when it names none); None when
        the bucket holds no version 1."""
        ...


@dataclass(frozen=True)
class RecordedOwner:
    """OwnerRecords.owner_of's answer, read by someone else along with the rest of the
    project's document."""

    owner: str | None


def not_found_message(project: str) -> str:
    """The one message for a project the caller may not see and for one that does not exist,
    so that the answer says nothing about which it is."""
    return f"project {project!r} not found"


class Ownership:
    """records and bucket None: no ownership is recorded anywhere, and only unrestricted callers
    (an admin, the anonymous caller of a trusted network) see any project."""

    def __init__(
        self, records: OwnerRecords | None = None, bucket: FirstVersionOwners | None = None
    ) -> None:
        self._records = records
        self._bucket = bucket

    async def owner_of(self, project: str) -> str | None:
        """The index's owner, or S3's when the index does not know the project; None when
        neither does (no such project)."""
        if self._records is not None:
            recorded = await self._records.owner_of(project)
            if recorded is not None:
                return recorded
        if self._bucket is not None:
            return await self._bucket.first_version_owner(project)
        return None

    async def check_access(self, project: str, caller: Caller) -> None:
        """NotFound, with the message of a project that does not exist, unless the caller may
        read the project."""
        if caller.unrestricted:
            return
        if not caller.may_access(await self.owner_of(project)):
            raise errors.NotFound(not_found_message(project))

    async def owner_for_upload(
        self, project: str, caller: Caller, *, read: RecordedOwner | None = None
    ) -> str:
        """The project's owner, claimed when the index lacks the project (before anything is
        stored): for S3's owner when the bucket holds the project already, else for the caller.
        NotFound when the project is someone else's. `read`: what the records said a moment
        ago, when the caller read the project's document anyway (one read, not two)."""
        if self._records is None:
            if caller.unrestricted:
                return ""
            raise errors.NotFound(not_found_message(project))
        recorded = read.owner if read is not None else await self._records.owner_of(project)
        if recorded is None:
            in_bucket = await self._bucket.first_version_owner(project) if self._bucket else None
            if in_bucket is not None:
                recorded = await self._records.claim(project, in_bucket)
            elif not caller.anonymous:
                recorded = await self._records.claim(project, caller.name)
            else:
                recorded = ""
        if not caller.may_access(recorded):
            raise errors.NotFound(not_found_message(project))
        return recorded

    async def restore(self, project: str, owner: str) -> None:
        """Reindex: S3 names the owner; the index follows."""
        if self._records is not None and owner:
            await self._records.restore(project, owner)
