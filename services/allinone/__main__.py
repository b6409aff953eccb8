"""`make run`: cadpipe all-in-one. Starts moto's S3 server, nats-server with JetStream and an
in-process MongoDB (mongomock), then every service (services/allinone/stack.py); prints the URLs;
Ctrl-C stops everything in reverse order.

Nothing here is for production: there each service runs alone against real S3, MongoDB and NATS
(see README).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from pydantic import Field

from cadpipe.adapters import s3
from cadpipe.devstack import MotoS3, NatsServer, port_in_use
from cadpipe.grpc_server import stop_event_on_signals
from cadpipe.logs import configure_logging
from cadpipe.settings import MODEL_CONFIG, LoggingSettings, S3Settings, load_settings
from services.allinone import stack

logger = logging.getLogger("cadpipe.allinone")
EX_UNAVAILABLE = 69  # sysexits.h: a service it needs is not available


class AllInOneSettings(LoggingSettings):
    model_config = MODEL_CONFIG

    http_port: int = Field(default=8080, description="gateway: REST, /docs")
    scripts_grpc_port: int = 50051
    watcher_grpc_port: int = 50052
    worker_grpc_port: int = 50053
    generator_grpc_port: int = 50054
    s3_port: int = 9000
    nats_port: int = 4222
    s3_bucket: str = "cadpipe"
    metrics_port: int = Field(
        default=9090,
        description="Prometheus /metrics: gateway here, scripts, watcher, worker, generator on "
        "the next four ports; 0: none",
    )


async def run(settings: AllInOneSettings) -> None:
    stop = stop_event_on_signals()
    with (
        MotoS3(port=settings.s3_port) as moto,
        # its own temporary store, removed at exit, or by its tether if this process is killed
        NatsServer(port=settings.nats_port) as nats,
    ):
        s3_env = moto.s3_fields(settings.s3_bucket)
        s3.Bucket(
            s3.make_client(S3Settings.model_validate(s3_env)), settings.s3_bucket
        ).create_if_missing()
        backends = stack.Backends(s3=s3_env, nats_url=nats.url, mongodb_uri="mongomock://allinone")
        ports = stack.Ports(
            http=settings.http_port,
            scripts=settings.scripts_grpc_port,
            watcher=settings.watcher_grpc_port,
            worker=settings.worker_grpc_port,
            metrics=settings.metrics_port,
            generator=settings.generator_grpc_port,
        )
        async with stack.start(backends, ports) as running:
            banner(running, moto, nats, settings.s3_bucket, ports)
            await stop.wait()
            logger.info("stopping")


def banner(
    running: stack.Stack, moto: MotoS3, nats: NatsServer, bucket: str, ports: stack.Ports
) -> None:
    api = running.api_url
    metrics = (
        f"  metrics    http://127.0.0.1:{ports.metrics_port(0)}/metrics (gateway), "
        f":{ports.metrics_port(1)} scripts, :{ports.metrics_port(2)} watcher, "
        f":{ports.metrics_port(3)} worker, :{ports.metrics_port(4)} generator\n"
        if ports.metrics
        else ""
    )
    app = sign_in_link(api, running.user_token)
    sys.stdout.write(
        "\ncadpipe is running (Ctrl-C stops it)\n"
        f"  web app    {app}\n"
        "             (signs in as the local user; the token stays in that browser tab)\n"
        f"  REST API   {api}/api   docs {api}/docs   OpenAPI {api}/openapi.json\n"
        f"  API token  {running.user_token}   (identity {stack.LOCAL_USER}; send it as\n"
        '             -H "Authorization: Bearer $TOKEN"; a new one at every start)\n'
        f"  admin      {running.admin_token}   (identity {stack.LOCAL_ADMIN}: "
        "/api/monitoring/...)\n"
        f"  gRPC       scripts 127.0.0.1:{running.scripts_port}  "
        f"watcher 127.0.0.1:{running.watcher_port}  worker 127.0.0.1:{running.worker_port}  "
        f"generator 127.0.0.1:{running.generator_port}\n"
        f"  S3 (moto)  {moto.endpoint_url}  bucket {bucket}  "
        f"credentials {moto.access_key} / {moto.secret_key}\n"
        f"  NATS       {nats.url}\n"
        "  MongoDB    in-process (mongomock)\n"
        f"{metrics}\n"
    )
    sys.stdout.flush()


def sign_in_link(api_url: str, token: str) -> str:
    """The web app's URL that signs the token's identity in with one click: the app moves the
    token from the fragment (never sent to a server) into the tab's sessionStorage and drops it
    from the address bar."""
    return f"{api_url}/#token={token}" if token else f"{api_url}/"


def busy_ports(settings: AllInOneSettings) -> list[str]:
    """The ports `make run` needs that something else holds, each with the variable that moves
    it: checked before anything starts (moto's server would wait forever for a port it cannot
    bind, and a foreign server on NATS's port would be used as ours)."""
    wanted = {
        "HTTP_PORT": settings.http_port,
        "SCRIPTS_GRPC_PORT": settings.scripts_grpc_port,
        "WATCHER_GRPC_PORT": settings.watcher_grpc_port,
        "WORKER_GRPC_PORT": settings.worker_grpc_port,
        "GENERATOR_GRPC_PORT": settings.generator_grpc_port,
        "S3_PORT": settings.s3_port,
        "NATS_PORT": settings.nats_port,
    }
    if settings.metrics_port:
        wanted.update({f"METRICS_PORT (+{i})": settings.metrics_port + i for i in range(5)})
    return [f"{port} ({name})" for name, port in wanted.items() if port and port_in_use(port)]


PORTS_SETTLE_SECONDS = 2.0
"""How long a port found taken is looked at again before `make run` refuses to start: an
outgoing connection can hold one of its default ports for a moment (50051-50054 lie in Linux's
ephemeral range, 32768-60999, from which outgoing connections take their local port)."""


def ports_still_busy(
    settings: AllInOneSettings, within: float = PORTS_SETTLE_SECONDS, poll: float = 0.2
) -> list[str]:
    """busy_ports, once the ports taken have had `within` seconds to be let go."""
    deadline = time.monotonic() + within
    while (busy := busy_ports(settings)) and time.monotonic() < deadline:
        time.sleep(poll)
    return busy


def main() -> None:
    # a person watching `make run` reads text; a pipe or a file gets JSON (LOG_FORMAT wins)
    configure_logging("allinone", default_format="text" if sys.stderr.isatty() else "json")
    settings = load_settings(AllInOneSettings, "allinone")
    busy = ports_still_busy(settings)
    if busy:
        logger.error(
            "ports in use by another program: %s; stop it (an earlier make run?) or move "
            "cadpipe with the variable named",
            ", ".join(busy),
        )
        sys.exit(EX_UNAVAILABLE)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
