"""NATS subjects, streams and event encoding, written once for every service.

Streams (JetStream, limits retention, so every durable consumer sees every message):
    CADPIPE_SCRIPTS  cadpipe.scripts.>   uploaded events (script service -> worker, watcher)
    CADPIPE_JOBS     cadpipe.jobs.>      completion events (watcher -> anyone)
    CADPIPE_GENERATIONS cadpipe.generations.>  a generation's progress (generator -> watcher)
Core NATS (no stream): cadpipe.worker.started.{project} and cadpipe.worker.finished.{project},
the worker's nudges to the watcher.

Events are proto messages from cadpipe/v1/events.proto, encoded as proto3 JSON so that any
listener can read them without our generated code.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import nats
import nats.errors
from google.protobuf import json_format
from google.protobuf.message import Message
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from cadpipe.settings import NatsSettings

SCRIPTS_STREAM = "CADPIPE_SCRIPTS"
JOBS_STREAM = "CADPIPE_JOBS"
GENERATIONS_STREAM = "CADPIPE_GENERATIONS"
UPLOADED_SUBJECTS = "cadpipe.scripts.uploaded.>"
JOB_SUBJECTS = "cadpipe.jobs.>"
GENERATION_SUBJECTS = "cadpipe.generations.>"
WORKER_FINISHED_SUBJECTS = "cadpipe.worker.finished.>"
WORKER_STARTED_SUBJECTS = "cadpipe.worker.started.>"
JOB_OUTCOMES = ("completed", "error", "timeout")

# JetStream remembers message ids for this long and drops repeats within it.
DUPLICATE_WINDOW_SECONDS = 24 * 3600
RETENTION_SECONDS = 30 * 24 * 3600
# How long close() lets a drain wait for subscriptions to finish their messages (nats.py's
# default is 30 s): a shutdown is bounded, and a subscription stuck by a cancelled fetch costs
# this much at worst, not the pod's whole grace period.
DRAIN_TIMEOUT_SECONDS = 5.0

M = TypeVar("M", bound=Message)

logger = logging.getLogger(__name__)


def uploaded_subject(project: str) -> str:
    return f"cadpipe.scripts.uploaded.{project}"


def uploaded_msg_id(project: str, version: int) -> str:
    return f"{project}.v{version}.uploaded"


def job_subject(outcome: str, project: str) -> str:
    if outcome not in JOB_OUTCOMES:
        raise ValueError(f"unknown job outcome {outcome!r}")
    return f"cadpipe.jobs.{outcome}.{project}"


def job_msg_id(project: str, version: int) -> str:
    return f"{project}.v{version}.finished"


def generation_subject(project: str) -> str:
    return f"cadpipe.generations.{project}"


def generation_msg_id(generation_id: str, sequence: int) -> str:
    return f"{generation_id}.{sequence}"


def worker_started_subject(project: str) -> str:
    return f"cadpipe.worker.started.{project}"


def worker_finished_subject(project: str) -> str:
    return f"cadpipe.worker.finished.{project}"


def encode(message: Message) -> bytes:
    return json_format.MessageToJson(message, indent=None).encode()


def decode(data: bytes, message_type: type[M]) -> M:
    """Parses an event; unknown fields are ignored so that newer publishers stay readable."""
    return json_format.Parse(data, message_type(), ignore_unknown_fields=True)


async def connect(settings: NatsSettings, *, name: str, **kwargs: Any) -> NatsClient:
    """Connects and keeps reconnecting forever: a service outlives NATS restarts."""
    options: dict[str, Any] = {
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 2,
        "drain_timeout": DRAIN_TIMEOUT_SECONDS,
    }
    if settings.nats_user:
        options["user"] = settings.nats_user
    if settings.nats_password:
        options["password"] = settings.nats_password.get_secret_value()
    options.update(kwargs)
    return await nats.connect(settings.nats_url, **options)


async def close(nc: NatsClient) -> None:
    """The one way a service lets go of NATS at shutdown: drained while connected (what was
    published is flushed, subscriptions end after their messages), else closed; a failure is
    logged and never raised, as the service is stopping anyway."""
    if nc.is_closed:
        return
    if nc.is_connected:
        try:
            await nc.drain()
            return
        except (nats.errors.Error, OSError, TimeoutError) as error:
            logger.warning("NATS drain failed: %s", error)
    try:
        await nc.close()
    except (nats.errors.Error, OSError, TimeoutError) as error:
        # NATS went away too (a node drain takes both): nothing left to flush
        logger.warning("NATS close failed: %s", error)


async def ensure_streams(js: JetStreamContext, *, replicas: int = 1) -> None:
    """Creates cadpipe's streams, or updates them to this configuration; safe to call from
    every replica at start."""
    for name, subjects in (
        (SCRIPTS_STREAM, [UPLOADED_SUBJECTS]),
        (JOBS_STREAM, [JOB_SUBJECTS]),
        (GENERATIONS_STREAM, [GENERATION_SUBJECTS]),
    ):
        config = StreamConfig(
            name=name,
            subjects=subjects,
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=RETENTION_SECONDS,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            num_replicas=replicas,
        )
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.update_stream(config)
