"""The read side the servicers call: status from the jobs collection, outputs, download URLs and
logs from S3 (the truth). Raises cadpipe.errors (InvalidArgument, NotFound) with messages meant
for the user; the server interceptor turns them into gRPC codes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from cadpipe import errors, layout
from cadpipe.callers import ANONYMOUS, Caller
from cadpipe.marker import MarkerOutput
from cadpipe.ownership import Ownership
from cadpipe.v1 import artifacts_pb2, status_pb2
from services.watcher import domain, messages, reports
from services.watcher.domain import LogObject
from services.watcher.ports import JobRepository, ResultReader


@dataclass(frozen=True)
class Outputs:
    project: str
    version: int
    files: tuple[MarkerOutput, ...]


@dataclass(frozen=True)
class Download:
    url: str
    expires_at: dt.datetime
    file: MarkerOutput
    version: int


class Reads:
    def __init__(
        self,
        jobs: JobRepository,
        results: ResultReader,
        *,
        presign_expiry_seconds: int,
        max_log_bytes: int,
        owners: Ownership | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        """owners None: no ownership is known; only unrestricted callers see any project."""
        self._owners = owners or Ownership()
        self._jobs = jobs
        self._results = results
        self._presign_expiry = presign_expiry_seconds
        self._max_log_bytes = max_log_bytes
        self._clock = clock

    async def check_access(self, project: str, caller: Caller) -> None:
        """NotFound, worded as for a project that does not exist, unless the caller may see
        the project (docs/security.md)."""
        await self._owners.check_access(project, caller)

    async def status(
        self, project: str, version: int = 0, caller: Caller = ANONYMOUS
    ) -> status_pb2.ProjectStatus:
        domain.check_project(project)
        domain.check_version(version)
        await self.check_access(project, caller)
        if version == 0:
            return messages.project_status(project, await self._jobs.latest(project))
        job = await self._jobs.get(project, version)
        if job is None:
            raise errors.NotFound(f"{project} has no version {version}")
        return messages.project_status(project, job)

    async def outputs(self, project: str, version: int = 0, caller: Caller = ANONYMOUS) -> Outputs:
        """The outputs of that version, or of the latest completed one, as the marker lists them
        (or, for an older-contract empty marker, as output/{p}/v{N}/ holds them)."""
        domain.check_project(project)
        domain.check_version(version)
        await self.check_access(project, caller)
        if version == 0:
            latest = await self._jobs.latest(project, state="completed")
            if latest is None:
                raise errors.NotFound(f"{project} has no completed version")
            version = latest.version
        marker = await self._results.marker(project, version)
        if marker is None:
            job = await self._jobs.get(project, version)
            if job is None:
                raise errors.NotFound(f"{project} has no version {version}")
            raise errors.NotFound(f"version {version} of {project} has no outputs ({job.state})")
        if marker.status == "error":
            reason = marker.error.splitlines()[-1] if marker.error.strip() else "error"
            raise errors.NotFound(f"version {version} of {project} failed: {reason}")
        listed = (
            marker.outputs
            if not marker.legacy
            else await self._results.list_outputs(project, version)
        )
        return Outputs(project, version, domain.own_outputs(project, version, listed))

    async def report(
        self, project: str, version: int = 0, caller: Caller = ANONYMOUS
    ) -> artifacts_pb2.GeometryReport:
        """What FreeCAD measured of a completed version's outputs (report.json, written by our
        worker; a worker of the older contract writes none: NotFound)."""
        outputs = await self.outputs(project, version, caller)  # access, completed, version
        marker = await self._results.marker(project, outputs.version)
        key = (marker.report_key if marker else "") or layout.output_key(
            project, outputs.version, layout.REPORT_NAME
        )
        body = await self._results.read_text(key)
        if body is None:
            raise errors.NotFound(f"version {outputs.version} of {project} has no geometry report")
        try:
            return reports.geometry_report(project, outputs.version, body)
        except ValueError:
            raise errors.NotFound(
                f"the geometry report of version {outputs.version} of {project} is unreadable"
            ) from None

    async def download(
        self, project: str, fmt: str, version: int = 0, caller: Caller = ANONYMOUS
    ) -> Download:
        domain.check_project(project)
        wanted = domain.normalise_format(fmt)
        outputs = await self.outputs(project, version, caller)
        file = domain.pick_output(project, outputs.version, outputs.files, wanted)
        expires_at = self._clock() + dt.timedelta(seconds=self._presign_expiry)
        url = await self._results.presign(
            file.key, expires_in=self._presign_expiry, filename=file.name
        )
        return Download(url=url, expires_at=expires_at, file=file, version=outputs.version)

    async def logs(
        self, project: str, version: int = 0, caller: Caller = ANONYMOUS
    ) -> list[LogObject]:
        domain.check_project(project)
        domain.check_version(version)
        await self.check_access(project, caller)
        return domain.sort_logs(await self._results.list_logs(project, version or None))

    async def log(
        self, project: str, name: str, caller: Caller = ANONYMOUS
    ) -> tuple[LogObject, str]:
        domain.check_project(project)
        key = domain.log_key_for_name(project, name)
        await self.check_access(project, caller)
        found = await self._results.read_log(project, key)
        if found is None:
            raise errors.NotFound(f"{project} has no log {name}")
        log, body = found
        return log, domain.tail_text(body, self._max_log_bytes)
