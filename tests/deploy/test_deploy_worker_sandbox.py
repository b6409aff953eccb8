"""The worker's capabilities in deploy/k8s, tried for real: the worker's own sandbox probe
(services/worker/sandbox_runner.py), run as root with exactly the capabilities the Deployment
grants and no_new_privs (allowPrivilegeEscalation: false), finds every isolation it checks for;
without SYS_ADMIN it finds none, so the worker's strict mode would refuse to start."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
from typing import Any

import pytest
from k8s_manifests import BASE, ROOT, container, named

RUNNER = ROOT / "services" / "worker" / "sandbox_runner.py"
FREECAD_PYTHON = pathlib.Path("/usr/bin/python3")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as the worker pod has"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux's setpriv"),
    pytest.mark.skipif(not RUNNER.exists(), reason="services/worker/sandbox_runner.py is missing"),
    pytest.mark.skipif(not FREECAD_PYTHON.exists(), reason="needs Debian's python3"),
]


def _manifest_capabilities() -> list[str]:
    context = container(named(BASE, "Deployment", "worker"))["securityContext"]
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["allowPrivilegeEscalation"] is False
    return list(context["capabilities"]["add"])


def _probe(capabilities: list[str] | None) -> dict[str, Any]:
    """The probe's findings with only these capabilities (None: all of this process's)."""
    command = [str(FREECAD_PYTHON), "-I", str(RUNNER), "probe"]
    if capabilities is not None:
        bounding = ",".join(["-all", *(f"+{c.lower()}" for c in capabilities)])
        command = [
            "setpriv",
            f"--bounding-set={bounding}",
            "--inh-caps=-all",
            "--no-new-privs",
            *command,
        ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env={}, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def unrestricted() -> dict[str, Any]:
    found = _probe(None)
    if not (found["network_namespace"] and found["setuid"]):
        pytest.skip(f"this machine gives even full root no sandbox: {found}")
    return found


def test_the_deployments_capabilities_give_the_sandbox_everything(
    unrestricted: dict[str, Any],
) -> None:
    found = _probe(_manifest_capabilities())
    assert found["setuid"] is True
    assert found["network_namespace"] is True
    assert found["mount_namespace"] is True
    assert found["pid_namespace"] is True
    assert found["ipc_namespace"] is True
    assert found["seccomp"] is True  # installs under no_new_privs, as in the pod


def test_without_sys_admin_there_is_no_namespace(unrestricted: dict[str, Any]) -> None:
    capabilities = [c for c in _manifest_capabilities() if c != "SYS_ADMIN"]
    found = _probe(capabilities)
    assert found["setuid"] is True
    assert not (found["network_namespace"] or found["mount_namespace"] or found["pid_namespace"])


def test_without_setuid_and_setgid_jobs_cannot_change_uid(unrestricted: dict[str, Any]) -> None:
    capabilities = [c for c in _manifest_capabilities() if c not in ("SETUID", "SETGID")]
    assert _probe(capabilities)["setuid"] is False
