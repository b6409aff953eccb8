"""Running one version: script from S3 into a scratch directory, the sandbox, then outputs,
report, log and (last) the processed marker into S3. The ports are small protocols so that the
unit tests drive this with fakes.

The intake gives each job one of the worker's cores; the job says when FreeCAD is done with it
(`core_done`), and stores its results after that while another job's FreeCAD runs."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cadpipe import layout
from cadpipe import started as started_record
from cadpipe.marker import Marker, MarkerOutput, MarkerStatus
from services.worker.domain.job import Job, Limits
from services.worker.domain.joblog import LogRecord, render_log
from services.worker.domain.outputs import OutputPlan, plan_outputs
from services.worker.domain.report import finish_report
from services.worker.domain.verdict import (
    SandboxOutcome,
    Verdict,
    judge,
    no_outputs_verdict,
    outputs_over_total,
)
from services.worker.sandbox import Sandbox, SandboxJob
from services.worker.scratch import JobDir

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"


class Storage(Protocol):
    async def get_bytes(self, key: str) -> bytes | None: ...

    async def exists(self, key: str) -> bool: ...

    async def put_bytes(self, key: str, body: bytes, content_type: str) -> None: ...

    async def put_file(self, key: str, path: str, content_type: str) -> None: ...

    async def put_if_absent(self, key: str, body: bytes, content_type: str) -> bool: ...

    async def list_keys(self, prefix: str) -> list[str]: ...

    async def delete(self, key: str) -> None: ...


class Scratch(Protocol):
    def new_job(self, job: Job, script: bytes) -> JobDir: ...


class Notifier(Protocol):
    async def worker_started(self, project: str, version: int) -> None: ...

    async def worker_finished(self, project: str, version: int) -> None: ...


class ScriptMissing(LookupError):
    """The event names a script the bucket does not hold."""


class NeverToRun(Exception):
    """The watcher ended the version for waiting too long in the queue (its started record
    says `expired`): it must never run. The caller acks the message."""


@dataclass(frozen=True)
class JobConfig:
    limits: Limits
    max_deliver: int
    max_outputs: int
    max_log_stream_bytes: int
    worker_name: str
    hidden_paths: tuple[str, ...] = ()
    max_output_bytes: int = 256 * 1024 * 1024


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class JobService:
    def __init__(
        self,
        storage: Storage,
        sandbox: Sandbox,
        scratch: Scratch,
        notifier: Notifier,
        config: JobConfig,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._storage = storage
        self._sandbox = sandbox
        self._scratch = scratch
        self._notifier = notifier
        self._config = config
        self._clock = clock

    async def handle(
        self, job: Job, attempt: int, core_done: Callable[[], None] = lambda: None
    ) -> Marker | None:
        """Finishes the version, exactly once as far as the bucket shows: a version with a
        marker is left alone (a redelivery after the marker was written). Before the script
        runs, the started record is written (If-None-Match: *): losing it to the watcher's
        queue expiry means the version is never run (NeverToRun). The last delivery the stream
        allows finishes a version some earlier run started as an error without running it
        again, since those runs never got to an end (their worker died or was stopped
        mid-job); a version no run ever started is run (its deliveries went to outages).
        Returns the marker written, or None when there was one already. Raises when S3 or
        the sandbox fails: the caller retries. `core_done` is called once FreeCAD is done (or
        will not run): what is left, storing, needs no core."""
        marker_key = layout.marker_key(job.project, job.version)
        # Both at once: one round trip to S3 instead of two on every job's path.
        finished, script = await asyncio.gather(
            self._storage.exists(marker_key), self._storage.get_bytes(job.script_key)
        )
        if finished:
            logger.info("%s is finished already; not run again", job.name)
            return None
        if script is None:
            raise ScriptMissing(f"{job.script_key} is not in the bucket")
        started_at, started = self._clock(), time.monotonic()
        first_start = await self._take(job, attempt, started_at)
        if attempt >= self._config.max_deliver and not first_start:
            core_done()
            marker = await self._give_up(job, attempt)
        else:
            try:
                await self._notifier.worker_started(job.project, job.version)
            except Exception as error:  # a nudge is best effort; the watcher polls
                logger.warning("could not tell the watcher %s started: %s", job.name, error)
            marker = await self._run(job, attempt, script, started_at, started, core_done)
        try:
            await self._notifier.worker_finished(job.project, job.version)
        except Exception as error:  # a nudge is best effort; the watcher polls
            logger.warning("could not nudge the watcher about %s: %s", job.name, error)
        return marker

    async def _take(self, job: Job, attempt: int, at: dt.datetime) -> bool:
        """Writes the started record; True when this is the version's first start, False when
        an earlier run started it. NeverToRun when the watcher expired it first."""
        key = layout.started_key(job.project, job.version)
        record = started_record.started(at, worker=self._config.worker_name, attempt=attempt)
        if await self._storage.put_if_absent(key, record.to_json(), started_record.CONTENT_TYPE):
            return True
        body = await self._storage.get_bytes(key)
        earlier = started_record.parse(body or b"", written_at=at)
        if earlier.expired:
            logger.warning("%s is not run: %s", job.name, earlier.reason)
            raise NeverToRun(earlier.reason)
        if earlier.worker == self._config.worker_name and earlier.attempt == attempt:
            return True  # this delivery's own start, before an outage put the job back
        logger.info("%s was started before (attempt %d); running it again", job.name, attempt)
        return False

    async def _run(
        self,
        job: Job,
        attempt: int,
        script: bytes,
        started_at: dt.datetime,
        started: float,
        core_done: Callable[[], None],
    ) -> Marker:
        if job.sha256 and hashlib.sha256(script).hexdigest() != job.sha256:
            # Scripts are immutable once written: a different body is not the one uploaded.
            core_done()
            verdict = Verdict(
                "worker_error", f"{job.script_key} does not match the sha256 of its upload"
            )
            return await self._finish(job, attempt, started_at, started, verdict)

        jobdir = await asyncio.to_thread(self._scratch.new_job, job, script)
        try:
            outcome = await self._sandbox.run(
                SandboxJob(
                    id=secrets.token_hex(8),
                    sandbox_dir=jobdir.sandbox_dir,
                    script_name=jobdir.script_name,
                    stdout_path=jobdir.stdout_path,
                    stderr_path=jobdir.stderr_path,
                    identity_files=jobdir.identity_files,
                    uid=jobdir.uid,
                    gid=jobdir.gid,
                    limits=self._config.limits,
                    hidden_paths=self._config.hidden_paths,
                    job_file=jobdir.job_file,
                )
            )
            core_done()  # FreeCAD is done: storing its results needs no core
            return await self._collect(job, attempt, jobdir, outcome, started_at, started)
        finally:
            await asyncio.to_thread(jobdir.remove)

    async def _collect(
        self,
        job: Job,
        attempt: int,
        jobdir: JobDir,
        outcome: SandboxOutcome,
        started_at: dt.datetime,
        started: float,
    ) -> Marker:
        keep = self._config.max_log_stream_bytes
        stdout, stderr = await asyncio.gather(
            asyncio.to_thread(jobdir.read_stream, jobdir.stdout_path, keep),
            asyncio.to_thread(jobdir.read_stream, jobdir.stderr_path, keep),
        )
        verdict = judge(outcome, self._config.limits, stderr)
        plan = OutputPlan(())
        rejected: list[str] = []
        if verdict.ok:
            produced, rejected = await asyncio.to_thread(jobdir.produced_files)
            plan = plan_outputs(job.project, job.version, produced, self._config.max_outputs)
            if not plan.outputs:
                verdict = no_outputs_verdict()
            # By the files' sizes, before a byte is hashed or uploaded (a sparse file is cheap
            # on disk and costly to read and store).
            too_much = outputs_over_total(plan, self._config.max_output_bytes)
            if too_much is not None:
                verdict, plan = too_much, OutputPlan((), plan.ignored)

        stored: list[MarkerOutput] = []
        report_key = ""
        uploads: list[Callable[[], Awaitable[None]]] = []
        if verdict.ok:
            files = await asyncio.to_thread(
                lambda: [jobdir.output_file(o.path, o.size) for o in plan.outputs]
            )
            report = finish_report(
                await asyncio.to_thread(jobdir.read_report),
                plan,
                project=job.project,
                version=job.version,
            )
            report_key = layout.output_key(job.project, job.version, layout.REPORT_NAME)
            uploads = [
                *(
                    functools.partial(self._storage.put_file, o.key, f.path, o.content_type)
                    for o, f in zip(plan.outputs, files, strict=True)
                ),
                functools.partial(
                    self._storage.put_bytes,
                    report_key,
                    json.dumps(report, indent=2).encode(),
                    JSON_CONTENT_TYPE,
                ),
            ]
            stored = [
                MarkerOutput(o.key, o.name, o.format, f.size, f.sha256, o.content_type)
                for o, f in zip(plan.outputs, files, strict=True)
            ]
        if attempt > 1:
            await self._remove_stale_outputs(job, keep={o.key for o in stored} | {report_key})
        return await self._finish(
            job,
            attempt,
            started_at,
            started,
            verdict,
            outcome=outcome,
            plan=plan,
            outputs=stored,
            report_key=report_key,
            ignored=[*plan.ignored, *rejected],
            stdout=stdout,
            stderr=stderr,
            uid=jobdir.uid,
            uploads=uploads,
        )

    async def _remove_stale_outputs(self, job: Job, keep: set[str]) -> None:
        """An earlier attempt may have stored outputs before its worker died; what this attempt
        did not produce must not be mistaken for its result."""
        prefix = layout.output_prefix(job.project, job.version)
        stale = [k for k in await self._storage.list_keys(prefix) if k not in keep]
        await asyncio.gather(*(self._storage.delete(k) for k in stale))

    async def _give_up(self, job: Job, attempt: int) -> Marker:
        logger.error("%s was delivered %d times without finishing; giving up", job.name, attempt)
        await self._remove_stale_outputs(job, keep=set())
        verdict = Verdict(
            "redelivery_limit",
            f"delivered {attempt} times without finishing (the runs before were stopped "
            "mid-job or could not store their results; see the worker's logs); not run again",
        )
        return await self._finish(job, attempt, self._clock(), time.monotonic(), verdict)

    async def _finish(
        self,
        job: Job,
        attempt: int,
        started_at: dt.datetime,
        started: float,
        verdict: Verdict,
        *,
        outcome: SandboxOutcome | None = None,
        plan: OutputPlan | None = None,
        outputs: list[MarkerOutput] | None = None,
        report_key: str = "",
        ignored: list[str] | None = None,
        stdout: str = "",
        stderr: str = "",
        uid: int | None = None,
        uploads: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> Marker:
        """Writes the log (beside the outputs' uploads), then the marker: the marker is the
        word that the version is done, so it goes last, for success and failure alike."""
        status: MarkerStatus = "completed" if verdict.ok else "error"
        finished_at = self._clock()
        duration = time.monotonic() - started
        log_key = layout.log_key(
            job.project, job.version, "info" if verdict.ok else "error", finished_at
        )
        record = LogRecord(
            job=job,
            status=status,
            verdict=verdict,
            attempt=attempt,
            started_at=_iso(started_at),
            finished_at=_iso(finished_at),
            duration_seconds=duration,
            freecad_version=self._sandbox.freecad_version,
            worker=self._config.worker_name,
            sandbox=f"{self._sandbox.mode}; {self._sandbox.isolation.describe(uid)}; "
            f"limits: {self._config.limits.describe()}",
            outcome=outcome,
            outputs=plan.outputs if plan and verdict.ok else (),
            ignored=ignored or (),
            stdout=stdout,
            stderr=stderr,
            notes=[]
            if self._sandbox.isolation.complete
            else ["WEAK SANDBOX: missing " + ", ".join(self._sandbox.isolation.missing())],
        )
        await asyncio.gather(
            *(upload() for upload in uploads),
            self._storage.put_bytes(log_key, render_log(record).encode(), layout.LOG_CONTENT_TYPE),
        )
        marker = Marker(
            status=status,
            outputs=tuple(outputs or ()),
            log_key=log_key,
            report_key=report_key,
            started_at=_iso(started_at),
            finished_at=_iso(finished_at),
            duration_seconds=round(duration, 3),
            freecad_version=self._sandbox.freecad_version,
            exit_reason=verdict.exit_reason,
            error=verdict.error,
            attempts=attempt,
            project=job.project,
            version=job.version,
        )
        # Conditional: should two runs of one version ever overlap (a worker stalled past
        # ack_wait while another took the redelivery), the first marker stands.
        if not await self._storage.put_if_absent(
            layout.marker_key(job.project, job.version), marker.to_json(), JSON_CONTENT_TYPE
        ):
            logger.warning("%s was finished by another run meanwhile; its marker stands", job.name)
            return marker
        logger.info(
            "%s %s (%s) in %.3f s",
            job.name,
            status,
            verdict.exit_reason,
            duration,
            extra={"project": job.project, "version": job.version, "attempt": attempt},
        )
        return marker
