"""The Python kustomize renderer the manifest tests use: its features on small hand-written
kustomizations, and its output for deploy/k8s against `kubectl kustomize` where kubectl is
installed."""

from __future__ import annotations

import base64
import pathlib
import shutil
import subprocess
import textwrap
from typing import Any

import pytest
import yaml
from k8s_render import Unsupported, object_id, render, split_image, strategic_merge

ROOT = pathlib.Path(__file__).resolve().parents[2]
KUSTOMIZATIONS = ["deploy/k8s/base", "deploy/k8s/overlays/dev", "deploy/k8s/overlays/dev-keda"]


def write(directory: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return directory


DEPLOYMENT = """\
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: app
    spec:
      replicas: 3
      selector:
        matchLabels: {app: app}
      template:
        metadata:
          labels: {app: app}
        spec:
          containers:
            - name: app
              image: registry.example:5000/team/app:1.0
              env:
                - {name: A, value: "1"}
                - {name: B, value: "2"}
            - name: sidecar
              image: sidecar:2
    """


def write_example_overlay(tmp_path: pathlib.Path) -> pathlib.Path:
    """A base and an overlay using every feature deploy/k8s uses; returns the overlay."""
    write(
        tmp_path,
        {
            "base/kustomization.yaml": """\
                namespace: base-ns
                labels:
                  - pairs: {team: cad}
                resources: [deployment.yaml]
                """,
            "base/deployment.yaml": DEPLOYMENT,
            "overlay/kustomization.yaml": """\
                namespace: overlay-ns
                resources: [../base, extra.yaml]
                patches:
                  - patch: |
                      apiVersion: apps/v1
                      kind: Deployment
                      metadata: {name: app}
                      spec:
                        template:
                          spec:
                            containers:
                              - name: app
                                env:
                                  - {name: B, value: "20"}
                                  - {name: C, value: "3"}
                replicas:
                  - {name: app, count: 1}
                images:
                  - {name: registry.example:5000/team/app, newName: mirror/app, newTag: "2.0"}
                generatorOptions: {disableNameSuffixHash: true}
                secretGenerator:
                  - name: creds
                    literals: [PASSWORD=dev=only]
                configMapGenerator:
                  - name: settings
                    envs: [settings.env]
                """,
            "overlay/extra.yaml": """\
                apiVersion: v1
                kind: Namespace
                metadata: {name: overlay-ns}
                """,
            "overlay/settings.env": "# comment\nLOG_LEVEL=DEBUG\n",
        },
    )
    return tmp_path / "overlay"


def test_an_overlay_patches_relabels_and_retags_its_base(tmp_path: pathlib.Path) -> None:
    objects = {object_id(o)[0]: o for o in render(write_example_overlay(tmp_path))}

    deployment = objects["Deployment"]
    assert deployment["metadata"]["namespace"] == "overlay-ns"
    assert deployment["metadata"]["labels"] == {"team": "cad"}
    assert deployment["spec"]["template"]["metadata"]["labels"] == {"app": "app"}
    assert deployment["spec"]["replicas"] == 1
    app, sidecar = deployment["spec"]["template"]["spec"]["containers"]
    assert app["image"] == "mirror/app:2.0"
    assert sidecar["image"] == "sidecar:2"
    # as kustomize orders them: the patch's entries, then the ones it does not mention
    assert app["env"] == [
        {"name": "B", "value": "20"},
        {"name": "C", "value": "3"},
        {"name": "A", "value": "1"},
    ]
    assert "namespace" not in objects["Namespace"]["metadata"]
    assert base64.b64decode(objects["Secret"]["data"]["PASSWORD"]) == b"dev=only"
    assert objects["ConfigMap"]["data"] == {"LOG_LEVEL": "DEBUG"}


def write_example_component(tmp_path: pathlib.Path) -> pathlib.Path:
    """A base with two Deployments, a component that adds a ConfigMap, patches one Deployment
    and deletes the other, and an overlay using it; returns the overlay."""
    write(
        tmp_path,
        {
            "base/kustomization.yaml": "resources: [deployment.yaml, other.yaml]\n",
            "base/deployment.yaml": DEPLOYMENT,
            "base/other.yaml": DEPLOYMENT.replace("name: app\n", "name: other\n", 1),
            "component/kustomization.yaml": """\
                apiVersion: kustomize.config.k8s.io/v1alpha1
                kind: Component
                resources: [extra.yaml]
                patches:
                  - patch: |
                      apiVersion: apps/v1
                      kind: Deployment
                      metadata: {name: other}
                      $patch: delete
                  - patch: |
                      apiVersion: apps/v1
                      kind: Deployment
                      metadata: {name: app}
                      spec: {replicas: 5}
                """,
            "component/extra.yaml": """\
                apiVersion: v1
                kind: ConfigMap
                metadata: {name: extra}
                data: {A: "1"}
                """,
            "overlay/kustomization.yaml": """\
                namespace: overlay-ns
                resources: [../base]
                components: [../component]
                replicas:
                  - {name: app, count: 2}
                """,
        },
    )
    return tmp_path / "overlay"


def test_a_component_adds_patches_and_deletes_before_the_overlays_own_changes(
    tmp_path: pathlib.Path,
) -> None:
    objects = {object_id(o): o for o in render(write_example_component(tmp_path))}
    assert sorted(objects) == [
        ("ConfigMap", "overlay-ns", "extra"),
        ("Deployment", "overlay-ns", "app"),
    ]
    # the overlay's replicas come after the component's patch
    assert objects[("Deployment", "overlay-ns", "app")]["spec"]["replicas"] == 2


def test_a_component_is_not_a_kustomization(tmp_path: pathlib.Path) -> None:
    overlay = write_example_component(tmp_path)
    (overlay / "kustomization.yaml").write_text("resources: [../component]\n")
    with pytest.raises(Unsupported, match="kind Component"):
        render(overlay)


def test_what_the_renderer_does_not_implement_is_refused(tmp_path: pathlib.Path) -> None:
    write(
        tmp_path,
        {
            "a/kustomization.yaml": "commonLabels: {a: b}\n",
            "b/kustomization.yaml": "configMapGenerator: [{name: x, literals: [A=1]}]\n",
        },
    )
    with pytest.raises(Unsupported, match="commonLabels"):
        render(tmp_path / "a")
    # kustomize would append a content hash to the name and rewrite every reference to it
    with pytest.raises(Unsupported, match="disableNameSuffixHash"):
        render(tmp_path / "b")


def test_a_patch_must_find_exactly_its_target(tmp_path: pathlib.Path) -> None:
    write(
        tmp_path,
        {
            "kustomization.yaml": """\
                resources: [deployment.yaml]
                patches:
                  - patch: |
                      apiVersion: apps/v1
                      kind: Deployment
                      metadata: {name: typo}
                      spec: {replicas: 1}
                """,
            "deployment.yaml": DEPLOYMENT,
        },
    )
    with pytest.raises(ValueError, match="Deployment/typo matches 0"):
        render(tmp_path)


def test_strategic_merge_deletes_with_null_and_replaces_plain_lists() -> None:
    base = {"data": {"A": "1", "B": "2"}, "args": ["-a", "-b"]}
    patch = {"data": {"A": None, "C": "3"}, "args": ["-c"]}
    assert strategic_merge(base, patch) == {"data": {"B": "2", "C": "3"}, "args": ["-c"]}


@pytest.mark.parametrize(
    ("image", "parts"),
    [
        ("nats:2.11-alpine", ("nats", "2.11-alpine", "")),
        ("registry:5000/a/b", ("registry:5000/a/b", "", "")),
        ("registry:5000/a/b:1@sha256:ab", ("registry:5000/a/b", "1", "sha256:ab")),
    ],
)
def test_image_references_split_at_the_tag_not_the_registry_port(
    image: str, parts: tuple[str, str, str]
) -> None:
    assert split_image(image) == parts


def _normalized(objects: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Secret data decoded: kubectl folds long base64 lines, which YAML reads back with spaces."""
    result = {}
    for obj in objects:
        if obj["kind"] == "Secret":
            obj = {**obj, "data": {k: base64.b64decode(v) for k, v in obj.get("data", {}).items()}}
        result[object_id(obj)] = obj
    return result


def _kubectl_kustomize(directory: pathlib.Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    output = subprocess.run(
        ["kubectl", "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return _normalized([doc for doc in yaml.safe_load_all(output) if doc])


needs_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl is not installed here"
)


@needs_kubectl
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_renderer_agrees_with_kubectl_kustomize(kustomization: str) -> None:
    theirs = _kubectl_kustomize(ROOT / kustomization)
    ours = _normalized(render(ROOT / kustomization))
    assert sorted(ours) == sorted(theirs)
    for key, obj in ours.items():
        assert obj == theirs[key], key


@needs_kubectl
def test_the_renderer_agrees_with_kubectl_on_every_feature(tmp_path: pathlib.Path) -> None:
    overlay = write_example_overlay(tmp_path / "overlay")
    assert _normalized(render(overlay)) == _kubectl_kustomize(overlay)
    with_component = write_example_component(tmp_path / "component")
    assert _normalized(render(with_component)) == _kubectl_kustomize(with_component)
