"""What the manifest tests read: the rendered kustomizations, the services' settings classes,
and small helpers over Kubernetes objects."""

from __future__ import annotations

import functools
import importlib
import pathlib
import re
from dataclasses import dataclass
from typing import Any

from k8s_render import Obj, pod_spec, render
from pydantic import SecretStr
from pydantic_settings import BaseSettings

ROOT = pathlib.Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s" / "base"
DEV = ROOT / "deploy" / "k8s" / "overlays" / "dev"
DEV_KEDA = ROOT / "deploy" / "k8s" / "overlays" / "dev-keda"
KEDA_COMPONENT = ROOT / "deploy" / "k8s" / "components" / "keda-worker"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"

NAMESPACE = "cadpipe"
CONFIG_MAP = "cadpipe-config"
SECRET = "cadpipe-secrets"
# each gRPC service's port, as the brief and the README fix them
GRPC_SERVICES = {"scripts": 50051, "watcher": 50052, "worker": 50053, "generator": 50054}
HTTP_SERVICES = {"gateway": 8080}
SERVICES = [*GRPC_SERVICES, *HTTP_SERVICES]
METRICS_PORT = 9090


@functools.cache
def rendered(directory: pathlib.Path) -> tuple[Obj, ...]:
    return tuple(render(directory))


def objects(directory: pathlib.Path, kind: str) -> list[Obj]:
    return [o for o in rendered(directory) if o["kind"] == kind]


def named(directory: pathlib.Path, kind: str, name: str) -> Obj:
    found = [o for o in objects(directory, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name} in {directory}"
    return found[0]


def workloads(directory: pathlib.Path) -> list[Obj]:
    return [o for o in rendered(directory) if pod_spec(o) is not None]


def container(deployment: Obj) -> Obj:
    spec = pod_spec(deployment)
    assert spec is not None
    (only,) = spec["containers"]
    return dict(only)


def pod_labels(workload: Obj) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def selector_matches(selector: Obj, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a set of labels."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def container_ports(workload: Obj) -> dict[str, int]:
    spec = pod_spec(workload)
    assert spec is not None
    return {
        p.get("name", str(p["containerPort"])): int(p["containerPort"])
        for c in spec["containers"]
        for p in c.get("ports", [])
    }


def resolve_port(workload: Obj, port: int | str) -> int | None:
    """A numeric port, or a named one looked up in the workload's containers."""
    if isinstance(port, int):
        return port
    return container_ports(workload).get(port)


def env_values(directory: pathlib.Path, deployment: Obj) -> dict[str, str]:
    """Every variable the container gets with a plain value: its ConfigMaps' data, then its
    own `value:` entries (which win, as in Kubernetes)."""
    values: dict[str, str] = {}
    spec = container(deployment)
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            config = named(directory, "ConfigMap", source["configMapRef"]["name"])
            values.update(config.get("data", {}))
    for entry in spec.get("env", []):
        if "value" in entry:
            values[entry["name"]] = entry["value"]
    return values


def env_names(directory: pathlib.Path, deployment: Obj) -> set[str]:
    """Every variable the container gets, from any source."""
    names = set(env_values(directory, deployment))
    names |= {entry["name"] for entry in container(deployment).get("env", [])}
    return names


# --- the services' settings ------------------------------------------------------------------


@dataclass(frozen=True)
class SettingsInfo:
    service: str
    cls: type[BaseSettings]

    def env_names(self) -> set[str]:
        prefix = str(self.cls.model_config.get("env_prefix", "")).upper()
        names = set()
        for name, field in self.cls.model_fields.items():
            alias = field.validation_alias if isinstance(field.validation_alias, str) else None
            names.add(prefix + (alias or field.alias or name).upper())
        return names

    def required(self) -> set[str]:
        return {
            name.upper() for name, field in self.cls.model_fields.items() if field.is_required()
        }

    def secret(self) -> set[str]:
        return {
            name.upper()
            for name, field in self.cls.model_fields.items()
            if "SecretStr" in repr(field.annotation) or field.annotation is SecretStr
        }

    def default(self, name: str) -> Any:
        return self.cls.model_fields[name].default


def settings_of(service: str) -> SettingsInfo:
    """services.<service>.settings.Settings: a service the manifests deploy has one."""
    module = importlib.import_module(f"services.{service}.settings")
    return SettingsInfo(service, module.Settings)


def environment_read_directly() -> set[str]:
    """Variables the shared package reads from os.environ itself (LOG_LEVEL, LOG_FORMAT)."""
    pattern = re.compile(
        r"""os\.(?:environ\.get|getenv)\(\s*["']([A-Z0-9_]+)["']|os\.environ\[["']([A-Z0-9_]+)["']\]"""
    )
    names = set()
    for path in (ROOT / "cadpipe").rglob("*.py"):
        if "v1" in path.relative_to(ROOT / "cadpipe").parts:
            continue
        for match in pattern.finditer(path.read_text()):
            names.add(match.group(1) or match.group(2))
    return names


_QUANTITY_SUFFIXES = {
    "m": 1e-3,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
}


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity ("500m", "1536Mi", "2") as a number."""
    text = str(value)
    for suffix in sorted(_QUANTITY_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * _QUANTITY_SUFFIXES[suffix]
    return float(text)
