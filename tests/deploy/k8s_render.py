"""Renders a kustomization to a list of Kubernetes objects, in Python, for the subset of
kustomize that deploy/k8s uses: so the manifest tests need no kustomize or kubectl binary.

Supported: resources (files and directories), components (kind Component: their resources
and patches applied to the including kustomization's resources), namespace, labels (metadata
and, with includeTemplates, pod templates), configMapGenerator and secretGenerator (literals
and env files, with generatorOptions.disableNameSuffixHash: true), patches (strategic merge,
from a path or inline, matched by kind and name; `$patch: delete` at the top of a patch
removes its target), replicas and images. Anything else raises
Unsupported, so a manifest that outgrows this renderer fails the tests loudly instead of
rendering differently from kustomize. test_deploy_render.py compares the output with
`kubectl kustomize` wherever kubectl is installed.
"""

from __future__ import annotations

import base64
import copy
import pathlib
from collections.abc import Iterable, Iterator
from typing import Any

import yaml

Obj = dict[str, Any]

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = {
    "apiVersion",
    "kind",
    "namespace",
    "labels",
    "resources",
    "components",
    "patches",
    "replicas",
    "images",
    "generatorOptions",
    "configMapGenerator",
    "secretGenerator",
}
# kinds this project could plausibly use that have no namespace
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "PriorityClass",
    "RuntimeClass",
    "StorageClass",
}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
REPLICATED_KINDS = {"Deployment", "StatefulSet", "ReplicaSet"}
# strategic merge patch: lists merged element by element on these keys (from the Kubernetes
# API's patchMergeKey tags); every other list is replaced whole
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "envFrom": None,
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "tolerations": None,
}


class Unsupported(ValueError):
    """The kustomization uses something this renderer does not implement."""


def render(directory: pathlib.Path) -> list[Obj]:
    objects = _build(directory)
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        key = object_id(obj)
        if key in seen:
            raise ValueError(f"{key} is defined twice under {directory}")
        seen.add(key)
    return objects


def object_id(obj: Obj) -> tuple[str, str, str]:
    meta = obj.get("metadata", {})
    return (obj["kind"], meta.get("namespace", ""), meta["name"])


def load_documents(path: pathlib.Path) -> list[Obj]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def pod_spec(obj: Obj) -> Obj | None:
    """The pod spec inside a workload (or a Pod), or None."""
    spec: Obj | None = None
    if obj["kind"] == "Pod":
        spec = obj["spec"]
    elif obj["kind"] in POD_TEMPLATE_KINDS:
        spec = obj["spec"]["template"]["spec"]
    elif obj["kind"] == "CronJob":
        spec = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def _kustomization_file(directory: pathlib.Path) -> pathlib.Path:
    for name in KUSTOMIZATION_NAMES:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"no kustomization in {directory}")


def _build(directory: pathlib.Path) -> list[Obj]:
    spec = _load_kustomization(directory, "Kustomization")
    objects = _resources(directory, spec)
    objects = _apply_components(directory, spec, objects)
    objects.extend(_generate(directory, spec))
    return _transform(directory, spec, objects)


def _load_kustomization(directory: pathlib.Path, kind: str) -> Obj:
    spec = load_documents(_kustomization_file(directory))[0]
    unknown = set(spec) - SUPPORTED_FIELDS
    if unknown:
        raise Unsupported(f"{directory}: unsupported kustomization fields {sorted(unknown)}")
    if spec.get("kind", "Kustomization") != kind:
        raise Unsupported(f"{directory}: kind {spec.get('kind')}, where a {kind} belongs")
    return spec


def _resources(directory: pathlib.Path, spec: Obj) -> list[Obj]:
    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        if path.is_dir():
            objects.extend(_build(path))
        else:
            objects.extend(load_documents(path))
    return objects


def _apply_components(directory: pathlib.Path, spec: Obj, objects: list[Obj]) -> list[Obj]:
    """As kustomize does: after the resources, before the kustomization's own generators and
    transformers, each component adds its resources and transforms everything so far."""
    for entry in spec.get("components", []):
        component_dir = directory / entry
        component = _load_kustomization(component_dir, "Component")
        objects = objects + _resources(component_dir, component)
        objects = _apply_components(component_dir, component, objects)
        objects.extend(_generate(component_dir, component))
        objects = _transform(component_dir, component, objects)
    return objects


def _generate(directory: pathlib.Path, spec: Obj) -> Iterator[Obj]:
    generators = [("ConfigMap", g) for g in spec.get("configMapGenerator", [])]
    generators += [("Secret", g) for g in spec.get("secretGenerator", [])]
    if generators and not spec.get("generatorOptions", {}).get("disableNameSuffixHash"):
        raise Unsupported(f"{directory}: generators need disableNameSuffixHash: true here")
    for kind, generator in generators:
        unknown = set(generator) - {"name", "literals", "envs", "type"}
        if unknown:
            raise Unsupported(f"{directory}: generator fields {sorted(unknown)}")
        data: dict[str, str] = {}
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value
        for env_file in generator.get("envs", []):
            data.update(_read_env_file(directory / env_file))
        obj: Obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": generator["name"]}}
        if kind == "Secret":
            obj["type"] = generator.get("type", "Opaque")
            obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        else:
            obj["data"] = data
        yield obj


def _read_env_file(path: pathlib.Path) -> dict[str, str]:
    data = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            data[key.strip()] = value
    return data


def _transform(directory: pathlib.Path, spec: Obj, objects: list[Obj]) -> list[Obj]:
    objects = copy.deepcopy(objects)
    for patch in _patches(directory, spec.get("patches", [])):
        _apply_patch(patch, objects)
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = spec["namespace"]
    for entry in spec.get("labels", []):
        _apply_labels(entry, objects)
    for entry in spec.get("replicas", []):
        _apply_replicas(entry, objects)
    for entry in spec.get("images", []):
        _apply_image(entry, objects)
    return objects


def _patches(directory: pathlib.Path, entries: Iterable[Obj]) -> Iterator[Obj]:
    for entry in entries:
        if set(entry) - {"path", "patch"}:
            raise Unsupported(f"{directory}: only strategic merge patches without a target")
        if "path" in entry:
            yield from load_documents(directory / entry["path"])
        else:
            yield from (doc for doc in yaml.safe_load_all(entry["patch"]) if doc)


def _apply_patch(patch: Obj, objects: list[Obj]) -> None:
    name = patch["metadata"]["name"]
    namespace = patch["metadata"].get("namespace")
    matches = [
        obj
        for obj in objects
        if obj["kind"] == patch["kind"]
        and obj["metadata"]["name"] == name
        and namespace in (None, obj["metadata"].get("namespace"))
    ]
    if len(matches) != 1:
        raise ValueError(f"patch for {patch['kind']}/{name} matches {len(matches)} objects")
    directive = patch.get("$patch")
    if directive == "delete":
        objects.remove(matches[0])
        return
    if directive is not None:
        raise Unsupported(f"patch directive $patch: {directive}")
    merged = strategic_merge(matches[0], patch)
    matches[0].clear()
    matches[0].update(merged)


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """Kubernetes' strategic merge for the shapes used here: maps merge key by key (a null
    value deletes), lists of known fields merge element by element on their merge key, other
    lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        if any(k.startswith("$") for k in patch):
            raise Unsupported(f"patch directives {sorted(k for k in patch if k[0] == '$')}")
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value, key)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and MERGE_KEYS.get(field):
        # kustomize's order: the patch's elements (merged into their originals), then the
        # originals the patch does not mention
        key = MERGE_KEYS[field]
        originals = {item.get(key): item for item in base}
        patched = [
            strategic_merge(originals[item[key]], item) if item[key] in originals else item
            for item in patch
        ]
        mentioned = {item[key] for item in patch}
        rest = [item for item in base if item.get(key) not in mentioned]
        return copy.deepcopy(patched + rest)
    return copy.deepcopy(patch)


def _apply_labels(entry: Obj, objects: list[Obj]) -> None:
    if entry.get("includeSelectors") or set(entry) - {
        "pairs",
        "includeSelectors",
        "includeTemplates",
    }:
        raise Unsupported("labels: only pairs, includeTemplates and includeSelectors: false")
    pairs = {k: str(v) for k, v in entry["pairs"].items()}
    for obj in objects:
        obj.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
        if entry.get("includeTemplates") and obj["kind"] in POD_TEMPLATE_KINDS:
            template_meta = obj["spec"]["template"].setdefault("metadata", {})
            template_meta.setdefault("labels", {}).update(pairs)


def _apply_replicas(entry: Obj, objects: list[Obj]) -> None:
    targets = [
        o
        for o in objects
        if o["kind"] in REPLICATED_KINDS and o["metadata"]["name"] == entry["name"]
    ]
    if not targets:
        raise ValueError(f"replicas: nothing named {entry['name']}")
    for obj in targets:
        obj["spec"]["replicas"] = int(entry["count"])


def _apply_image(entry: Obj, objects: list[Obj]) -> None:
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        for container in [*spec.get("containers", []), *spec.get("initContainers", [])]:
            name, tag, digest = split_image(container["image"])
            if name != entry["name"]:
                continue
            name = entry.get("newName", name)
            if "digest" in entry:
                container["image"] = f"{name}@{entry['digest']}"
            elif "newTag" in entry:
                container["image"] = f"{name}:{entry['newTag']}"
            else:
                suffix = f"@{digest}" if digest else f":{tag}" if tag else ""
                container["image"] = name + suffix


def split_image(image: str) -> tuple[str, str, str]:
    """name, tag, digest ("" when absent); a registry's port is not a tag."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    else:
        tag = ""
    return name, tag, digest
