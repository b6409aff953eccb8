"""The watcher's proto messages built from its domain: the completion event of a job, the
status GetStatus and WatchStatus send, output files; and which status news a watcher of a
project is sent (supersedes)."""

from __future__ import annotations

from cadpipe.marker import MarkerOutput
from cadpipe.timestamps import to_timestamp
from cadpipe.v1 import artifacts_pb2, events_pb2, status_pb2
from services.watcher.domain import (
    NO_SCRIPTS,
    PROCESSING,
    QUEUED,
    TERMINAL_STATES,
    InvalidTransition,
    Job,
    formats_of,
)


def output_message(output: MarkerOutput) -> artifacts_pb2.OutputFile:
    return artifacts_pb2.OutputFile(
        key=output.key,
        name=output.name,
        format=output.format,
        size_bytes=output.size_bytes,
        sha256=output.sha256,
        content_type=output.content_type,
    )


def output_from_message(message: artifacts_pb2.OutputFile) -> MarkerOutput:
    return MarkerOutput(
        key=message.key,
        name=message.name,
        format=message.format,
        size_bytes=message.size_bytes,
        sha256=message.sha256,
        content_type=message.content_type,
    )


def job_finished(job: Job) -> events_pb2.JobFinished:
    """The completion event of a decided job."""
    if not job.terminal:
        raise InvalidTransition(f"{job.project} v{job.version} is still {job.state}")
    return events_pb2.JobFinished(
        project=job.project,
        version=job.version,
        status=job.state,
        outputs=[output_message(o) for o in job.outputs],
        log_key=job.log_key,
        error=job.error,
        uploaded_at=to_timestamp(job.uploaded_at),
        finished_at=to_timestamp(job.finished_at),
        detected_at=to_timestamp(job.detected_at),
        duration_seconds=job.duration_seconds,
    )


def project_status(project: str, job: Job | None) -> status_pb2.ProjectStatus:
    """GetStatus's answer: the job's status, or `no_scripts` when the project has no job."""
    if job is None:
        return status_pb2.ProjectStatus(project=project, state=NO_SCRIPTS)
    return status_pb2.ProjectStatus(
        project=job.project,
        version=job.version,
        state=job.state,
        uploaded_at=to_timestamp(job.uploaded_at),
        finished_at=to_timestamp(job.finished_at),
        detected_at=to_timestamp(job.detected_at),
        formats=job.formats,
        outputs=[output_message(o) for o in job.outputs],
        error=job.error,
        log_key=job.log_key,
        duration_seconds=job.duration_seconds,
        started_at=to_timestamp(job.started_at),
    )


def status_from_uploaded(event: events_pb2.ScriptUploaded) -> status_pb2.ProjectStatus:
    """A new version is queued (from the uploaded event, before any job doc may exist)."""
    status = status_pb2.ProjectStatus(project=event.project, version=event.version, state=QUEUED)
    if event.HasField("uploaded_at"):
        status.uploaded_at.CopyFrom(event.uploaded_at)
    return status


def status_from_started(event: events_pb2.WorkerStarted) -> status_pb2.ProjectStatus:
    """A worker says it started a version (its nudge; the replica checking the version reads
    the started record and stores the start)."""
    return status_pb2.ProjectStatus(project=event.project, version=event.version, state=PROCESSING)


def status_from_finished(event: events_pb2.JobFinished) -> status_pb2.ProjectStatus:
    outputs = [output_from_message(o) for o in event.outputs]
    status = status_pb2.ProjectStatus(
        project=event.project,
        version=event.version,
        state=event.status,
        formats=formats_of(outputs),
        outputs=list(event.outputs),
        error=event.error,
        log_key=event.log_key,
        duration_seconds=event.duration_seconds,
    )
    for name in ("uploaded_at", "finished_at", "detected_at"):
        if event.HasField(name):
            getattr(status, name).CopyFrom(getattr(event, name))
    return status


def supersedes(new: status_pb2.ProjectStatus, last: status_pb2.ProjectStatus | None) -> bool:
    """Whether a watcher of the project should be sent `new` after `last`: a later version, or
    the same version moving on (queued -> processing -> completed | error | timeout, or
    queued straight to an end). Repeats (our own change and its echo on NATS) and news of
    older versions are not changes of the project's status."""
    if last is None or last.state == NO_SCRIPTS:
        return new.state != NO_SCRIPTS
    if new.version != last.version:
        return new.version > last.version
    return _progress(new.state) > _progress(last.state)


def _progress(state: str) -> int:
    if state == QUEUED:
        return 1
    if state == PROCESSING:
        return 2
    return 3 if state in TERMINAL_STATES else 0


def status_from_generation(update: events_pb2.GenerationUpdated) -> status_pb2.ProjectStatus:
    """A generation's progress as the project's stream carries it (status.proto): state is the
    generation's, version the one of its round under way or the one that succeeded."""
    g = update.generation
    rounds = list(g.rounds)
    version = g.result_version or (rounds[-1].version if rounds else 0)
    if g.error:
        message = g.error
    else:
        feedback = rounds[-1].feedback.strip() if rounds else ""
        message = feedback.splitlines()[0] if feedback else ""
    return status_pb2.ProjectStatus(
        project=g.project,
        version=version,
        state=g.state,
        error=g.error,
        generation=status_pb2.GenerationProgress(
            id=g.id,
            state=g.state,
            round=g.round,
            max_rounds=g.max_rounds,
            version=version,
            message=message,
            sequence=update.sequence,
        ),
    )


def generation_news(new: status_pb2.ProjectStatus, seen: dict[str, int]) -> bool:
    """Whether a generation's update is news to a watcher that was sent `seen` (the last
    sequence per generation): later updates only; repeats and late duplicates are dropped.
    Records it when it is."""
    progress = new.generation
    if progress.sequence <= seen.get(progress.id, 0):
        return False
    seen[progress.id] = progress.sequence
    return True
