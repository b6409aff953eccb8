"""The script service's rules, without any store: validation, S3 metadata, events, page tokens."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from cadpipe import errors, messaging
from cadpipe.v1 import events_pb2
from services.scripts import domain
from services.scripts.domain import Limits, validate_upload

LIMITS = Limits()
GOOD = "import math\nx = math.pi\n"


def rejected(field: str, **kwargs: object) -> str:
    args: dict[str, object] = {
        "project": "demo",
        "script": GOOD,
        "metadata": {},
        "idempotency_key": "",
        "limits": LIMITS,
    }
    args.update(kwargs)
    with pytest.raises(errors.InvalidArgument) as caught:
        validate_upload(**args)  # type: ignore[arg-type]
    assert caught.value.field == field
    return caught.value.message


@pytest.mark.parametrize(
    ("project", "says"),
    [
        ("../x", "only ASCII letters"),
        ("a/b", "only ASCII letters"),
        ("", "empty"),
        ("p" * 65, "65 characters"),
        ("proj\u0430", "only ASCII letters"),  # Cyrillic U+0430, looks like a Latin 'a'
        ("a.b", "only ASCII letters"),
        ("a b", "only ASCII letters"),
    ],
)
def test_project_names_that_could_leave_their_prefix_are_refused(project: str, says: str) -> None:
    assert says in rejected("project", project=project)


def test_a_valid_upload_is_hashed_and_kept_as_bytes() -> None:
    script = validate_upload("My_project-1", GOOD, {"author": "llm"}, "key-1", LIMITS)
    assert script.body == GOOD.encode()
    assert script.sha256 == hashlib.sha256(GOOD.encode()).hexdigest()
    assert script.metadata == {"author": "llm"}
    assert script.idempotency_key == "key-1"


def test_script_bytes_must_be_utf8_and_the_message_says_where() -> None:
    message = rejected("script", script=b"x = '\xff'\n")
    assert "not UTF-8" in message and "0xff at offset 5" in message


def test_a_syntax_error_names_line_and_column() -> None:
    message = rejected("script", script="x = 1\nif x\n    y = 2\n")
    assert "not valid Python: expected ':'" in message
    assert "line 2, column 5" in message


def test_what_only_the_compiler_sees_is_refused_too() -> None:
    assert "'return' outside function" in rejected("script", script="x = 1\nreturn x\n")


def test_nul_bytes_and_empty_scripts_are_refused() -> None:
    assert "null bytes" in rejected("script", script="x = 1\x00\n")
    assert "empty" in rejected("script", script="  \n\n")
    assert "missing" in rejected("script", script=None)


def test_the_size_limit_counts_bytes() -> None:
    small = Limits(max_script_bytes=10)
    validate_upload("p", "x = 'é'\n", {}, "", small)  # 8 characters, 9 bytes
    message = rejected("script", script="x = 'éé'\n", limits=small)  # 9 characters, 11 bytes
    assert "11 bytes; at most 10 allowed" in message


def test_metadata_is_bounded_in_count_key_value_and_encoded_size() -> None:
    many = {f"k{i}": "v" for i in range(33)}
    assert "33 entries; at most 32" in rejected("metadata", metadata=many)
    assert "metadata key 'a.b'" in rejected("metadata", metadata={"a.b": "v"})
    assert "metadata key '$set'" in rejected("metadata", metadata={"$set": "v"})
    assert "metadata key ''" in rejected("metadata", metadata={"": "v"})
    assert "1025 characters" in rejected("metadata", metadata={"k": "v" * 1025})
    # each value fits, but together they exceed what S3 keeps per object
    big = {"a": "x" * 1000, "b": "y" * 1000}
    assert "at most 1536 allowed" in rejected("metadata", metadata=big)
    # non-ASCII is escaped (\\u0430), so it counts 6 bytes a character
    assert "at most 1536 allowed" in rejected("metadata", metadata={"k": "\u0430" * 300})


def test_idempotency_keys_are_printable_ascii() -> None:
    assert "idempotency key" in rejected("idempotency_key", idempotency_key="has space")
    assert "idempotency key" in rejected("idempotency_key", idempotency_key="k" * 129)


def test_a_record_survives_the_trip_through_s3_metadata() -> None:
    record = domain.VersionRecord(
        project="demo",
        version=12,
        sha256="ab" * 32,
        size_bytes=42,
        uploaded_at=domain.utc_ms(dt.datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)),
        metadata={"author": "llm", "prompt": "a bracket, 3 holes \u00e9"},
        idempotency_key="req-7",
        upload_id="u1",
    )
    meta = domain.s3_metadata(record)
    assert all(value.isascii() for value in meta.values())  # HTTP headers
    back = domain.record_from_s3(
        "demo",
        12,
        metadata=meta,
        size_bytes=42,
        content_type="text/x-python",
        last_modified=dt.datetime(2026, 5, 1, 12, 30, 16, tzinfo=dt.UTC),
    )
    assert back == record
    assert back.key == "input/demo/demo_v12.py"
    assert record.uploaded_at.microsecond == 123000


def test_a_script_without_our_metadata_falls_back_to_what_s3_knows() -> None:
    modified = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    record = domain.record_from_s3(
        "old",
        1,
        metadata={},
        size_bytes=3,
        content_type="",
        last_modified=modified,
        sha256="c" * 64,
    )
    assert (record.uploaded_at, record.sha256, record.metadata) == (modified, "c" * 64, {})
    assert record.content_type == "text/x-python"


def test_the_uploaded_event_carries_the_version_and_its_message_id() -> None:
    record = domain.VersionRecord("demo", 3, "ab" * 32, 10, dt.datetime(2026, 5, 1, tzinfo=dt.UTC))
    entry = domain.uploaded_event(record)
    assert entry.msg_id == messaging.uploaded_msg_id("demo", 3) == "demo.v3.uploaded"
    assert entry.subject == messaging.uploaded_subject("demo")
    event = messaging.decode(entry.payload, events_pb2.ScriptUploaded)
    assert (event.project, event.version, event.key, event.size_bytes) == (
        "demo",
        3,
        "input/demo/demo_v3.py",
        10,
    )
    assert event.uploaded_at.ToDatetime(dt.UTC) == record.uploaded_at


def test_page_sizes_and_tokens() -> None:
    assert domain.page_size(0) == 100
    assert domain.page_size(5000) == 1000
    with pytest.raises(errors.InvalidArgument):
        domain.page_size(-1)
    token = domain.encode_page_token("demo", 200)
    assert domain.decode_page_token(token, "demo") == 200
    assert domain.decode_page_token("", "demo") == 0
    for bad in ("garbage!", "e30", domain.encode_page_token("other", 5)):
        with pytest.raises(errors.InvalidArgument) as caught:
            domain.decode_page_token(bad, "demo")
        assert caught.value.field == "page_token"


def test_versions_below_one_are_refused() -> None:
    for bad in (0, -1):
        with pytest.raises(errors.InvalidArgument) as caught:
            domain.check_version(bad)
        assert caught.value.field == "version"
