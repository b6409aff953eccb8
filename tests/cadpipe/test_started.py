import datetime as dt

from cadpipe import started

AT = dt.datetime(2026, 12, 7, 6, 0, 0, tzinfo=dt.UTC)


def test_a_start_reads_back() -> None:
    record = started.started(AT, worker="w/1", attempt=2)
    assert started.parse(record.to_json()) == record
    assert not record.expired


def test_an_expiry_says_the_version_never_started() -> None:
    record = started.expired(AT, waited_seconds=1801.2, limit_seconds=1800)
    parsed = started.parse(record.to_json())
    assert parsed.expired
    assert parsed.reason == "never started: waited 1801 s in the queue (the limit is 1800 s)"


def test_a_body_that_is_not_ours_counts_as_a_start() -> None:
    for body in (b"", b"{}", b"[1]", b'{"state": "expired"}', b"\xff"):
        parsed = started.parse(body, written_at=AT)
        assert parsed.state == "started"
        assert parsed.at == AT
