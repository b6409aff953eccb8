"""The watcher's rules, with no I/O: the status state machine, deciding a version's outcome from
what S3 holds for it, when to look again, and the messages built from a job.

A job is one version of one project. It starts `queued` (uploaded, no worker has started it),
moves to `processing` when a worker's started record appears in S3 (cadpipe/started.py), and
ends in exactly one of `completed`, `error` or `timeout`; a terminal state is final. What
decides it:

    our JSON marker                     -> its status (completed or error), outputs, log, error
    an empty (older-contract) marker    -> completed, outputs listed from output/{p}/v{N}/
    an _error_ log and no marker        -> error, once the log has been there a short grace
    started, and started > timeout ago  -> timeout (the processing timeout runs from the start)
    never started, uploaded > queue
      limit ago                         -> timeout, "never started", once the watcher's expiry
                                           won the started record (the version is never run)
    anything else                       -> still queued or processing; look again later
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Literal

from cadpipe import errors, layout
from cadpipe.marker import Marker, MarkerOutput
from cadpipe.started import StartedRecord

JobState = Literal["queued", "processing", "completed", "error", "timeout"]
TerminalState = Literal["completed", "error", "timeout"]
QUEUED: JobState = "queued"
PROCESSING: JobState = "processing"
PENDING_STATES: tuple[JobState, ...] = (QUEUED, PROCESSING)
TERMINAL_STATES: tuple[TerminalState, ...] = ("completed", "error", "timeout")
QUEUE_TIMEOUT_REASON = "queue_timeout"
NO_SCRIPTS = "no_scripts"
"""GetStatus's state for a project with no job at all."""

REPORT_FORMAT = "json"
ERROR_SUMMARY_CHARS = 2000
LEGACY_NO_OUTPUTS = "finished without outputs"
"""An older-contract (empty) marker with no CAD file under output/{p}/v{N}/."""


class InvalidTransition(ValueError):
    """A state change the state machine does not allow."""


def check_transition(current: str, new: str) -> None:
    """queued -> processing; queued | processing -> completed | error | timeout; nothing else."""
    allowed = (current == QUEUED and new == PROCESSING) or (
        current in PENDING_STATES and new in TERMINAL_STATES
    )
    if not allowed:
        raise InvalidTransition(f"a job cannot move from {current!r} to {new!r}")


def check_version(version: int, *, allow_latest: bool = True) -> int:
    if version >= 1 or (version == 0 and allow_latest):
        return version
    if allow_latest:
        raise errors.InvalidArgument(
            f"version must be 1 or more, or 0 for the latest (got {version})"
        )
    raise errors.InvalidArgument(f"version must be 1 or more (got {version})")


def check_project(project: str) -> str:
    try:
        return layout.check_project(project)
    except layout.InvalidProject as error:
        raise errors.InvalidArgument(str(error)) from None


@dataclass(frozen=True)
class Job:
    """One version's processing status, as the jobs collection holds it."""

    project: str
    version: int
    state: JobState
    uploaded_at: dt.datetime
    script_key: str = ""
    outputs: tuple[MarkerOutput, ...] = ()
    log_key: str = ""
    error: str = ""
    exit_reason: str = ""
    finished_at: dt.datetime | None = None
    detected_at: dt.datetime | None = None
    duration_seconds: float = 0.0
    event_published: bool = False
    project_owner: str = ""
    """Who owns the project (the uploaded event says; cadpipe.ownership): for operators."""
    started_at: dt.datetime | None = None
    """When a worker started it (its started record); None while queued, or when a worker of
    the older contract runs it (it writes no record)."""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def pending(self) -> bool:
        return self.state in PENDING_STATES

    @property
    def clock_start(self) -> dt.datetime:
        """Where the processing timeout counts from: the start, else the upload (a job stored
        as `processing` before there were started records)."""
        return self.started_at or self.uploaded_at

    @property
    def formats(self) -> list[str]:
        return formats_of(self.outputs)


def new_job(
    project: str,
    version: int,
    *,
    uploaded_at: dt.datetime,
    script_key: str = "",
    project_owner: str = "",
) -> Job:
    check_project(project)
    check_version(version, allow_latest=False)
    return Job(
        project=project,
        version=version,
        state=QUEUED,
        uploaded_at=uploaded_at,
        script_key=script_key or layout.script_key(project, version),
        project_owner=project_owner,
    )


# --- what S3 holds for a pending version ---------------------------------------------------


@dataclass(frozen=True)
class LogObject:
    """A log file of the bucket contract, with its parsed name."""

    key: str
    parsed: layout.LogName
    size_bytes: int = 0

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Found:
    """What one check of a pending version found in S3."""

    marker: Marker | None = None
    marker_written_at: dt.datetime | None = None
    outputs: tuple[MarkerOutput, ...] = ()
    """Listed under output/{p}/v{N}/; read only for an older-contract (empty) marker."""
    logs: tuple[LogObject, ...] = ()
    """The version's logs; read when there is no marker, or a marker that names no log."""
    started: StartedRecord | None = None
    """The started record; read while the job is queued."""
    logs_read: bool = True
    """False for a light look (Look.logs off): the logs were not listed, so their absence
    says nothing and the look decides only from a marker or an expired started record."""

    @property
    def error_logs(self) -> list[LogObject]:
        return sorted((g for g in self.logs if g.parsed.level == "error"), key=_log_order)


@dataclass(frozen=True)
class Outcome:
    state: TerminalState
    finished_at: dt.datetime
    outputs: tuple[MarkerOutput, ...] = ()
    log_key: str = ""
    error: str = ""
    exit_reason: str = ""
    needs_error_summary: bool = False
    """The error comes from an older-contract error log: summarise that log's end."""
    needs_expiry: bool = False
    """A queue timeout: it holds only once the watcher's expiry won the started record."""


@dataclass(frozen=True)
class Policy:
    timeout: dt.timedelta
    error_log_grace: dt.timedelta
    queue_timeout: dt.timedelta = dt.timedelta(minutes=30)


def start(job: Job, record: StartedRecord) -> Job:
    """The queued job a worker started."""
    check_transition(job.state, PROCESSING)
    return replace(job, state=PROCESSING, started_at=record.at)


def decide(
    job: Job,
    found: Found,
    *,
    now: dt.datetime,
    policy: Policy,
    error_log_seen_since: dt.datetime | None = None,
) -> Outcome | None:
    """The outcome of a pending job from what S3 holds for it, or None while it is undecided.

    error_log_seen_since: when this watcher first saw an _error_ log with no marker. A worker may
    write its error log a moment before its marker (ours does, and its marker says more), so
    such a log decides only once it has stood alone for the grace period, or at the timeout.
    """
    if found.marker is not None:
        return _from_marker(job, found)
    if found.started is not None and found.started.expired:
        return Outcome(
            state="timeout",
            finished_at=found.started.at,
            log_key=_latest_log_key(found.logs),
            error=found.started.reason or "never started",
            exit_reason=QUEUE_TIMEOUT_REASON,
        )
    if not found.logs_read:
        return None  # a light look: the error log and the timeouts wait for a full one
    if found.started is not None:
        started_at: dt.datetime | None = found.started.at
    else:
        started_at = job.clock_start if job.state == PROCESSING else None
    if started_at is not None:
        timed_out = now - started_at >= policy.timeout
    else:
        timed_out = now - job.uploaded_at >= policy.queue_timeout
    error_logs = found.error_logs
    if error_logs:
        since = error_log_seen_since or now
        if timed_out or now - since >= policy.error_log_grace:
            latest = error_logs[-1]
            return Outcome(
                state="error",
                finished_at=latest.parsed.written_at,
                log_key=latest.key,
                exit_reason="error_log",
                needs_error_summary=True,
            )
        return None
    if timed_out and started_at is None:
        waited = (now - job.uploaded_at).total_seconds()
        return Outcome(
            state="timeout",
            finished_at=now,
            log_key=_latest_log_key(found.logs),
            error=f"never started: waited {waited:.0f} s in the queue "
            f"(the limit is {policy.queue_timeout.total_seconds():g} s)",
            exit_reason=QUEUE_TIMEOUT_REASON,
            needs_expiry=True,
        )
    if timed_out:
        return Outcome(
            state="timeout",
            finished_at=now,
            log_key=_latest_log_key(found.logs),
            error=f"no result {policy.timeout.total_seconds():g} s after the start",
            exit_reason="timeout",
        )
    return None


def _from_marker(job: Job, found: Found) -> Outcome:
    marker = found.marker
    assert marker is not None
    listed = marker.outputs if not marker.legacy else found.outputs
    outputs = own_outputs(job.project, job.version, listed)
    finished_at = _parse_time(marker.finished_at) or found.marker_written_at or job.uploaded_at
    log_key = marker.log_key if _is_own_log(job, marker.log_key) else ""
    if not log_key:
        log_key = _latest_log_key(found.logs, prefer_error=marker.status == "error")
    if marker.legacy and not any(o.format in layout.OUTPUT_FORMATS for o in outputs):
        return _legacy_without_outputs(job, found, finished_at)
    if marker.status == "error":
        reason = marker.exit_reason or "error"
        return Outcome(
            state="error",
            finished_at=finished_at,
            outputs=outputs,
            log_key=log_key,
            error=marker.error or f"the worker reported an error ({reason})",
            exit_reason=reason,
        )
    return Outcome(
        state="completed",
        finished_at=finished_at,
        outputs=outputs,
        log_key=log_key,
        exit_reason=marker.exit_reason or ("legacy_marker" if marker.legacy else "ok"),
    )


def _legacy_without_outputs(job: Job, found: Found, finished_at: dt.datetime) -> Outcome:
    """An empty marker says "finished", not "succeeded": the older contract has no way to report
    a failure except an _error_ log, which such workers may write beside the marker. A version
    that left no CAD file has nothing to download, so it is an error, with its log linked (the
    error log when there is one) for the user to see why."""
    return Outcome(
        state="error",
        finished_at=finished_at,
        log_key=_latest_log_key(found.logs, prefer_error=True),
        error=LEGACY_NO_OUTPUTS,
        exit_reason="no_outputs",
    )


def own_outputs(
    project: str, version: int, outputs: tuple[MarkerOutput, ...] | list[MarkerOutput]
) -> tuple[MarkerOutput, ...]:
    """Only files under output/{p}/v{N}/: a marker can never hand out another version's file."""
    prefix = layout.output_prefix(project, version)
    return tuple(
        sorted(
            (o for o in outputs if o.key.startswith(prefix) and "/" not in o.key[len(prefix) :]),
            key=lambda o: o.name,
        )
    )


def _is_own_log(job: Job, key: str) -> bool:
    parsed = layout.parse_log_key(key) if key else None
    return parsed is not None and (parsed.project, parsed.version) == (job.project, job.version)


def _log_order(log: LogObject) -> tuple[dt.datetime, str]:
    return (log.parsed.written_at, log.key)


def _latest_log_key(logs: tuple[LogObject, ...], *, prefer_error: bool = False) -> str:
    ordered = sorted(logs, key=_log_order)
    if prefer_error and any(g.parsed.level == "error" for g in ordered):
        ordered = [g for g in ordered if g.parsed.level == "error"]
    return ordered[-1].key if ordered else ""


def _parse_time(value: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def summarize_error_log(text: str, *, limit: int = ERROR_SUMMARY_CHARS) -> str:
    """The end of an error log (where tracebacks end), at most `limit` characters."""
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    summary = "\n".join(lines)
    if len(summary) > limit:
        summary = "..." + summary[-(limit - 3) :]
    return summary or "the worker wrote an empty error log"


def with_error_summary(outcome: Outcome, log_text: str | None) -> Outcome:
    if log_text is None:
        error = f"the worker wrote an error log ({outcome.log_key}) and no marker"
    else:
        error = summarize_error_log(log_text)
    return replace(outcome, error=error, needs_error_summary=False)


def finish(job: Job, outcome: Outcome, *, detected_at: dt.datetime) -> Job:
    """The job in its terminal state. Its duration runs from the upload to the worker's finish
    (to the detection for a timeout): what the user waited."""
    check_transition(job.state, outcome.state)
    end = outcome.finished_at if outcome.state != "timeout" else detected_at
    return replace(
        job,
        state=outcome.state,
        outputs=outcome.outputs,
        log_key=outcome.log_key,
        error=outcome.error,
        exit_reason=outcome.exit_reason,
        finished_at=outcome.finished_at,
        detected_at=detected_at,
        duration_seconds=max(0.0, (end - job.uploaded_at).total_seconds()),
        event_published=False,
    )


# --- when to look again, and at what ---------------------------------------------------


@dataclass(frozen=True)
class PollPolicy:
    interval: float
    """Light checks of a young processing version (a GET of its marker)."""
    max_interval: float
    backoff_ratio: float
    queued_interval: float | None = None
    """Light checks of a queued version (a GET of its started record); the worker's start
    nudge checks at once. None: `interval`."""
    full_interval: float | None = None
    """Full looks (marker, started record, the version's logs): how an older-contract worker,
    which writes no started record and may leave only an _error_ log, is seen. None:
    every check is a full look (as before light checks existed)."""
    queued_reads_per_second: float | None = None
    """S3 reads per second, about, for all queued versions together, whatever their number:
    half for light checks (1 read), half for full looks (3 reads); each queued version's
    intervals stretch to share them. None: no such bound (each version's own intervals)."""


FULL_LOOK_READS = 3
"""What a full look of a queued version reads: its started record, its marker, its logs."""


def _queued_floor(floor: float, reads_each: int, queued: int, poll: PollPolicy) -> float:
    """A queued version's interval, stretched so that `queued` of them share half of
    `queued_reads_per_second` for checks of `reads_each` reads."""
    if not poll.queued_reads_per_second or queued <= 0:
        return floor
    return max(floor, queued * reads_each / (poll.queued_reads_per_second / 2))


@dataclass(frozen=True)
class Look:
    """What one check reads in S3. A light look reads one exact key: the started record while
    the version is queued, its marker once started. A full look reads the marker, the started
    record while queued, and lists the version's logs while there is no marker."""

    started: bool
    marker: bool
    logs: bool

    @property
    def full(self) -> bool:
        return self.marker and self.logs


def plan_look(job: Job, *, full: bool) -> Look:
    queued = job.state == QUEUED
    if full:
        return Look(started=queued, marker=True, logs=True)
    if queued:
        return Look(started=True, marker=False, logs=False)
    return Look(started=False, marker=True, logs=False)


def _backoff(age: float, floor: float, poll: PollPolicy) -> float:
    return min(max(floor, age * poll.backoff_ratio), max(poll.max_interval, floor))


def _deadlines(
    job: Job,
    *,
    now: dt.datetime,
    policy: Policy,
    error_log_seen_since: dt.datetime | None,
) -> list[float]:
    age = max(0.0, (now - job.uploaded_at).total_seconds())
    if job.state == QUEUED:
        deadlines = [policy.queue_timeout.total_seconds() - age]
    else:
        running = max(0.0, (now - job.clock_start).total_seconds())
        deadlines = [policy.timeout.total_seconds() - running]
    if error_log_seen_since is not None:
        grace_left = policy.error_log_grace - (now - error_log_seen_since)
        deadlines.append(grace_left.total_seconds())
    return deadlines


def next_check_in(
    job: Job,
    *,
    now: dt.datetime,
    poll: PollPolicy,
    policy: Policy,
    error_log_seen_since: dt.datetime | None = None,
    queued: int = 0,
) -> float:
    """Seconds until the next light check: `interval` while the version is young
    (`queued_interval` while it is queued, longer when many are: `queued` versions share
    `queued_reads_per_second`), then a fraction of its age up to `max_interval`; never past its
    timeout (from the start; the queue limit while queued) or the end of an error log's
    grace."""
    age = max(0.0, (now - job.uploaded_at).total_seconds())
    floor = poll.interval
    if job.state == QUEUED:
        if poll.queued_interval is not None:
            floor = poll.queued_interval
        floor = _queued_floor(floor, 1, queued, poll)
    delay = _backoff(age, floor, poll)
    deadlines = _deadlines(job, now=now, policy=policy, error_log_seen_since=error_log_seen_since)
    return max(0.0, min(delay, *deadlines))


def next_full_look_in(
    job: Job,
    *,
    now: dt.datetime,
    poll: PollPolicy,
    policy: Policy,
    error_log_seen_since: dt.datetime | None = None,
    queued: int = 0,
) -> float:
    """Seconds until the next full look: `full_interval` (longer for a queued version when
    many are queued), then a fraction of the version's age up to `max_interval`; never past
    its timeout or an error log's grace, which only a full look decides."""
    age = max(0.0, (now - job.uploaded_at).total_seconds())
    floor = poll.interval if poll.full_interval is None else poll.full_interval
    if job.state == QUEUED:
        floor = _queued_floor(floor, FULL_LOOK_READS, queued, poll)
    delay = _backoff(age, floor, poll)
    deadlines = _deadlines(job, now=now, policy=policy, error_log_seen_since=error_log_seen_since)
    return max(0.0, min(delay, *deadlines))


# --- outputs, formats and logs --------------------------------------------------------------


def formats_of(outputs: tuple[MarkerOutput, ...] | list[MarkerOutput]) -> list[str]:
    """The CAD formats among the outputs, sorted, without duplicates (report.json is not one)."""
    return sorted({o.format for o in outputs if o.format in layout.OUTPUT_FORMATS})


def output_from_listing(project: str, version: int, key: str, size: int) -> MarkerOutput | None:
    """An output file listed under output/{p}/v{N}/ (older contract), or None for a file that is
    neither a CAD format nor the report."""
    prefix = layout.output_prefix(project, version)
    name = key[len(prefix) :] if key.startswith(prefix) else ""
    if not name or "/" in name:
        return None
    fmt = layout.output_format(name)
    if fmt is None:
        if name != layout.REPORT_NAME:
            return None
        fmt, content_type = REPORT_FORMAT, "application/json"
    else:
        content_type = layout.OUTPUT_FORMATS[fmt]
    return MarkerOutput(
        key=key, name=name, format=fmt, size_bytes=size, sha256="", content_type=content_type
    )


def normalise_format(fmt: str) -> str:
    """A requested format, aliases resolved (stp -> step, igs -> iges), case-insensitive."""
    cleaned = fmt.strip().lstrip(".")
    found = layout.output_format(f"file.{cleaned}") if cleaned and "." not in cleaned else None
    if found is None:
        known = ", ".join(sorted([*layout.OUTPUT_FORMATS, *layout.FORMAT_ALIASES]))
        raise errors.InvalidArgument(f"unknown format {fmt!r}; known formats: {known}")
    return found


def pick_output(
    project: str, version: int, outputs: tuple[MarkerOutput, ...], fmt: str
) -> MarkerOutput:
    """The version's file of that format (the first by name when it made several). A version
    without it is errors.NotFound, saying which formats it has: never another version's file."""
    own = own_outputs(project, version, outputs)
    mine = [o for o in own if o.format == fmt]
    if not mine:
        has = formats_of(own)
        produced = f"it produced: {', '.join(has)}" if has else "it produced no CAD file"
        raise errors.NotFound(f"version {version} of {project} has no {fmt} output; {produced}")
    return mine[0]


def log_object(project: str, key: str, size: int) -> LogObject | None:
    """A listed key as a log of this project, or None when it is not one."""
    parsed = layout.parse_log_key(key)
    if parsed is None or parsed.project != project:
        return None
    return LogObject(key=key, parsed=parsed, size_bytes=size)


def log_key_for_name(project: str, name: str) -> str:
    """The key of a log named by GetLog; InvalidArgument unless it is a log of this project."""
    if not name or "/" in name or "\\" in name:
        raise errors.InvalidArgument(f"invalid log name {name!r}")
    key = layout.logs_prefix(project) + name
    parsed = layout.parse_log_key(key)
    if parsed is None or parsed.project != project:
        raise errors.InvalidArgument(
            f"{name!r} is not a log name of {project} "
            f"(expected {project}_v{{N}}_{{info|error}}_{{YYYYmmdd_HHMMSS}}.log)"
        )
    return key


def sort_logs(logs: list[LogObject]) -> list[LogObject]:
    return sorted(logs, key=lambda g: (g.parsed.version, g.parsed.written_at, g.key))


def tail_text(body: bytes, limit: int) -> str:
    """A log's content, its last `limit` bytes when it is longer (the end says what failed)."""
    if len(body) <= limit:
        return body.decode("utf-8", errors="replace")
    dropped = len(body) - limit
    return f"[... {dropped} earlier bytes not shown ...]\n" + body[-limit:].decode(
        "utf-8", errors="replace"
    )
