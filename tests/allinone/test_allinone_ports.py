"""`make run` looks at a taken port again for a moment before it refuses to start: an outgoing
connection can hold one of its default ports briefly (they lie in the ephemeral range)."""

from __future__ import annotations

import socket
import threading
import time

from cadpipe.devstack import free_port
from services.allinone.__main__ import AllInOneSettings, ports_still_busy


def settings_with_s3_on(port: int) -> AllInOneSettings:
    return AllInOneSettings(
        http_port=free_port(),
        scripts_grpc_port=free_port(),
        watcher_grpc_port=free_port(),
        worker_grpc_port=free_port(),
        generator_grpc_port=free_port(),
        nats_port=free_port(),
        s3_port=port,
        metrics_port=0,
    )


def test_a_port_let_go_within_the_moment_is_not_reported() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    settings = settings_with_s3_on(holder.getsockname()[1])
    threading.Timer(0.3, holder.close).start()
    started = time.monotonic()
    assert ports_still_busy(settings, within=5, poll=0.05) == []
    assert time.monotonic() - started < 4  # it returned once the port was free, not at the end


def test_a_port_held_throughout_is_reported_with_its_variable() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        assert ports_still_busy(settings_with_s3_on(taken), within=0.3, poll=0.05) == [
            f"{taken} (S3_PORT)"
        ]
