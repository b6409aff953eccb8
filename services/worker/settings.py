"""The worker's settings, read from the environment once, in main(). The worker needs S3 and
NATS; no MongoDB."""

from __future__ import annotations

import os
import tempfile
from typing import Literal

from pydantic import Field, model_validator

from cadpipe import messaging
from cadpipe.settings import MIB, MODEL_CONFIG, GrpcServerSettings, NatsSettings, S3Settings

GIB = 1024 * MIB


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset set),
    capped to the concurrency limit: a FreeCAD job keeps one core busy, so one job per core."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 64))


class Settings(S3Settings, NatsSettings, GrpcServerSettings):
    model_config = MODEL_CONFIG

    grpc_port: int = Field(default=50053, ge=0, le=65535)

    # --- the job and its sandbox ---
    job_timeout_seconds: float = Field(
        default=120.0, gt=0, description="Wall clock per script; the whole process tree is killed"
    )
    memory_limit_bytes: int = Field(
        default=2 * GIB, ge=256 * MIB, description="Address space of the job (RLIMIT_AS)"
    )
    cpu_limit_seconds: int = Field(
        default=0, ge=0, description="CPU time of the job (RLIMIT_CPU); 0: the job timeout"
    )
    max_processes: int = Field(
        default=64, ge=4, description="Processes and threads of the job (RLIMIT_NPROC, pids cgroup)"
    )
    max_file_size_bytes: int = Field(
        default=1 * GIB, ge=MIB, description="Largest file the job may write (RLIMIT_FSIZE)"
    )
    max_open_files: int = Field(default=256, ge=32, description="RLIMIT_NOFILE of the job")
    max_outputs: int = Field(default=64, ge=1, description="Output files stored per version")
    max_log_stream_bytes: int = Field(
        default=512 * 1024, ge=4096, description="stdout or stderr kept in the log (head + tail)"
    )
    concurrency: int = Field(
        default_factory=usable_cores,
        ge=1,
        le=64,
        description="FreeCAD jobs run at once per worker; default: the cores this process may use",
    )
    jobs_in_flight: int = Field(
        default=0,
        ge=0,
        le=128,
        description="Jobs a worker holds at once: those holding a core (at most `concurrency`: "
        "from fetching the script until FreeCAD exits) and those storing their results after, "
        "which hold none; 0: twice `concurrency`",
    )

    freecadcmd: str = Field(
        default="freecadcmd",
        description="FreeCAD's command-line program; its Python modules are found next to it",
    )
    freecad_lib_dir: str = Field(
        default="", description="FreeCAD's Python modules; empty: found from freecadcmd"
    )
    freecad_python: str = Field(
        default="/usr/bin/python3", description="The Python FreeCAD's modules are built for"
    )
    sandbox_mode: Literal["zygote", "fresh"] = Field(
        default="zygote",
        description="zygote: fork each job from a process with FreeCAD imported; "
        "fresh: a new interpreter per job",
    )
    sandbox_isolation: Literal["strict", "best_effort"] = Field(
        default="strict",
        description="strict: refuse to start without namespaces and uid switching; "
        "best_effort: run with what the machine allows, and say so in every log "
        "(development only: needs SANDBOX_UNSAFE_DEVELOPMENT_ONLY=true)",
    )
    sandbox_unsafe_development_only: bool = Field(
        default=False,
        description="Required by best_effort: without root a job may read the worker's "
        "/proc/<pid>/environ (its credentials) and use the network",
    )
    sandbox_uid_base: int = Field(default=200_000, ge=1000, description="First uid for jobs")
    sandbox_uid_count: int = Field(
        default=100_000, ge=1, description="Jobs run as a random uid in [base, base + count)"
    )
    sandbox_hidden_paths: list[str] = Field(
        default_factory=lambda: ["/run/secrets", "/var/run/secrets"],
        description="Covered in the job's view of the machine (mounted secrets, tokens)",
    )
    memory_cgroup_root: str = Field(
        default="/sys/fs/cgroup/memory",
        description="cgroup v1 memory hierarchy for a per-job memory limit; empty: none",
    )
    max_output_bytes: int = Field(
        default=256 * MIB,
        ge=MIB,
        description="Total size of a version's outputs; more fails the job before any upload",
    )
    pids_cgroup_root: str = Field(
        default="/sys/fs/cgroup/pids",
        description="cgroup v1 pids hierarchy for a per-job process limit; empty: none",
    )
    scratch_root: str = Field(
        default_factory=lambda: os.path.join(tempfile.gettempdir(), "cadpipe-worker"),
        description="Scratch directories of jobs (an emptyDir with a sizeLimit on Kubernetes)",
    )

    # --- work intake ---
    consumer_name: str = Field(default="cadpipe-worker", description="JetStream durable name")
    consumer_filter_subjects: list[str] = Field(
        default_factory=lambda: [messaging.UPLOADED_SUBJECTS]
    )
    ack_wait_seconds: float = Field(
        default=30.0, gt=0, description="Redelivery after this long without a heartbeat"
    )
    max_deliver: int = Field(
        default=3, ge=2, description="Deliveries of one version; the last one finishes it as error"
    )
    fetch_timeout_seconds: float = Field(default=5.0, gt=0)
    intake_buffer: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="Uploaded events held by this worker at most, running ones included: the "
        "window in which owners take turns (more: fairer under a flood, but more work held "
        "back from other replicas)",
    )
    fair_scheduling: bool = Field(
        default=True,
        description="Free slots go to owners in turn; false: first come first served",
    )
    max_running_per_owner: int = Field(
        default=0, ge=0, description="Jobs of one owner running at once on this worker; 0: no cap"
    )
    dependency_backoff_initial_seconds: float = Field(
        default=0.5, gt=0, description="First pause before probing S3/NATS after a failure"
    )
    dependency_backoff_max_seconds: float = Field(
        default=8.0, gt=0, description="Longest pause between probes (the pause doubles)"
    )
    drain_timeout_seconds: float = Field(
        default=0.0,
        ge=0,
        description="On SIGTERM, how long running jobs may finish; 0: job timeout + 10 s",
    )

    @model_validator(mode="after")
    def _best_effort_is_development_only(self) -> Settings:
        if self.sandbox_isolation == "best_effort" and not self.sandbox_unsafe_development_only:
            raise ValueError(
                "SANDBOX_ISOLATION=best_effort is for development only: without root a job can "
                "read the worker's environment (its S3 and NATS credentials) through /proc and "
                "use the network; set SANDBOX_UNSAFE_DEVELOPMENT_ONLY=true to run it anyway"
            )
        return self

    @model_validator(mode="after")
    def _jobs_in_flight_cover_the_cores(self) -> Settings:
        if self.jobs_in_flight == 0:
            self.jobs_in_flight = 2 * self.concurrency
        if self.jobs_in_flight < self.concurrency:
            raise ValueError(
                f"JOBS_IN_FLIGHT ({self.jobs_in_flight}) must be at least CONCURRENCY "
                f"({self.concurrency}): only jobs in flight can run FreeCAD"
            )
        return self

    @model_validator(mode="after")
    def _defaults_from_timeout(self) -> Settings:
        if self.cpu_limit_seconds == 0:
            self.cpu_limit_seconds = max(1, int(self.job_timeout_seconds + 0.999))
        if self.drain_timeout_seconds == 0:
            self.drain_timeout_seconds = self.job_timeout_seconds + 10
        return self

    def resolved_freecad_lib_dir(self) -> str:
        """/usr/bin/freecadcmd links to /usr/lib/freecad/bin/freecadcmd-python3; the modules
        are in /usr/lib/freecad/lib."""
        if self.freecad_lib_dir:
            return self.freecad_lib_dir
        import shutil

        found = shutil.which(self.freecadcmd) or self.freecadcmd
        bin_dir = os.path.dirname(os.path.realpath(found))
        return os.path.join(os.path.dirname(bin_dir), "lib")
