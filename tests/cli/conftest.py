"""Fixtures of tests/cli: one local stack per module (cli_stack.py), a fresh home per test."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator

import pytest
from cli_stack import RunningStack, cli_env, running_stack

from cadpipe.devstack import MotoS3


@pytest.fixture(scope="module")
def live(moto_server: MotoS3) -> Iterator[RunningStack]:
    with running_stack(moto_server) as running:
        yield running


@pytest.fixture
def home(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def env(live: RunningStack, home: pathlib.Path) -> dict[str, str]:
    """A user of the live stack through CADPIPE_URL and CADPIPE_TOKEN."""
    return cli_env(home, live.url, live.token)


@pytest.fixture
def project() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"
