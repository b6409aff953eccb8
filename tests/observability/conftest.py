"""The whole system in this process (services/allinone/stack.py) with every service's metrics on a
port of its own, behind an authenticating gateway, on the session's moto and a nats-server of
the test's own; the stack's admin API token for the monitoring routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from obs_harness import Observed

from cadpipe.adapters import s3
from cadpipe.devstack import free_port
from cadpipe.settings import MongoSettings, S3Settings
from services.allinone import stack


@pytest.fixture
async def observed(
    bucket: s3.Bucket, s3_settings: S3Settings, mongo_settings: MongoSettings, nats_server: Any
) -> AsyncIterator[Observed]:
    s3_values = s3_settings.model_dump()  # secrets stay SecretStr: the services' settings take them
    uri = mongo_settings.mongodb_uri.get_secret_value()
    backends = stack.Backends(
        s3=s3_values,
        nats_url=nats_server.url,
        mongodb_uri=uri,
        mongodb_database=mongo_settings.mongodb_database,
    )
    metrics = {name: free_port() for name in ("gateway", "scripts", "watcher", "worker")}
    fast = {"readiness_interval_seconds": 0.2, "shutdown_grace_seconds": 1.0}
    overrides = stack.Overrides(
        scripts={**fast, "metrics_port": metrics["scripts"]},
        watcher={**fast, "metrics_port": metrics["watcher"], "monitoring_check_timeout_seconds": 1},
        worker={**fast, "metrics_port": metrics["worker"]},
        gateway={
            "metrics_port": metrics["gateway"],
            "shutdown_grace_seconds": 1.0,
            "upload_burst": 1000,
        },
    )
    async with stack.start(backends, overrides=overrides) as running:
        # the all-in-one's own admin token, as `make run` prints it
        yield Observed(running, nats_server, bucket, s3_settings, uri, metrics, running.admin_token)
