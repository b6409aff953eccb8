"""The worker's side of the sandbox: starts sandbox_runner.py under FreeCAD's Python and talks to
it in JSON lines. Two ways to get a fresh process per job, same isolation:

- ZygoteSandbox: one long-lived process imports FreeCAD once and forks each job from that clean
  state (about 10 ms instead of about 150 ms of interpreter start and FreeCAD import per job).
- FreshSandbox: a new interpreter per job, which imports FreeCAD itself.

Either way the job is forked from a program that was started with an empty environment and
never holds a credential; the worker's own process is never forked into a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from services.worker.domain.job import Isolation, Limits
from services.worker.domain.verdict import SandboxOutcome

logger = logging.getLogger(__name__)

RUNNER = str(Path(__file__).with_name("sandbox_runner.py"))
READY_TIMEOUT = 60.0
SUPERVISOR_GRACE = 30.0
"""How long past a job's timeout the worker waits for its supervisor before killing it."""


class SandboxUnavailable(RuntimeError):
    """The sandbox process is not there to run a job (the job is retried later)."""


@dataclass(frozen=True)
class SandboxJob:
    id: str
    sandbox_dir: str
    script_name: str
    stdout_path: str
    stderr_path: str
    identity_files: dict[str, str]
    uid: int
    gid: int
    limits: Limits
    hidden_paths: tuple[str, ...] = ()
    job_file: str = ""
    """job.json beside the sandbox directory, naming the script: the request then carries no
    project name (the zygote's memory, which later jobs inherit, keeps none)."""


class Sandbox(Protocol):
    isolation: Isolation
    freecad_version: str
    mode: str

    async def run(self, job: SandboxJob) -> SandboxOutcome: ...

    def alive(self) -> bool: ...

    async def ensure_running(self) -> None:
        """Brings the sandbox back if it died (raises SandboxUnavailable if it cannot)."""


@dataclass(frozen=True)
class RunnerCommand:
    python: str
    lib_dir: str
    home: str

    def argv(self, command: str) -> list[str]:
        # -I: no PYTHON* variables, no user site, no script directory on sys.path.
        return [self.python, "-I", RUNNER, command, self.lib_dir]

    def env(self) -> dict[str, str]:
        """Built from nothing: the worker's variables (credentials among them) never reach the
        runner, and FreeCAD, which records PATH and HOME at import, records only these."""
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": self.home, "LANG": "C.UTF-8"}

    async def spawn(self, command: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *self.argv(command),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env(),
            cwd="/",
            limit=1024 * 1024,
        )


@dataclass(frozen=True)
class Probe:
    freecad_version: str
    setuid: bool
    network_namespace: bool
    mount_namespace: bool
    pid_namespace: bool
    ipc_namespace: bool = False
    seccomp: bool = False


async def probe(command: RunnerCommand) -> Probe:
    """What this machine lets the sandbox do, and which FreeCAD it has."""
    process = await command.spawn("probe")
    out, err = await asyncio.wait_for(process.communicate(), READY_TIMEOUT)
    if process.returncode != 0 or not out.strip():
        raise RuntimeError(
            f"the sandbox probe failed ({command.python} {RUNNER}): {err.decode(errors='replace')}"
        )
    found = json.loads(out.splitlines()[-1])
    if not found.get("freecad_version"):
        raise RuntimeError(
            f"FreeCAD cannot be imported from {command.lib_dir} by {command.python}: "
            + err.decode(errors="replace").strip()
        )
    return Probe(
        freecad_version=found["freecad_version"],
        setuid=bool(found["setuid"]),
        network_namespace=bool(found["network_namespace"]),
        mount_namespace=bool(found["mount_namespace"]),
        pid_namespace=bool(found["pid_namespace"]),
        ipc_namespace=bool(found.get("ipc_namespace")),
        seccomp=bool(found.get("seccomp")),
    )


def request_for(
    job: SandboxJob,
    isolation: Isolation,
    lib_dir: str,
    pids_cgroup: str,
    memory_cgroup: str = "",
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "id": job.id,
        "sandbox_dir": job.sandbox_dir,
        "stdout_path": job.stdout_path,
        "stderr_path": job.stderr_path,
        "identity_files": job.identity_files if isolation.mount_namespace else {},
        "hidden_paths": list(job.hidden_paths),
        "uid": job.uid,
        "gid": job.gid,
        "timeout": job.limits.timeout_seconds,
        "limits": job.limits.as_request(),
        "pid_namespace": isolation.pid_namespace,
        "mount_namespace": isolation.mount_namespace,
        "network_namespace": isolation.network_namespace,
        "drop_privileges": isolation.drop_privileges,
        "pids_cgroup": pids_cgroup if isolation.pids_cgroup else None,
        "freecad_lib_dir": lib_dir,
        "ipc_namespace": isolation.ipc_namespace,
        "seccomp": isolation.seccomp,
        "memory_cgroup": memory_cgroup if isolation.memory_cgroup and memory_cgroup else None,
    }
    if job.job_file:
        request["job_file"] = job.job_file
    else:
        request["script_name"] = job.script_name
    return request


def outcome_from(reply: dict[str, Any]) -> SandboxOutcome:
    if reply.get("event") == "failed":
        return SandboxOutcome(failure=str(reply.get("error", "unknown failure")))
    return SandboxOutcome(
        timed_out=bool(reply.get("timed_out")),
        exit_code=reply.get("exit_code"),
        signal=reply.get("signal"),
        wall_seconds=float(reply.get("wall_seconds", 0.0)),
        cpu_seconds=float(reply.get("cpu_seconds", 0.0)),
        max_rss_kb=int(reply.get("max_rss_kb", 0)),
        script_started=bool(reply.get("script_started")),
        memory_cgroup_oom=bool(reply.get("memory_cgroup_oom")),
    )


def _kill(pid: int | None) -> None:
    """Kills a supervisor; its job follows (parent-death signal) and takes every process of
    its PID namespace with it."""
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def _log_stderr(process: asyncio.subprocess.Process, name: str) -> None:
    assert process.stderr is not None
    async for line in process.stderr:
        logger.warning("%s: %s", name, line.decode(errors="replace").rstrip())


class ZygoteSandbox:
    mode = "zygote"

    def __init__(
        self,
        command: RunnerCommand,
        isolation: Isolation,
        freecad_version: str,
        pids_cgroup: str,
        memory_cgroup: str = "",
    ) -> None:
        self._command = command
        self.isolation = isolation
        self.freecad_version = freecad_version
        self._pids_cgroup = pids_cgroup
        self._memory_cgroup = memory_cgroup
        self._process: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._supervisors: dict[str, int] = {}
        self._start_lock = asyncio.Lock()
        self._closing = False

    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def ensure_running(self) -> None:
        if not self.alive():
            await self.start()

    async def start(self) -> None:
        async with self._start_lock:
            if self.alive():
                return
            process = await self._command.spawn("zygote")
            assert process.stdout is not None
            try:
                line = await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT)
                ready = json.loads(line) if line else {}
            except (TimeoutError, ValueError):
                ready = {}
            if ready.get("event") != "ready":
                process.kill()
                _, err = await process.communicate()
                raise SandboxUnavailable(
                    "the FreeCAD zygote did not start: " + err.decode(errors="replace").strip()
                )
            self._process = process
            self._tasks = [
                asyncio.create_task(self._read_replies(process), name="zygote-replies"),
                asyncio.create_task(_log_stderr(process, "zygote"), name="zygote-stderr"),
            ]
            logger.info("FreeCAD zygote ready (pid %d)", process.pid)

    async def _read_replies(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            try:
                reply = json.loads(line)
            except ValueError:
                logger.error("zygote said something that is not JSON: %r", line[:200])
                continue
            job_id = reply.get("id", "")
            if reply.get("event") == "started":
                self._supervisors[job_id] = int(reply["pid"])
                continue
            future = self._pending.pop(job_id, None)
            if future is not None and not future.done():
                future.set_result(reply)
        await process.wait()
        if not self._closing:
            logger.error("the FreeCAD zygote exited (status %s)", process.returncode)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(SandboxUnavailable("the FreeCAD zygote exited mid-job"))
        self._pending.clear()

    async def run(self, job: SandboxJob) -> SandboxOutcome:
        await self.ensure_running()
        process = self._process
        assert process is not None and process.stdin is not None
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[job.id] = future
        request = request_for(
            job, self.isolation, self._command.lib_dir, self._pids_cgroup, self._memory_cgroup
        )
        try:
            process.stdin.write(json.dumps(request).encode() + b"\n")
            await process.stdin.drain()
            reply = await asyncio.wait_for(
                asyncio.shield(future), job.limits.timeout_seconds + SUPERVISOR_GRACE
            )
        except TimeoutError:
            _kill(self._supervisors.get(job.id))
            return SandboxOutcome(failure="the job's supervisor did not report; killed")
        except (BrokenPipeError, ConnectionResetError) as error:
            raise SandboxUnavailable(f"the FreeCAD zygote is gone: {error}") from error
        except asyncio.CancelledError:
            _kill(self._supervisors.get(job.id))
            raise
        finally:
            self._pending.pop(job.id, None)
            self._supervisors.pop(job.id, None)
        return outcome_from(reply)

    async def close(self) -> None:
        process = self._process
        if process is None:
            return
        self._closing = True
        for pid in self._supervisors.values():
            _kill(pid)
        if process.stdin is not None:
            process.stdin.close()  # end of requests: the zygote exits
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._process = None


class FreshSandbox:
    """A new interpreter per job: simpler, about 150 ms slower per job (FreeCAD's import)."""

    mode = "fresh"

    def __init__(
        self,
        command: RunnerCommand,
        isolation: Isolation,
        freecad_version: str,
        pids_cgroup: str,
        memory_cgroup: str = "",
    ) -> None:
        self._command = command
        self.isolation = isolation
        self.freecad_version = freecad_version
        self._pids_cgroup = pids_cgroup
        self._memory_cgroup = memory_cgroup

    def alive(self) -> bool:
        return True

    async def ensure_running(self) -> None:
        return None

    async def run(self, job: SandboxJob) -> SandboxOutcome:
        process = await self._command.spawn("once")
        assert process.stdin is not None and process.stdout is not None
        stderr = asyncio.create_task(_log_stderr(process, "sandbox"))
        request = request_for(
            job, self.isolation, self._command.lib_dir, self._pids_cgroup, self._memory_cgroup
        )
        try:
            process.stdin.write(json.dumps(request).encode() + b"\n")
            await process.stdin.drain()
            process.stdin.close()
            reply: dict[str, Any] = {}
            deadline = job.limits.timeout_seconds + SUPERVISOR_GRACE
            async with asyncio.timeout(deadline):
                async for line in process.stdout:
                    message = json.loads(line)
                    if message.get("event") in ("finished", "failed"):
                        reply = message
            await process.wait()
        except TimeoutError:
            process.kill()
            return SandboxOutcome(failure="the job's supervisor did not report; killed")
        except BaseException:
            if process.returncode is None:
                process.kill()
            raise
        finally:
            await asyncio.gather(stderr, return_exceptions=True)
        if not reply:
            raise SandboxUnavailable(f"the sandbox process exited with {process.returncode}")
        return outcome_from(reply)

    async def close(self) -> None:
        return None
