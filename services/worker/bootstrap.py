"""The worker's composition root: every adapter is built here from one Settings.

The worker serves no API of its own; its gRPC server carries the standard health service (for
Kubernetes' probes) and reflection. Ready means: S3 answers, NATS is connected and the FreeCAD
sandbox is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from cadpipe import messaging
from cadpipe.adapters import s3
from cadpipe.grpc_observe import GrpcServerMetrics, ObservingInterceptor
from cadpipe.grpc_server import GrpcServer
from cadpipe.metrics import ServiceMetrics
from services.worker.domain.job import Isolation, Limits
from services.worker.intake import Intake, IntakeConfig, NatsNotifier
from services.worker.jobs import JobConfig, JobService
from services.worker.metrics import WorkerMetrics
from services.worker.sandbox import (
    FreshSandbox,
    RunnerCommand,
    Sandbox,
    ZygoteSandbox,
    probe,
)
from services.worker.scratch import ScratchRoot
from services.worker.settings import Settings
from services.worker.storage import S3JobStorage

logger = logging.getLogger(__name__)

NOBODY = 65534


@dataclass(frozen=True)
class Running:
    port: int
    worker_name: str
    freecad_version: str
    sandbox_mode: str
    isolation: Isolation


def limits_from(settings: Settings) -> Limits:
    return Limits(
        timeout_seconds=settings.job_timeout_seconds,
        address_space=settings.memory_limit_bytes,
        cpu_seconds=settings.cpu_limit_seconds,
        processes=settings.max_processes,
        file_size=settings.max_file_size_bytes,
        open_files=settings.max_open_files,
    )


def pids_cgroup(root: str) -> str:
    """A parent cgroup for per-job pids limits, when a cgroup v1 pids hierarchy is mounted at
    root and writable; else "" (cgroup v2 delegation is left to the platform: on Kubernetes
    the pod's own pids limit applies)."""
    return _job_cgroups_parent(root, "pids.max")


def memory_cgroup(root: str) -> str:
    """A parent cgroup for per-job memory cgroups, when a cgroup v1 memory hierarchy is
    mounted at root and writable; else "" (as pids_cgroup)."""
    return _job_cgroups_parent(root, "memory.limit_in_bytes")


def _job_cgroups_parent(root: str, controller_file: str) -> str:
    """root/cadpipe, made when root is a writable cgroup v1 hierarchy whose new cgroups carry
    controller_file, and emptied of a dead worker's job cgroups; else ""."""
    if not root or not os.path.isfile(os.path.join(root, "cgroup.procs")):
        return ""
    parent = os.path.join(root, "cadpipe")
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError:
        return ""
    if not os.path.isfile(os.path.join(parent, controller_file)):
        with contextlib.suppress(OSError):
            os.rmdir(parent)
        return ""
    _remove_stale_cgroups(parent)
    return parent


def _remove_stale_cgroups(parent: str, older_than: float = 600.0) -> None:
    """Job cgroups left by supervisors that were killed (their worker died mid-job). rmdir
    removes only empty ones; the age keeps off one another worker has just made and not yet
    filled."""
    now = time.time()
    for entry in os.scandir(parent):
        if entry.name.startswith("job-") and now - entry.stat().st_mtime > older_than:
            with contextlib.suppress(OSError):
                os.rmdir(entry.path)


async def _isolation(
    settings: Settings,
    command_for: Callable[[str], RunnerCommand],
    cgroup: str,
    memory_group: str = "",
) -> tuple[Isolation, str]:
    home = tempfile.mkdtemp(prefix="cadpipe-probe-")
    try:
        found = await probe(command_for(home))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    isolation = Isolation(
        pid_namespace=found.pid_namespace,
        mount_namespace=found.mount_namespace,
        network_namespace=found.network_namespace,
        drop_privileges=found.setuid,
        pids_cgroup=bool(cgroup),
        ipc_namespace=found.ipc_namespace,
        seccomp=found.seccomp,
        memory_cgroup=bool(memory_group),
    )
    if not isolation.complete:
        missing = ", ".join(isolation.missing())
        if settings.sandbox_isolation == "strict":
            raise RuntimeError(
                f"this machine does not allow a complete sandbox (missing: {missing}); the "
                "worker needs root, or CAP_SYS_ADMIN with CAP_SETUID and CAP_SETGID, in its "
                "container. SANDBOX_ISOLATION=best_effort runs scripts anyway, less isolated"
            )
        logger.warning("running scripts in a WEAK sandbox; missing: %s", missing)
    return isolation, found.freecad_version


def _uid_picker(settings: Settings, isolation: Isolation) -> Callable[[], int]:
    """A uid per job that no other job has, so that jobs cannot read each other's files or
    count against each other's process limit. Without a mount namespace the job cannot be
    shown an /etc/passwd naming a random uid (FreeCAD insists on one): nobody it is."""
    if not isolation.mount_namespace:
        return lambda: NOBODY
    return lambda: settings.sandbox_uid_base + secrets.randbelow(settings.sandbox_uid_count)


async def _open_sandbox(
    settings: Settings,
    stack: AsyncExitStack,
    scratch: ScratchRoot,
    isolation: Isolation,
    freecad_version: str,
    cgroup: str,
    memory_group: str = "",
) -> Sandbox:
    command = RunnerCommand(
        settings.freecad_python, settings.resolved_freecad_lib_dir(), scratch.zygote_home
    )
    if settings.sandbox_mode == "fresh":
        return FreshSandbox(command, isolation, freecad_version, cgroup, memory_group)
    zygote = ZygoteSandbox(command, isolation, freecad_version, cgroup, memory_group)
    await zygote.start()
    stack.push_async_callback(zygote.close)
    return zygote


S3_CONNECTIONS = 32
NATS_DRAIN_SECONDS = 5
"""What the worker publishes (acks, naks, nudges) is flushed in milliseconds at shutdown. With
more than one slot, a message that a slot's cancelled fetch still brings in lands in a pull
subscription nobody reads any more, and would hold the drain for nats-py's 30 s default (the
message itself comes back after ack_wait): the drain is bounded here."""


@asynccontextmanager
async def start(settings: Settings) -> AsyncIterator[Running]:
    worker_name = f"{socket.gethostname()}/{os.getpid()}"
    async with AsyncExitStack() as stack:
        observed = ServiceMetrics("worker")
        metrics = WorkerMetrics(observed.registry)
        bucket = s3.open_bucket(
            settings, stack, instrument=observed.instrument_s3, max_pool_connections=S3_CONNECTIONS
        )
        # every job stores its outputs, report and log at once: threads of the bucket's own, as
        # many as its pooled connections, rather than the loop's few default ones
        async_bucket = s3.AsyncBucket(bucket, threads=S3_CONNECTIONS)
        stack.callback(async_bucket.close)
        storage = S3JobStorage(async_bucket)

        lib_dir = settings.resolved_freecad_lib_dir()
        cgroup = await asyncio.to_thread(pids_cgroup, settings.pids_cgroup_root)
        memory_group = await asyncio.to_thread(memory_cgroup, settings.memory_cgroup_root)
        isolation, freecad_version = await _isolation(
            settings,
            lambda home: RunnerCommand(settings.freecad_python, lib_dir, home),
            cgroup,
            memory_group,
        )
        scratch = ScratchRoot(
            settings.scratch_root,
            _uid_picker(settings, isolation),
            drop_privileges=isolation.drop_privileges,
        )
        await asyncio.to_thread(scratch.open)
        stack.callback(scratch.close)
        sandbox = await _open_sandbox(
            settings, stack, scratch, isolation, freecad_version, cgroup, memory_group
        )

        nc = await messaging.connect(
            settings,
            name="cadpipe-worker",
            error_cb=observed.nats_error_cb,
            drain_timeout=NATS_DRAIN_SECONDS,
        )
        stack.push_async_callback(messaging.close, nc)
        js = nc.jetstream()
        await messaging.ensure_streams(js, replicas=settings.nats_stream_replicas)

        service = JobService(
            storage,
            sandbox,
            scratch,
            NatsNotifier(nc),
            JobConfig(
                limits=limits_from(settings),
                max_deliver=settings.max_deliver,
                max_outputs=settings.max_outputs,
                max_log_stream_bytes=settings.max_log_stream_bytes,
                worker_name=worker_name,
                hidden_paths=tuple(settings.sandbox_hidden_paths),
                max_output_bytes=settings.max_output_bytes,
            ),
        )

        async def dependencies() -> None:
            await storage.ping()
            if not nc.is_connected:
                raise ConnectionError("NATS is not connected")
            # A zygote that died (killed by the OOM killer, say) is started again here, so
            # the worker does not wait for its next job to find out.
            await sandbox.ensure_running()

        intake = Intake(
            js,
            IntakeConfig(
                consumer_name=settings.consumer_name,
                filter_subjects=tuple(settings.consumer_filter_subjects),
                ack_wait_seconds=settings.ack_wait_seconds,
                max_deliver=settings.max_deliver,
                concurrency=settings.concurrency,
                jobs_in_flight=settings.jobs_in_flight,
                fetch_timeout_seconds=settings.fetch_timeout_seconds,
                buffer=max(settings.intake_buffer, settings.jobs_in_flight),
                fair=settings.fair_scheduling,
                per_owner_cap=settings.max_running_per_owner,
                backoff_initial_seconds=settings.dependency_backoff_initial_seconds,
                backoff_max_seconds=settings.dependency_backoff_max_seconds,
            ),
            service,
            dependencies=dependencies,
            on_job=metrics.observe_job,
        )

        async def ready() -> None:
            """Readiness, every readiness_interval: a failure also stops the intake taking
            work (it probes the dependencies itself until they answer)."""
            try:
                await dependencies()
            except Exception as error:
                intake.dependency_failed(f"not ready: {error}")
                raise

        metrics.watch_running(lambda: intake.busy)
        metrics.watch_intake(lambda: intake.waiting, lambda: intake.taking_work)
        stack.enter_context(observed.serving(settings.grpc_host, settings.metrics_port))

        server = GrpcServer(
            settings.grpc_host,
            settings.grpc_port,
            service_names=[],
            readiness=ready,
            readiness_interval=settings.readiness_interval_seconds,
            interceptors=[ObservingInterceptor(GrpcServerMetrics(observed.registry))],
        )
        try:
            await intake.start()
            await server.start()
            logger.info(
                "worker %s ready: FreeCAD %s, %s sandbox (%s)",
                worker_name,
                freecad_version,
                sandbox.mode,
                isolation.describe(),
            )
            yield Running(
                port=server.port,
                worker_name=worker_name,
                freecad_version=freecad_version,
                sandbox_mode=sandbox.mode,
                isolation=isolation,
            )
        finally:
            await server.shutdown(settings.shutdown_grace_seconds)
            await intake.stop(settings.drain_timeout_seconds)
            logger.info("worker stopped")
