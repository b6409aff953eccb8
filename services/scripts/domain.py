"""The script service's rules, as plain typed Python with no I/O: what a valid upload is, what a
version records, how it is written into S3 object metadata, the uploaded event, page tokens and
idempotency claims. The use cases that drive the stores are in versioning.py."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from cadpipe import errors, layout, messaging, ownership
from cadpipe.timestamps import to_timestamp
from cadpipe.v1 import events_pb2

# --- errors --------------------------------------------------------------------------------
# Bad input, missing projects and unavailable stores are cadpipe.errors' InvalidArgument,
# NotFound and Unavailable; these are the script service's own kinds of conflict.


class VersionConflict(errors.Conflict):
    """Every conditional put of one upload lost its race; nothing was stored."""


class IdempotencyInProgress(errors.Conflict):
    """An upload with the same idempotency key is still running elsewhere."""


class IdempotencyMismatch(errors.FailedPrecondition):
    """The idempotency key was first used with a different script or metadata."""


class CallerGone(Exception):
    """The caller went away before anything was stored (never sent: nobody is listening)."""


# --- limits and validation -----------------------------------------------------------------

METADATA_KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
"""Metadata keys: ASCII letters, digits, '-' and '_', starting with a letter or digit. No dots or
'$', so a key is a plain MongoDB field name and a plain HTTP header token."""

IDEMPOTENCY_KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,128}")
"""Printable ASCII without spaces, 1 to 128 characters: it is stored as an S3 metadata header."""


@dataclass(frozen=True)
class Limits:
    max_script_bytes: int = 1024 * 1024
    max_metadata_entries: int = 32
    max_metadata_key_chars: int = 128
    max_metadata_value_chars: int = 1024
    max_metadata_bytes: int = 1536


@dataclass(frozen=True)
class ValidScript:
    """An upload that passed validation: what gets stored."""

    project: str
    body: bytes
    sha256: str
    metadata: Mapping[str, str]
    idempotency_key: str = ""
    owner: str = ""
    """The project's owner, stamped on the version (set once ownership is decided)."""

    @property
    def fingerprint(self) -> str:
        return request_fingerprint(self.sha256, self.metadata)


def check_project(project: str) -> str:
    try:
        return layout.check_project(project)
    except layout.InvalidProject as error:
        raise errors.InvalidArgument(str(error), field="project") from None


def check_version(version: int) -> int:
    if version < 1:
        raise errors.InvalidArgument(f"version must be 1 or more, got {version}", field="version")
    return version


def validate_upload(
    project: str,
    script: str | bytes | None,
    metadata: Mapping[str, str],
    idempotency_key: str,
    limits: Limits,
) -> ValidScript:
    """The upload as it will be stored, or InvalidArgument naming the first thing wrong with it.

    Cheap checks run first so that an oversize or foreign request never reaches the parser.
    """
    check_project(project)
    if idempotency_key and not IDEMPOTENCY_KEY_PATTERN.fullmatch(idempotency_key):
        raise errors.InvalidArgument(
            "idempotency key must be 1 to 128 printable ASCII characters without spaces",
            field="idempotency_key",
        )
    check_metadata(metadata, limits)
    body = _script_bytes(script)
    if len(body) > limits.max_script_bytes:
        raise errors.InvalidArgument(
            f"script is {len(body)} bytes; at most {limits.max_script_bytes} allowed",
            field="script",
        )
    text = _utf8(body)
    if not text.strip():
        raise errors.InvalidArgument("script is empty", field="script")
    check_python(text)
    return ValidScript(
        project=project,
        body=body,
        sha256=hashlib.sha256(body).hexdigest(),
        metadata=dict(metadata),
        idempotency_key=idempotency_key,
    )


def _script_bytes(script: str | bytes | None) -> bytes:
    if script is None:
        raise errors.InvalidArgument(
            "script is missing (set script or script_bytes)", field="script"
        )
    if isinstance(script, bytes):
        return script
    try:
        return script.encode("utf-8")
    except UnicodeEncodeError as error:  # lone surrogates cannot come from protobuf, but be exact
        raise errors.InvalidArgument(
            f"script is not valid Unicode: {error.reason}", field="script"
        ) from None


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise errors.InvalidArgument(
            f"script is not UTF-8: byte 0x{body[error.start]:02x} at offset {error.start} "
            f"({error.reason})",
            field="script",
        ) from None


def check_python(text: str) -> None:
    """Raises errors.InvalidArgument unless the text compiles as a Python module.

    compile() rather than ast.parse(): it parses the same way and also rejects what only the
    compiler sees ('return' outside a function, 'nonlocal' at module level). Nothing runs.
    """
    try:
        compile(text, "<script>", "exec", dont_inherit=True)
    except SyntaxError as error:
        where = f"line {error.lineno}, column {error.offset}" if error.lineno else "unknown place"
        raise errors.InvalidArgument(
            f"script is not valid Python: {error.msg} ({where})", field="script"
        ) from None
    except ValueError as error:  # NUL bytes
        raise errors.InvalidArgument(
            f"script is not valid Python: {error}", field="script"
        ) from None
    except (RecursionError, MemoryError):
        raise errors.InvalidArgument(
            "script is too deeply nested to compile", field="script"
        ) from None


def check_metadata(metadata: Mapping[str, str], limits: Limits) -> str:
    """Checks count, key pattern and sizes; returns the encoded form stored in S3."""
    if len(metadata) > limits.max_metadata_entries:
        raise errors.InvalidArgument(
            f"metadata has {len(metadata)} entries; at most {limits.max_metadata_entries} allowed",
            field="metadata",
        )
    for key, value in metadata.items():
        if len(key) > limits.max_metadata_key_chars or not METADATA_KEY_PATTERN.fullmatch(key):
            raise errors.InvalidArgument(
                f"metadata key {key[:140]!r} must be 1 to {limits.max_metadata_key_chars} "
                "ASCII letters, digits, '-' or '_', starting with a letter or digit",
                field="metadata",
            )
        if len(value) > limits.max_metadata_value_chars:
            raise errors.InvalidArgument(
                f"metadata value of {key!r} is {len(value)} characters; "
                f"at most {limits.max_metadata_value_chars} allowed",
                field="metadata",
            )
    encoded = encode_metadata(metadata)
    if len(encoded) > limits.max_metadata_bytes:
        raise errors.InvalidArgument(
            f"metadata is {len(encoded)} bytes once encoded; at most {limits.max_metadata_bytes} "
            "allowed (S3 keeps at most 2 KB of metadata per object)",
            field="metadata",
        )
    return encoded


def encode_metadata(metadata: Mapping[str, str]) -> str:
    """Compact JSON, ASCII only (non-ASCII as \\uXXXX), keys sorted: a valid HTTP header value
    whose size is what S3 counts."""
    return json.dumps(dict(metadata), ensure_ascii=True, sort_keys=True, separators=(",", ":"))


def decode_metadata(encoded: str) -> dict[str, str]:
    try:
        data = json.loads(encoded)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}


def request_fingerprint(sha256: str, metadata: Mapping[str, str]) -> str:
    """What an idempotency key remembers of its first request, computable from S3 alone."""
    return hashlib.sha256(f"{sha256}\n{encode_metadata(metadata)}".encode()).hexdigest()


# --- versions ------------------------------------------------------------------------------


def utc_ms(moment: dt.datetime) -> dt.datetime:
    """UTC, truncated to milliseconds: what MongoDB keeps, so S3 and MongoDB agree exactly."""
    moment = moment.astimezone(dt.UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class VersionRecord:
    """What one stored version is. The same values live in S3 (object metadata) and MongoDB."""

    project: str
    version: int
    sha256: str
    size_bytes: int
    uploaded_at: dt.datetime
    metadata: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str = ""
    content_type: str = layout.SCRIPT_CONTENT_TYPE
    upload_id: str = ""
    """Unique per upload attempt: tells an upload its own object from a racer's after a lost
    response (a conditional put retried by the SDK answers 412 to its own first write)."""
    owner: str = ""
    """The project's owner when the version was written (cadpipe.ownership); "" for none."""

    @property
    def key(self) -> str:
        return layout.script_key(self.project, self.version)

    @property
    def fingerprint(self) -> str:
        return request_fingerprint(self.sha256, self.metadata)


def new_record(
    script: ValidScript, version: int, uploaded_at: dt.datetime, upload_id: str
) -> VersionRecord:
    return VersionRecord(
        project=script.project,
        version=version,
        sha256=script.sha256,
        size_bytes=len(script.body),
        uploaded_at=utc_ms(uploaded_at),
        metadata=dict(script.metadata),
        idempotency_key=script.idempotency_key,
        upload_id=upload_id,
        owner=script.owner,
    )


# S3 user metadata (x-amz-meta-*), lower case as S3 returns it.
META_SHA256 = "sha256"
META_UPLOADED_AT = "uploaded-at"
META_CALLER = "cadpipe-metadata"
META_IDEMPOTENCY_KEY = "idempotency-key"
META_UPLOAD_ID = "upload-id"
META_OWNER = ownership.S3_OWNER_METADATA


def s3_metadata(record: VersionRecord) -> dict[str, str]:
    meta = {
        META_SHA256: record.sha256,
        META_UPLOADED_AT: record.uploaded_at.isoformat(timespec="milliseconds"),
    }
    if record.metadata:
        meta[META_CALLER] = encode_metadata(record.metadata)
    if record.idempotency_key:
        meta[META_IDEMPOTENCY_KEY] = record.idempotency_key
    if record.upload_id:
        meta[META_UPLOAD_ID] = record.upload_id
    if record.owner:
        meta[META_OWNER] = record.owner
    return meta


def record_from_s3(
    project: str,
    version: int,
    *,
    metadata: Mapping[str, str],
    size_bytes: int,
    content_type: str,
    last_modified: dt.datetime,
    sha256: str = "",
) -> VersionRecord:
    """A version as S3 describes it. Scripts written before cadpipe (or by hand) carry no
    metadata: the caller then passes the sha256 it computed, and S3's LastModified stands in
    for uploaded_at."""
    uploaded_at = last_modified
    if raw := metadata.get(META_UPLOADED_AT):
        try:
            uploaded_at = dt.datetime.fromisoformat(raw)
        except ValueError:
            pass
    if uploaded_at.tzinfo is None:
        uploaded_at = uploaded_at.replace(tzinfo=dt.UTC)
    return VersionRecord(
        project=project,
        version=version,
        sha256=metadata.get(META_SHA256) or sha256,
        size_bytes=size_bytes,
        uploaded_at=utc_ms(uploaded_at),
        metadata=decode_metadata(metadata[META_CALLER]) if META_CALLER in metadata else {},
        idempotency_key=metadata.get(META_IDEMPOTENCY_KEY, ""),
        content_type=content_type or layout.SCRIPT_CONTENT_TYPE,
        upload_id=metadata.get(META_UPLOAD_ID, ""),
        owner=metadata.get(META_OWNER, ""),
    )


# --- events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxEntry:
    """An event to publish on JetStream, recorded in MongoDB before the upload returns."""

    msg_id: str
    subject: str
    payload: bytes
    project: str
    version: int
    request_id: str = ""
    """The upload's request id, sent as the X-Request-Id header so that the logs of the
    workers and watchers handling the version carry it."""


def uploaded_event(record: VersionRecord, request_id: str = "") -> OutboxEntry:
    event = events_pb2.ScriptUploaded(
        project=record.project,
        version=record.version,
        key=record.key,
        sha256=record.sha256,
        size_bytes=record.size_bytes,
        uploaded_at=to_timestamp(record.uploaded_at),
        owner=record.owner,
    )
    return OutboxEntry(
        msg_id=messaging.uploaded_msg_id(record.project, record.version),
        subject=messaging.uploaded_subject(record.project),
        payload=messaging.encode(event),
        project=record.project,
        version=record.version,
        request_id=request_id,
    )


# --- listing -------------------------------------------------------------------------------

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    """0 means the default; above the maximum is clamped (AIP-158); negative is an error."""
    if requested < 0:
        raise errors.InvalidArgument(
            f"page_size must not be negative, got {requested}", field="page_size"
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(project: str, after_version: int) -> str:
    raw = json.dumps({"p": project, "a": after_version}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, project: str) -> int:
    """The version the previous page ended with; errors.InvalidArgument for a token not made by
    encode_page_token for this project."""
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = data["a"]
        if data["p"] != project or not isinstance(after, int) or after < 0:
            raise ValueError
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise errors.InvalidArgument(
            "page_token is not one this listing returned", field="page_token"
        ) from None
    return int(after)


# --- project listing -----------------------------------------------------------------------

DEFAULT_PROJECTS_PAGE_SIZE = 50
MAX_PROJECTS_PAGE_SIZE = 200


@dataclass(frozen=True)
class ProjectSummary:
    """A project as the index knows it: what ListProjects shows."""

    project: str
    latest: int
    updated_at: dt.datetime
    created_at: dt.datetime | None = None


@dataclass(frozen=True)
class ProjectCursor:
    """Where a page of projects ended: newest activity first, then by name."""

    updated_at: dt.datetime
    project: str


def projects_page_size(requested: int) -> int:
    if requested < 0:
        raise errors.InvalidArgument(
            f"page_size must not be negative, got {requested}", field="page_size"
        )
    return min(requested or DEFAULT_PROJECTS_PAGE_SIZE, MAX_PROJECTS_PAGE_SIZE)


def encode_projects_token(cursor: ProjectCursor) -> str:
    millis = int(cursor.updated_at.timestamp() * 1000)
    raw = json.dumps({"u": millis, "p": cursor.project}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_projects_token(token: str) -> ProjectCursor | None:
    """None for the first page; errors.InvalidArgument for a token ListProjects did not make."""
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        millis, project = data["u"], data["p"]
        if not isinstance(millis, int) or not isinstance(project, str):
            raise ValueError
        moment = dt.datetime.fromtimestamp(millis / 1000, dt.UTC)
    except (ValueError, KeyError, TypeError, OverflowError, OSError, binascii.Error):
        raise errors.InvalidArgument(
            "page_token is not one this listing returned", field="page_token"
        ) from None
    return ProjectCursor(moment, project)


# --- idempotency ---------------------------------------------------------------------------

ClaimState = Literal["pending", "done"]


@dataclass(frozen=True)
class Claim:
    """Who owns an idempotency key of a project, and what it produced.

    `from_version` is the latest version known when the claim was taken: if the owner dies, the
    version it may have written is above it, which bounds the search of whoever takes over.
    """

    project: str
    key: str
    owner: str
    fingerprint: str
    created_at: dt.datetime
    from_version: int = 0
    state: ClaimState = "pending"
    version: int = 0

    def is_stale(self, now: dt.datetime, stale_after: dt.timedelta) -> bool:
        return self.state == "pending" and now - self.created_at > stale_after
