"""deploy/k8s, rendered: valid against the Kubernetes schema (strict), and consistent with the
services it deploys: ports, probes, environment variables and their settings, secrets,
hardening, resources, shutdown timing, autoscalers and disruption budgets."""

from __future__ import annotations

import base64
import pathlib
import re
import tomllib
from typing import Any
from urllib.parse import urlsplit

import k8s_crds
import kubernetes_validate
import pytest
from k8s_manifests import (
    BASE,
    CONFIG_MAP,
    DEV,
    DEV_KEDA,
    GRPC_SERVICES,
    HTTP_SERVICES,
    METRICS_PORT,
    NAMESPACE,
    OPERATIONS_DOC,
    ROOT,
    SECRET,
    SERVICES,
    SettingsInfo,
    container,
    container_ports,
    env_names,
    env_values,
    environment_read_directly,
    named,
    objects,
    pod_labels,
    quantity,
    rendered,
    resolve_port,
    selector_matches,
    settings_of,
    workloads,
)
from k8s_render import object_id, pod_spec

from cadpipe.grpc_server import LIVENESS_SERVICE

KUSTOMIZATIONS = {"base": BASE, "dev": DEV, "dev-keda": DEV_KEDA}
# the oldest Kubernetes these manifests are written for (native gRPC probes are GA since 1.27,
# the oldest release still patched by most providers is about 1.29) and the newest schema
# the validator ships
KUBERNETES_VERSIONS = ["1.29", "1.37"]
# what the worker's sandbox needs, each explained in the manifest and docs/operations.md
WORKER_CAPABILITIES = {"SYS_ADMIN", "SETUID", "SETGID", "KILL", "CHOWN"}


def _all_settings() -> list[SettingsInfo]:
    return [settings_of(service) for service in SERVICES]


# --- schema -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", KUSTOMIZATIONS)
def test_every_object_validates_strictly_against_the_kubernetes_schema(
    overlay: str, version: str
) -> None:
    failures = []
    for obj in rendered(KUSTOMIZATIONS[overlay]):
        if k8s_crds.is_custom(obj):  # KEDA's ScaledObject: its CRD's schema, strict
            failures.extend(f"{object_id(obj)} {problem}" for problem in k8s_crds.validate(obj))
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            failures.append(f"{object_id(obj)} {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            failures.append(f"{object_id(obj)}: {error.message}")
    assert not failures, "\n".join(failures)


def test_strict_validation_catches_a_misspelt_field() -> None:
    """The check above can fail: a typo in a probe is an unknown field in strict mode."""
    deployment = named(BASE, "Deployment", "scripts")
    broken: dict[str, Any] = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_everything_lives_in_the_cadpipe_namespace() -> None:
    for overlay in KUSTOMIZATIONS.values():
        for obj in rendered(overlay):
            if obj["kind"] != "Namespace":
                assert obj["metadata"]["namespace"] == NAMESPACE, object_id(obj)
    (namespace,) = objects(BASE, "Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"


# --- ports and probes -------------------------------------------------------------------------


@pytest.mark.parametrize("service", list(GRPC_SERVICES))
def test_grpc_probes_ask_the_port_the_service_listens_on(service: str) -> None:
    port = GRPC_SERVICES[service]
    deployment = named(BASE, "Deployment", service)
    spec = container(deployment)
    assert container_ports(deployment)["grpc"] == port
    assert env_values(BASE, deployment)["GRPC_PORT"] == str(port)
    # liveness and startup: the process serves; readiness: its dependencies answer too
    for probe in ("startupProbe", "livenessProbe"):
        assert spec[probe]["grpc"] == {"port": port, "service": LIVENESS_SERVICE}, probe
    assert spec["readinessProbe"]["grpc"]["port"] == port
    assert spec["readinessProbe"]["grpc"].get("service", "") == ""


@pytest.mark.parametrize("service", list(GRPC_SERVICES))
def test_grpc_ports_are_the_services_own_defaults(service: str) -> None:
    info = settings_of(service)
    assert info.default("grpc_port") == GRPC_SERVICES[service]


def test_gateway_probes_ask_its_health_routes_on_its_port() -> None:
    deployment = named(BASE, "Deployment", "gateway")
    spec = container(deployment)
    port = HTTP_SERVICES["gateway"]
    assert container_ports(deployment)["http"] == port
    assert env_values(BASE, deployment)["HTTP_PORT"] == str(port)
    paths = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in paths.items():
        assert spec[probe]["httpGet"]["path"] == path
        assert resolve_port(deployment, spec[probe]["httpGet"]["port"]) == port


def test_gateway_port_is_its_own_default() -> None:
    info = settings_of("gateway")
    assert info.default("http_port") == HTTP_SERVICES["gateway"]


@pytest.mark.parametrize("variable", ["SCRIPTS_ADDR", "WATCHER_ADDR"])
def test_gateway_backends_are_services_of_this_deployment(variable: str) -> None:
    address = env_values(BASE, named(BASE, "Deployment", "gateway"))[variable]
    host, _, port = address.removeprefix("dns:///").rpartition(":")
    service = named(BASE, "Service", host)
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]
    backend = named(BASE, "Deployment", host)
    assert int(port) == GRPC_SERVICES[host]
    assert selector_matches({"matchLabels": service["spec"]["selector"]}, pod_labels(backend))


@pytest.mark.parametrize("overlay", KUSTOMIZATIONS)
def test_every_service_routes_to_exactly_one_workload_and_a_real_port(overlay: str) -> None:
    directory = KUSTOMIZATIONS[overlay]
    for service in objects(directory, "Service"):
        selector = {"matchLabels": service["spec"]["selector"]}
        targets = [w for w in workloads(directory) if selector_matches(selector, pod_labels(w))]
        assert len(targets) == 1, service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert resolve_port(targets[0], target) is not None, (service["metadata"]["name"], port)


def test_metrics_are_served_and_announced_on_one_port() -> None:
    config = named(BASE, "ConfigMap", CONFIG_MAP)
    assert config["data"]["METRICS_PORT"] == str(METRICS_PORT)
    for service in SERVICES:
        deployment = named(BASE, "Deployment", service)
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(METRICS_PORT)
        assert annotations["prometheus.io/path"] == "/metrics"
        assert container_ports(deployment)["metrics"] == METRICS_PORT
        assert env_values(BASE, deployment)["METRICS_PORT"] == str(METRICS_PORT)


# --- environment and settings -----------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_every_variable_a_service_is_given_is_one_it_reads(service: str) -> None:
    """A typo (S3_BUKET) would be ignored silently by the service; here it fails."""
    info = settings_of(service)
    deployment = named(BASE, "Deployment", service)
    own = {entry["name"] for entry in container(deployment).get("env", [])}
    unknown = own - info.env_names() - environment_read_directly()
    assert not unknown, f"{service} does not read {sorted(unknown)}"


def test_every_shared_setting_is_read_by_some_service() -> None:
    known = set().union(
        *(info.env_names() for info in _all_settings()), environment_read_directly()
    )
    keys = set(named(BASE, "ConfigMap", CONFIG_MAP)["data"])
    unknown = keys - known
    assert not unknown, f"no service reads {sorted(unknown)}"


@pytest.mark.parametrize("service", SERVICES)
def test_every_required_setting_is_provided(service: str) -> None:
    """A required setting left out makes the pod crash at start."""
    info = settings_of(service)
    for overlay in KUSTOMIZATIONS.values():
        given = env_names(overlay, named(overlay, "Deployment", service))
        assert info.required() <= given, f"{service} misses {sorted(info.required() - given)}"


def test_secret_settings_come_only_from_the_secret() -> None:
    secret_names = set().union(*(info.secret() for info in _all_settings()))
    assert {"MONGODB_URI", "AWS_SECRET_ACCESS_KEY", "NATS_PASSWORD"} <= secret_names
    for config in objects(BASE, "ConfigMap"):
        assert not secret_names & set(config.get("data", {})), config["metadata"]["name"]
    for service in SERVICES:
        for entry in container(named(BASE, "Deployment", service)).get("env", []):
            if entry["name"] in secret_names:
                reference = entry["valueFrom"]["secretKeyRef"]
                assert reference["name"] == SECRET
                assert reference["key"] == entry["name"]


def test_the_base_defines_no_secret_values() -> None:
    assert objects(BASE, "Secret") == []
    for obj in rendered(BASE):
        spec = pod_spec(obj)
        for container_spec in spec["containers"] if spec else []:
            for source in container_spec.get("envFrom", []):
                assert "secretRef" not in source or source["secretRef"]["name"] == SECRET


def _secret_keys_referenced(directory: pathlib.Path) -> dict[str, bool]:
    """Keys of cadpipe-secrets the manifests read, and whether each is optional."""
    keys: dict[str, bool] = {}
    for workload in workloads(directory):
        spec = pod_spec(workload)
        assert spec is not None
        for container_spec in spec["containers"]:
            for entry in container_spec.get("env", []):
                reference = entry.get("valueFrom", {}).get("secretKeyRef")
                if reference and reference["name"] == SECRET:
                    optional = bool(reference.get("optional", False))
                    keys[reference["key"]] = keys.get(reference["key"], True) and optional
    return keys


def test_every_secret_key_is_documented() -> None:
    documentation = OPERATIONS_DOC.read_text()
    for key in _secret_keys_referenced(BASE):
        assert f"`{key}`" in documentation, f"docs/operations.md does not describe {key}"


def test_the_dev_secret_has_every_key_the_services_need() -> None:
    dev_secret = named(DEV, "Secret", SECRET)
    required = {key for key, optional in _secret_keys_referenced(DEV).items() if not optional}
    assert required <= set(dev_secret["data"])
    assert {"MONGODB_URI", "AWS_ACCESS_KEY_ID", "NATS_PASSWORD"} <= set(dev_secret["data"])


def test_the_dev_databases_accept_the_credentials_the_services_use() -> None:

    def decoded(name: str) -> dict[str, str]:
        data = named(DEV, "Secret", name)["data"]
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    services, infra = decoded(SECRET), decoded("dev-infra-secrets")
    uri = urlsplit(services["MONGODB_URI"])
    assert (uri.username, uri.password) == (
        infra["MONGO_INITDB_ROOT_USERNAME"],
        infra["MONGO_INITDB_ROOT_PASSWORD"],
    )
    assert uri.hostname == "mongodb"
    assert (services["AWS_ACCESS_KEY_ID"], services["AWS_SECRET_ACCESS_KEY"]) == (
        infra["MINIO_ROOT_USER"],
        infra["MINIO_ROOT_PASSWORD"],
    )
    config = named(DEV, "ConfigMap", CONFIG_MAP)["data"]
    assert config["S3_ENDPOINT_URL"] == "http://minio:9000"
    assert config["NATS_URL"] == "nats://nats:4222"
    for value in [*services.values(), *infra.values()]:
        assert "dev" in value or value == "cadpipe", "dev values must look like dev values"


def test_every_variable_the_manifests_set_is_documented() -> None:
    documentation = OPERATIONS_DOC.read_text()
    names = set(named(BASE, "ConfigMap", CONFIG_MAP)["data"])
    names |= set(named(DEV, "ConfigMap", CONFIG_MAP)["data"])
    for service in SERVICES:
        names |= env_names(BASE, named(BASE, "Deployment", service))
    undocumented = sorted(n for n in names if f"`{n}`" not in documentation)
    assert not undocumented, f"docs/operations.md does not describe {undocumented}"


def test_every_variable_documented_exists() -> None:
    """The configuration tables name no setting that no service reads (a renamed one, say)."""

    infos = _all_settings()
    if len(infos) < len(SERVICES):
        pytest.skip("some services' settings do not exist yet")
    known = set().union(*(info.env_names() for info in infos), environment_read_directly())
    documented = set()
    for line in OPERATIONS_DOC.read_text().splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            documented |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    assert len(documented) > 20
    assert not documented - known, f"no service reads {sorted(documented - known)}"


# --- hardening, resources, probes -------------------------------------------------------------


@pytest.mark.parametrize("overlay", KUSTOMIZATIONS)
def test_every_container_has_requests_limits_and_probes(overlay: str) -> None:
    for workload in workloads(KUSTOMIZATIONS[overlay]):
        spec = pod_spec(workload)
        assert spec is not None
        for container_spec in spec["containers"]:
            where = (workload["metadata"]["name"], container_spec["name"])
            resources = container_spec["resources"]
            for resource in ("cpu", "memory"):
                request = quantity(resources["requests"][resource])
                limit = quantity(resources["limits"][resource])
                assert 0 < request <= limit, (where, resource)
            if workload["kind"] != "Job":
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    assert probe in container_spec, (where, probe)


@pytest.mark.parametrize("overlay", KUSTOMIZATIONS)
def test_every_pod_is_locked_down_except_for_the_workers_documented_needs(overlay: str) -> None:
    for workload in workloads(KUSTOMIZATIONS[overlay]):
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        assert spec is not None
        pod_context = spec["securityContext"]
        assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["enableServiceLinks"] is False, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), name
        for container_spec in spec["containers"]:
            context = container_spec["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert not context.get("privileged"), name
            if name == "worker":
                assert pod_context["runAsUser"] == 0
                assert set(context["capabilities"]["add"]) == WORKER_CAPABILITIES
            else:
                assert pod_context["runAsNonRoot"] is True, name
                assert pod_context["runAsUser"] > 0, name
                assert "add" not in context["capabilities"], name


def test_the_workers_capabilities_are_spelt_as_the_api_expects_and_documented() -> None:
    """`CAP_SYS_ADMIN` with allowPrivilegeEscalation false is refused by the API server; the
    runtime takes `SYS_ADMIN`. Every capability is explained in docs/operations.md."""
    context = container(named(BASE, "Deployment", "worker"))["securityContext"]
    documentation = OPERATIONS_DOC.read_text()
    for capability in context["capabilities"]["add"]:
        assert not capability.startswith("CAP_")
        assert f"`{capability}`" in documentation, capability


def test_the_pod_emulation_script_grants_what_the_deployment_grants() -> None:

    script = (ROOT / "deploy" / "scripts" / "as-worker-pod.sh").read_text()
    match = re.search(r'^CAPABILITIES="([A-Z_ ]+)"$', script, flags=re.MULTILINE)
    assert match
    context = container(named(BASE, "Deployment", "worker"))["securityContext"]
    assert set(match.group(1).split()) == set(context["capabilities"]["add"])


@pytest.mark.parametrize("service", SERVICES)
def test_tmp_is_a_bounded_scratch_volume(service: str) -> None:
    deployment = named(BASE, "Deployment", service)
    mounts = {m["mountPath"]: m["name"] for m in container(deployment).get("volumeMounts", [])}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    tmp = volumes[mounts["/tmp"]]
    assert quantity(tmp["emptyDir"]["sizeLimit"]) > 0


def _settings_from_manifest(
    service: str, directory: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The service's Settings() as the pod would build it, and nothing from this machine's
    environment: the manifest's plain values and downward-API fields, and its secret
    references resolved against the overlay's own Secret (dev) or, where the overlay has
    none (base), against a minimal Secret holding only the keys it must have."""
    info = settings_of(service)
    deployment = named(directory, "Deployment", service)
    secrets = [o for o in objects(directory, "Secret") if o["metadata"]["name"] == SECRET]
    secret_values = {
        key: base64.b64decode(value).decode() for s in secrets for key, value in s["data"].items()
    }
    for name in info.env_names() | environment_read_directly():
        monkeypatch.delenv(name, raising=False)
    for name, value in env_values(directory, deployment).items():
        monkeypatch.setenv(name, value)
    for entry in container(deployment).get("env", []):
        source = entry.get("valueFrom", {})
        if "fieldRef" in source:
            monkeypatch.setenv(entry["name"], f"{service}-7d9f8-abcde")
        elif "secretKeyRef" in source:
            reference = source["secretKeyRef"]
            if secrets and reference["key"] in secret_values:
                monkeypatch.setenv(entry["name"], secret_values[reference["key"]])
            elif not secrets and not reference.get("optional"):
                monkeypatch.setenv(entry["name"], f"stand-in-for-{reference['key'].lower()}")
    return info.cls()


@pytest.mark.parametrize("overlay", KUSTOMIZATIONS)
@pytest.mark.parametrize("service", SERVICES)
def test_each_service_accepts_the_settings_its_pod_gets(
    service: str, overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings_from_manifest(service, KUSTOMIZATIONS[overlay], monkeypatch)
    deployment = named(KUSTOMIZATIONS[overlay], "Deployment", service)
    if service in GRPC_SERVICES:
        assert settings.grpc_port == container_ports(deployment)["grpc"]
    else:
        assert settings.http_port == container_ports(deployment)["http"]
    spec = deployment["spec"]["template"]["spec"]
    if service != "worker":
        pause = int(container(deployment)["lifecycle"]["preStop"]["exec"]["command"][-1])
        # five seconds to drain NATS and close the clients after the requests are done
        assert spec["terminationGracePeriodSeconds"] >= pause + settings.shutdown_grace_seconds + 5


@pytest.mark.parametrize("service", SERVICES)
def test_services_serve_metrics_where_the_pods_announce_them(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = settings_of(service)
    if "metrics_port" not in info.cls.model_fields:
        pytest.skip(f"services/{service} has no METRICS_PORT setting yet (serves no metrics)")
    settings = _settings_from_manifest(service, BASE, monkeypatch)
    assert settings.metrics_port == METRICS_PORT


def test_the_worker_pod_fits_its_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings_from_manifest("worker", BASE, monkeypatch)
    deployment = named(BASE, "Deployment", "worker")
    spec = deployment["spec"]["template"]["spec"]
    resources = container(deployment)["resources"]
    # a SIGTERM lets running jobs finish (drain_timeout_seconds), then uploads and the NATS
    # drain (the shutdown grace), then a margin before the kubelet's SIGKILL
    needed = settings.drain_timeout_seconds + settings.shutdown_grace_seconds + 10
    assert spec["terminationGracePeriodSeconds"] >= needed
    assert settings.drain_timeout_seconds >= settings.job_timeout_seconds
    # every job's address space at once, plus the worker and the FreeCAD zygote
    memory = quantity(resources["limits"]["memory"])
    assert memory >= settings.concurrency * settings.memory_limit_bytes + 1 * 2**30
    assert quantity(resources["limits"]["cpu"]) >= settings.concurrency
    # job scratch directories are under /tmp, an emptyDir the pod's ephemeral storage covers
    mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
    assert settings.scratch_root.startswith("/tmp/") and mounts["/tmp"] == "tmp"
    tmp = next(v for v in spec["volumes"] if v["name"] == "tmp")
    scratch = quantity(tmp["emptyDir"]["sizeLimit"])
    assert quantity(resources["limits"]["ephemeral-storage"]) >= scratch
    # every job in flight holds its scratch directory, those storing their results included
    assert scratch >= settings.jobs_in_flight * settings.max_file_size_bytes
    assert settings.sandbox_isolation == "strict"


@pytest.mark.parametrize("overlay", KUSTOMIZATIONS)
def test_the_watcher_waits_out_every_delivery_the_worker_may_make(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version is declared timed out only after the worker had every chance to finish it:
    each delivery runs up to the job timeout, and a dead worker's job comes back after the ack
    wait."""
    worker = _settings_from_manifest("worker", KUSTOMIZATIONS[overlay], monkeypatch)
    watcher = _settings_from_manifest("watcher", KUSTOMIZATIONS[overlay], monkeypatch)
    worst_case = worker.max_deliver * (worker.job_timeout_seconds + worker.ack_wait_seconds)
    assert watcher.watcher_job_timeout_seconds > worst_case


# --- scaling and disruption -------------------------------------------------------------------


@pytest.mark.parametrize("overlay", KUSTOMIZATIONS)
def test_autoscalers_target_deployments_they_alone_size(overlay: str) -> None:
    """Each scaled Deployment has exactly one autoscaler: an HPA, or a KEDA ScaledObject (which
    makes an HPA of its own); two would fight over its replicas."""
    directory = KUSTOMIZATIONS[overlay]
    scaled: list[str] = []
    for hpa in objects(directory, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
        deployment = named(directory, "Deployment", target["name"])
        # an apply would reset a replicas field, fighting the autoscaler
        assert "replicas" not in deployment["spec"], target["name"]
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        # utilization targets are relative to the requests
        for metric in hpa["spec"]["metrics"]:
            resource = metric["resource"]["name"]
            assert resource in container(deployment)["resources"]["requests"]
        scaled.append(target["name"])
    for scaled_object in objects(directory, "ScaledObject"):
        target = scaled_object["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
        deployment = named(directory, "Deployment", target["name"])
        assert "replicas" not in deployment["spec"], target["name"]
        spec = scaled_object["spec"]
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        scaled.append(target["name"])
    assert sorted(scaled) == ["gateway", "worker"]


@pytest.mark.parametrize("overlay", KUSTOMIZATIONS)
def test_every_service_has_a_disruption_budget_on_its_own_pods(overlay: str) -> None:
    directory = KUSTOMIZATIONS[overlay]
    covered = set()
    for pdb in objects(directory, "PodDisruptionBudget"):
        matching = [
            w["metadata"]["name"]
            for w in workloads(directory)
            if selector_matches(pdb["spec"]["selector"], pod_labels(w))
        ]
        assert len(matching) == 1, pdb["metadata"]["name"]
        covered.update(matching)
    assert covered == set(SERVICES)


@pytest.mark.parametrize("overlay", KUSTOMIZATIONS)
def test_workload_selectors_match_their_own_pods_only(overlay: str) -> None:
    directory = KUSTOMIZATIONS[overlay]
    for workload in workloads(directory):
        if workload["kind"] == "Job":
            continue
        selector = workload["spec"]["selector"]
        matching = [w for w in workloads(directory) if selector_matches(selector, pod_labels(w))]
        assert matching == [workload], workload["metadata"]["name"]


def test_base_images_carry_the_projects_version() -> None:

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for service in SERVICES:
        image = container(named(BASE, "Deployment", service))["image"]
        assert image == f"cadpipe/{service}:{version}"
    for service in SERVICES:
        assert container(named(DEV, "Deployment", service))["image"] == f"cadpipe/{service}:dev"
